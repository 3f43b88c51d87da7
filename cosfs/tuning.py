"""Tunables of the data path (read-ahead, uploads, staging cache, recovery).

One frozen dataclass with defaults fit for real COS; tests shrink the sizes (the
local server accepts parts down to 64 KiB) with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Tuning:
    """Sizes are bytes, times seconds. Frozen: share one instance across the mount."""

    # -- reads ---------------------------------------------------------------
    # A first or random read fetches at least this much (one small ranged GET).
    read_min_fetch: int = 128 * KiB
    # Sequential reading starts its read-ahead window here and doubles it...
    readahead_initial: int = 1 * MiB
    # ...up to this, or less when many readers share the ReadBudget.
    readahead_max: int = 64 * MiB
    # Read-ahead is fetched as ranged GETs of at most this size...
    read_chunk: int = 8 * MiB
    # ...with at most this many in flight per open file.
    read_concurrency: int = 8
    # Read-ahead memory of the whole mount (the ReadBudget's total).
    read_budget: int = 256 * MiB
    # A read this close (either way) to where the last one ended still counts as
    # sequential: the kernel issues read-ahead requests slightly out of order.
    sequential_slack: int = 256 * KiB
    # The kernel's read-ahead for the mount (its bdi read_ahead_kb; 0 leaves the
    # kernel's 128 KiB). Larger read-ahead makes the kernel send larger FUSE reads,
    # several at once, so a sequential reader costs far fewer requests and replies.
    # Much more (8 MiB here) made reads slower again. Needs root; else ignored.
    kernel_readahead: int = 2 * MiB

    # -- writes --------------------------------------------------------------
    # Files below this size go up in one PUT; larger ones as multipart uploads.
    multipart_threshold: int = 8 * MiB
    # Parts 1..parts_per_tier have part_size bytes; each following tier of
    # parts_per_tier parts doubles it (capped by max_part_size), so 10,000 parts
    # of 8 MiB..4 GiB reach about 8 TiB.
    part_size: int = 8 * MiB
    parts_per_tier: int = 1000
    max_part_size: int = 5 * GiB
    # Part uploads (and part copies) in flight across the mount, and per file.
    upload_concurrency: int = 8
    upload_concurrency_per_file: int = 4
    # Missing ranges of an existing object are fetched into the staging file in
    # blocks aligned to this size, so small reads of a staged file batch up.
    fill_block: int = 1 * MiB
    # Largest body of one APPEND Object request.
    append_chunk: int = 1 * GiB
    # flush() returns at once and uploads in the background (fsync is a barrier).
    writeback: bool = False
    # ...after this long without another close(): a file renamed or deleted
    # meanwhile is uploaded under its final name, or not at all.
    writeback_delay: float = 1.0
    # New files opened append-only become appendable objects (COS only).
    create_appendable: bool = False
    # The storage class of what PUT and multipart uploads write (appendable
    # objects are always STANDARD: COS appends to no other class).
    storage_class: str = "STANDARD"

    # -- staging cache -------------------------------------------------------
    cache_limit: int = 16 * GiB
    # Keep at least min(min_free_bytes, min_free_ratio * filesystem size) free.
    min_free_bytes: int = 1 * GiB
    min_free_ratio: float = 0.05
    # Staged copies of closed files kept for reuse (evicted first when full).
    max_idle_files: int = 256

    # -- recovery ------------------------------------------------------------
    # Also abort multipart uploads under upload_prefix older than stale_upload_age
    # (left by other crashed clients) at recover().
    abort_stale_uploads: bool = False
    stale_upload_age: float = 86400.0
    upload_prefix: str = ""
