"""Helpers shared by the data-path tests (reader, writer, journal)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from conftest import make_client

from cosfs.aio import AsyncClient
from cosfs.tuning import KiB, MiB, Tuning
from cosfs.writer import WriteCache

__all__ = ["KiB", "MiB", "small_tuning", "with_cache", "md5", "op_stat"]


def small_tuning(**overrides: Any) -> Tuning:
    """Sizes scaled down to what the test server accepts (64 KiB parts), so a few
    MiB exercise every path: multipart, part copies, read-ahead growth."""
    base = Tuning(
        read_min_fetch=16 * KiB, readahead_initial=64 * KiB, readahead_max=1 * MiB,
        read_chunk=256 * KiB, read_budget=8 * MiB, sequential_slack=64 * KiB,
        multipart_threshold=256 * KiB, part_size=128 * KiB, fill_block=64 * KiB,
        upload_concurrency=8, upload_concurrency_per_file=4,
        min_free_bytes=64 * MiB,
    )
    return dataclasses.replace(base, **overrides)


def with_cache(server, bucket: str, cache_dir: Path,
               body: Callable[[WriteCache], Awaitable[Any]], tuning: Tuning | None = None,
               **client_overrides: Any) -> Any:
    """Run ``body(cache)`` on trio with a WriteCache on ``cache_dir``, recovered
    first and shut down after."""
    client = AsyncClient(make_client(server, bucket, **client_overrides))

    async def main() -> Any:
        cache = WriteCache(cache_dir, client, tuning or small_tuning())
        await cache.recover()
        try:
            return await body(cache)
        finally:
            await cache.shutdown()

    return trio.run(main)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def op_stat(server, op: str, field: str = "count") -> int:
    return server.stats().get(op, {}).get(field, 0)
