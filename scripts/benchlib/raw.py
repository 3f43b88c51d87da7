"""The ceilings: transfers straight between the server and worker processes, with no
mount in between. Each stream is its own process so the harness's own interpreter
lock does not cap the N-stream figure below what the server can do."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .store import MiB, Store


@dataclass(frozen=True)
class Endpoint:
    """What a worker process needs to build its own client (never printed)."""

    url: str
    bucket: str
    key_id: str
    secret: str

    def store(self) -> Store:
        return Store(self.url, self.bucket, self.key_id, self.secret)


def _worker(endpoint: Endpoint, job: Callable[[Store], object], barrier: object,
            results: object) -> None:
    store = endpoint.store()  # set up before the clock starts
    try:
        barrier.wait()  # type: ignore[attr-defined]
        results.put(("ok", job(store)))  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}"))  # type: ignore[attr-defined]


def run_parallel(endpoint: Endpoint, jobs: list[Callable[[Store], object]]
                 ) -> tuple[float, list[object]]:
    """Run each job in its own process, all released at once; (seconds, results)."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(len(jobs) + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(endpoint, job, barrier, results), daemon=True)
             for job in jobs]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=60)
        t0 = time.monotonic()
        outcomes = [results.get(timeout=900) for _ in jobs]
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = [v for status, v in outcomes if status == "error"]
    if errors:
        raise RuntimeError(f"raw transfer failed: {errors[0]}")
    return elapsed, [v for _, v in outcomes]


def get_ranges(endpoint: Endpoint, key: str, size: int, streams: int) -> float:
    """Seconds to GET ``key`` (``size`` bytes) as ``streams`` ranged GETs at once."""
    bounds = [(i * size // streams, (i + 1) * size // streams - 1) for i in range(streams)]
    jobs = [lambda s, b=b: s.drain_range(key, b[0], b[1]) for b in bounds]
    elapsed, counts = run_parallel(endpoint, jobs)
    if sum(counts) != size:  # type: ignore[arg-type]
        raise RuntimeError(f"raw GETs returned {sum(counts)} bytes, expected {size}")  # type: ignore[arg-type]
    return elapsed


def put_multipart(endpoint: Endpoint, store: Store, key: str, source: Path, streams: int,
                  part_size: int = 16 * MiB) -> float:
    """Seconds to upload ``source`` as a multipart upload, ``streams`` parts at once
    (from initiate to complete, as a mount's upload would be timed)."""
    size = source.stat().st_size
    numbers = list(range(1, -(-size // part_size) + 1))

    def upload(s: Store, mine: list[int], upload_id: str) -> list[tuple[int, str]]:
        done = []
        with open(source, "rb") as f:
            for n in mine:
                f.seek((n - 1) * part_size)
                etag = s.s3.upload_part(Bucket=s.bucket, Key=key, UploadId=upload_id,
                                        PartNumber=n, Body=f.read(part_size))["ETag"]
                done.append((n, etag))
        return done

    t0 = time.monotonic()
    upload_id = store.s3.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
    initiate = time.monotonic() - t0
    jobs = [lambda s, mine=numbers[i::streams]: upload(s, mine, upload_id)
            for i in range(streams)]
    # Timed from the release of the workers: their start-up is not transfer time.
    uploading, results = run_parallel(endpoint, jobs)
    parts = sorted(p for r in results for p in r)  # type: ignore[attr-defined]
    t1 = time.monotonic()
    store.s3.complete_multipart_upload(
        Bucket=store.bucket, Key=key, UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})
    return initiate + uploading + time.monotonic() - t1
