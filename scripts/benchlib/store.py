"""Direct access to the bucket with boto3, never through a mount: puts the objects a
workload reads, polls for what a mount wrote, and counts its own requests so they can
be taken out of the server's counters."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from .procs import wait_until

# boto3 operation names -> the server's counter names (docs/ARCHITECTURE.md).
SERVER_OP = {"CopyObject": "PutObjectCopy", "DeleteObjects": "DeleteMultipleObjects",
             "CreateMultipartUpload": "InitiateMultipartUpload"}
MiB = 1 << 20


class Store:
    def __init__(self, url: str, bucket: str, key_id: str, secret: str) -> None:
        self.bucket = bucket
        self.own_requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        # Checksums "when_required": newer boto3 would otherwise send aws-chunked
        # bodies with trailing checksums, which is not what COS speaks.
        cfg = Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                     max_pool_connections=32, retries={"max_attempts": 3},
                     request_checksum_calculation="when_required",
                     response_checksum_validation="when_required")
        self.s3 = boto3.session.Session().client(
            "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key_id,
            aws_secret_access_key=secret, config=cfg)
        self.s3.meta.events.register("before-call.s3", self._count)

    def _count(self, model: object, **_: object) -> None:
        name = getattr(model, "name", "?")
        with self._lock:
            self.own_requests[SERVER_OP.get(name, name)] += 1

    def reset_counts(self) -> None:
        with self._lock:
            self.own_requests.clear()

    # -- writing -------------------------------------------------------------
    def create_bucket(self) -> None:
        self.s3.create_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def put_file(self, key: str, path: Path) -> None:
        cfg = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB,
                             max_concurrency=4)
        self.s3.upload_file(str(path), self.bucket, key, Config=cfg)

    def put_many(self, items: Iterable[tuple[str, bytes]], threads: int = 16) -> int:
        with ThreadPoolExecutor(threads) as pool:
            return sum(1 for _ in pool.map(lambda kv: self.put_bytes(*kv), items))

    def copy(self, src: str, dst: str) -> None:
        """Server-side copy: a fresh key with the same bytes, so no mount has it cached."""
        self.s3.copy_object(Bucket=self.bucket, Key=dst,
                            CopySource={"Bucket": self.bucket, "Key": src})

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list_sizes(prefix))
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i:i + 1000]]
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch,
                                                               "Quiet": True})
        return len(keys)

    # -- reading -------------------------------------------------------------
    def size(self, key: str) -> int | None:
        """Content length, or None if the key does not exist."""
        try:
            return int(self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def list_sizes(self, prefix: str) -> dict[str, int]:
        sizes: dict[str, int] = {}
        marker = ""
        while True:
            page = self.s3.list_objects(Bucket=self.bucket, Prefix=prefix, Marker=marker,
                                        MaxKeys=1000)
            contents = page.get("Contents", [])
            sizes.update((c["Key"], int(c["Size"])) for c in contents)
            if not page.get("IsTruncated") or not contents:
                return sizes
            marker = page.get("NextMarker") or contents[-1]["Key"]

    def get_range(self, key: str, start: int, length: int) -> bytes:
        resp = self.s3.get_object(Bucket=self.bucket, Key=key,
                                  Range=f"bytes={start}-{start + length - 1}")
        return resp["Body"].read()

    def drain_range(self, key: str, start: int, end: int, chunk: int = MiB) -> int:
        """GET bytes start..end (inclusive) and throw them away; returns the count."""
        resp = self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}")
        return sum(len(c) for c in resp["Body"].iter_chunks(chunk))

    # -- waiting for a mount's uploads ----------------------------------------
    def wait_size(self, key: str, size: int, timeout: float) -> float:
        """Monotonic time at which ``key`` was first seen with ``size`` bytes."""
        return wait_until(lambda: self.size(key) == size, timeout,
                          what=f"{key} with {size} bytes on the server")

    def wait_gone(self, key: str, timeout: float) -> float:
        return wait_until(lambda: self.size(key) is None, timeout,
                          what=f"{key} gone from the server")

    def wait_files(self, prefix: str, expected: dict[str, int], timeout: float) -> float:
        """Wait until every key of ``expected`` (relative to ``prefix``) has its size.
        Directory markers and extra keys do not count either way."""
        def done() -> bool:
            sizes = self.list_sizes(prefix)
            return all(sizes.get(prefix + k) == n for k, n in expected.items())

        return wait_until(done, timeout, interval=0.1,
                          what=f"{len(expected)} files under {prefix} on the server")

    def wait_empty(self, prefix: str, timeout: float) -> float:
        return wait_until(lambda: not self.list_sizes(prefix), timeout, interval=0.1,
                          what=f"no keys under {prefix}")
