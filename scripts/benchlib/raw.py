"""The ceilings: transfers straight between the server and worker processes, with no
mount in between. Each stream is its own process so the harness's own interpreter
lock does not cap the N-stream figure below what the server can do.

They use cosfs's own client (``cosfs.cos``), with the signature cosfs uses against
that server: boto3 hashes every body for SigV4 over plain HTTP, which on a small
machine would measure SHA-256 rather than the server."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cosfs.cos import CosClient, CosConfig, PartInfo

MiB = 1 << 20


@dataclass(frozen=True)
class Endpoint:
    """What a worker process needs to build its own client (never printed)."""

    url: str
    bucket: str
    key_id: str
    secret: str
    signature: str  # "cos" or "s3", as cosfs signs against this server

    def client(self) -> CosClient:
        return CosClient(CosConfig(secret_id=self.key_id, secret_key=self.secret,
                                   bucket=self.bucket, region="ap-guangzhou",
                                   endpoint=self.url, signature=self.signature))


Job = Callable[[CosClient], object]


def _worker(endpoint: Endpoint, job: Job, barrier: object, results: object) -> None:
    client = endpoint.client()  # set up before the clock starts
    try:
        barrier.wait()  # type: ignore[attr-defined]
        results.put(("ok", job(client)))  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}"))  # type: ignore[attr-defined]


def run_parallel(endpoint: Endpoint, jobs: list[Job]) -> tuple[float, list[object]]:
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


def _drain(client: CosClient, key: str, start: int, end: int) -> int:
    with client.get_object_stream(key, start, end, chunk_size=MiB) as (_, chunks):
        return sum(len(c) for c in chunks)


def get_ranges(endpoint: Endpoint, key: str, size: int, streams: int) -> float:
    """Seconds to GET ``key`` (``size`` bytes) as ``streams`` ranged GETs at once."""
    bounds = [(i * size // streams, (i + 1) * size // streams - 1) for i in range(streams)]
    jobs: list[Job] = [lambda c, b=b: _drain(c, key, b[0], b[1]) for b in bounds]
    elapsed, counts = run_parallel(endpoint, jobs)
    got = sum(counts)  # type: ignore[arg-type]
    if got != size:
        raise RuntimeError(f"raw GETs returned {got} bytes, expected {size}")
    return elapsed


def _upload(client: CosClient, key: str, upload_id: str, source: Path, part_size: int,
            mine: list[int]) -> list[PartInfo]:
    done = []
    with open(source, "rb") as f:
        for n in mine:
            f.seek((n - 1) * part_size)
            body = f.read(part_size)
            done.append(PartInfo(n, client.upload_part(key, upload_id, n, body), len(body)))
    return done


def put_multipart(endpoint: Endpoint, key: str, source: Path, streams: int,
                  part_size: int = 16 * MiB) -> float:
    """Seconds to upload ``source`` as a multipart upload, ``streams`` parts at once
    (initiate and complete included, as a mount's upload is timed)."""
    size = source.stat().st_size
    numbers = list(range(1, -(-size // part_size) + 1))
    client = endpoint.client()
    t0 = time.monotonic()
    upload_id = client.create_multipart_upload(key)
    initiate = time.monotonic() - t0
    jobs: list[Job] = [
        lambda c, mine=numbers[i::streams]: _upload(c, key, upload_id, source, part_size,
                                                    mine)
        for i in range(streams)]
    # Timed from the release of the workers: their start-up is not transfer time.
    uploading, results = run_parallel(endpoint, jobs)
    parts = sorted((p for r in results for p in r), key=lambda p: p.part_number)  # type: ignore[attr-defined]
    t1 = time.monotonic()
    client.complete_multipart_upload(key, upload_id, parts)
    return initiate + uploading + time.monotonic() - t1
