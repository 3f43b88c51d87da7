"""Writing objects: staging files in the cache directory, uploaded on flush.

Every write goes to a local staging file, so random writes, truncate, O_APPEND,
sparse files, databases and mmap all work on an object store. A staged copy of an
existing object is filled lazily: ``_local`` says which bytes of the staging file
are valid (written, fetched from the base object, or zeros of a hole) and the
:class:`~cosfs.ranges.DirtyMap` which of them differ from the base object.

flush() picks the cheapest upload that yields exactly the staged bytes:

* APPEND Object from the old length, when the base is appendable and only new
  bytes were added after its end (and for new append-only files, if tuned so);
* one PUT below ``multipart_threshold``;
* otherwise a multipart upload: parts that still hold the base object's bytes are
  copied server-side (Upload Part - Copy), the others uploaded from the staging
  file after fetching the base bytes they still miss. Parts a sequential writer
  finished are uploaded in the background while it goes on (several at once), so
  flush() mostly waits for the tail; a later write into such a part re-uploads it.

A multipart upload completes only when every part is in, and is aborted when
anything fails, so the previous object stays readable until the new one is whole.
Crash safety comes from the journal (see :mod:`cosfs.journal`); ``recover()``
uploads what a killed mount left behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .background import TaskSet, open_nursery_unwrapped
from .cos.body import FileSlice
from .cos.errors import CosError
from .cos.types import ObjectInfo, PartInfo
from .journal import ExtentLog, Journal, StagedRecord
from .ranges import DirtyMap, PartLayout, RangeSet
from .reader import fetch_range
from .tuning import Tuning

log = logging.getLogger(__name__)

# Largest object one PUT Object - Copy may produce (used to fix metadata after a
# multipart upload whose metadata changed while its parts went up).
_MAX_COPY = 5 << 30
# Base-object ranges fetched at once into one staging file.
_FILL_CONCURRENCY = 4
# An extent log longer than this many records (and four times the ranges it
# describes) is rewritten in its shortest form, so a file written for days
# without a flush keeps a small log.
_LOG_COMPACT_AT = 1 << 16
# Emptied staging files kept open for new ones (see Spare), two descriptors each.
# Creating and closing files takes one each in turn; a burst of removals (rm -r)
# keeps this many.
_MAX_SPARES = 32
# Staging-file I/O up to this size runs on the event loop: handing it to a worker
# thread costs about 0.1 ms of CPU, a pwrite/pread of a few KiB to the page cache a
# few microseconds. Larger I/O (1 MiB FUSE writes, fills) goes to a thread so the
# loop keeps serving other requests while the kernel copies.
_INLINE_IO = 64 << 10


def _eio(what: str, exc: BaseException) -> OSError:
    log.error("%s: %s", what, exc)
    return OSError(errno.EIO, what)


@dataclass
class UploadProgress:
    """One upload in progress, as ``cosfs status`` shows it."""

    key: str
    bytes_total: int
    started: float = field(default_factory=time.time)
    bytes_done: int = 0


@dataclass
class _Part:
    etag: str
    start: int
    end: int
    version: int  # the part's write version when its bytes were read


@dataclass
class _Multipart:
    """An open multipart upload of one staged file."""

    upload_id: str
    key: str
    metadata: dict[str, str]
    content_type: str | None
    parts: dict[int, _Part] = field(default_factory=dict)


@dataclass
class RecoveryReport:
    """What ``recover()`` did: keys uploaded, local copies kept (key, path) because
    the object changed on the server, uploads aborted, keys that failed (kept in the
    journal for the next try)."""

    uploaded: list[str] = field(default_factory=list)
    preserved: list[tuple[str, Path]] = field(default_factory=list)
    aborted_uploads: int = 0
    failed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        """True when recovery found anything to do."""
        return bool(self.uploaded or self.preserved or self.aborted_uploads or self.failed)


@dataclass(frozen=True)
class Spare:
    """An emptied staging file and its extent log, still open, kept by the cache
    for the next new staged file. Creating files costs more than emptying them:
    on ext4 without a journal a new inode skips every recently deleted one
    (``recently_deleted``), so a mount staging and dropping thousands of small
    files paid up to a millisecond per create. A spare has no journal row: a
    crash leaves it as a stray, swept at the next start."""

    path: Path
    fd: int
    log_path: Path
    log_fd: int

    @property
    def name(self) -> str:
        return self.path.name

    def delete(self) -> None:
        """Close both descriptors and delete both files."""
        os.close(self.fd)
        os.close(self.log_fd)
        for path in (self.path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


class StagedFile:
    """The staged copy of one inode's content, shared by all its open handles.

    Invariants: ``_local`` covers ``_map.dirty`` and lies below ``size``; a byte
    below ``size`` outside ``_local`` equals the base object's byte at that offset;
    while the staged file is dirty it has a journal row, and every change it
    accepted is in its extent log. ``_since`` (only during an upload) records the
    changes made after the upload took its snapshot, relative to what it sends.
    Concurrency: trio tasks of one loop. ``_lock`` serialises changes of the staging
    data, the log and the maps (writes, truncates, fills); reads of valid bytes and
    part uploads read the file without it (a write racing an upload bumps the part's
    version, which voids that part). ``_upload_lock`` admits one upload at a time.
    A write-back upload waits for its delay and for every :meth:`hold_writeback`
    to be released before it sends anything; :meth:`wait_background` cuts the
    delay short.
    """

    def __init__(self, cache: WriteCache, ino: int, key: str, base: ObjectInfo | None,
                 name: str, *, append_only: bool = False,
                 record: StagedRecord | None = None, dirty: DirtyMap | None = None,
                 spare: Spare | None = None) -> None:
        self._cache = cache
        self._t = cache.tuning
        self.ino = ino
        self._key = key
        self._base = base
        self.name = name
        self.path = cache.staging_dir / name
        self.refs = 0
        self.append_only = append_only
        self.metadata: dict[str, str] = dict(base.metadata) if base else {}
        self.content_type: str | None = base.content_type or None if base else None
        self._map = dirty or DirtyMap(base.size if base else 0)
        self._since: DirtyMap | None = None
        self._local = RangeSet(self._map.dirty)  # after a crash only dirty bytes are trusted
        self._record = record
        self._discarded = False
        self._disk = 0  # bytes the staging file occupies, as counted in cache.used
        self._lock = trio.Lock()
        self._upload_lock = trio.Lock()
        self._mp_lock = trio.Lock()
        self._mp: _Multipart | None = None
        self._versions: dict[int, int] = {}
        self._scan = 1  # parts before this number were considered for early upload
        self._early_queue: list[int] = []
        self._early_running: set[int] = set()
        self._early_idle = trio.Event()
        self._early_idle.set()
        self._flushing = False
        # Metadata changed while an upload carried the older one: upload again.
        self._meta_stale = False
        self._writeback: trio.Event | None = None  # set when the background upload ends
        # The background upload starts at _wb_due (trio time), or at once after
        # start_writeback_now (_wb_now), once no operation holds it
        # (hold_writeback); _wb_wake makes it look again.
        self._wb_due = 0.0
        self._wb_now = False
        self._wb_holds = 0
        self._wb_wake = trio.Event()
        self._wb_sending = False
        self._error: OSError | None = None  # a background upload's failure, reported once
        if spare is not None:
            assert record is None and spare.name == name
            self._fd = spare.fd
            self._log = ExtentLog(spare.log_path, fd=spare.log_fd)
        else:
            # A new staged file starts empty through O_TRUNC, never through an
            # ftruncate to 0: on ext4 that marks the file to be written out when it
            # is closed (auto_da_alloc), a disk write and a slow unlink for every
            # small file. O_TRUNC does nothing to a file the open creates, and
            # empties a leftover.
            fresh = os.O_TRUNC if record is None else 0
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | fresh, 0o600)
            try:
                self._log = ExtentLog(cache.staging_dir / f"{name}.log")
            except BaseException:
                os.close(self._fd)  # e.g. EMFILE: no descriptor left behind
                raise
        self._log_stale = False  # holds records of changes already uploaded
        if record is None and self._map.size:
            os.ftruncate(self._fd, self._map.size)  # sparse: the base's bytes come later
        self._account()

    # -- public state ----------------------------------------------------------------
    @property
    def key(self) -> str:
        return self._key

    @key.setter
    def key(self, new_key: str) -> None:
        """Rename of an open file: later uploads go to ``new_key``. Fills and part
        copies still read ``base.key``; an open multipart upload (tied to the old
        key) is dropped."""
        if new_key == self._key:
            return
        self._key = new_key
        self._drop_multipart()
        if self._record is not None:
            self._record.key = new_key
            self._cache.journal.update_file(self._record)

    @property
    def base(self) -> ObjectInfo | None:
        return self._base

    def base_moved(self, info: ObjectInfo) -> None:
        """The base object was renamed (copied to ``info.key``, the old key deleted):
        fills and part copies read it there from now on. Ignored when ``info`` is
        not the same bytes (another size: someone else changed it meanwhile)."""
        if self._base is None or info.size != self._base.size:
            return
        self._base = info
        if self._record is not None:
            self._record.base_key, self._record.base_etag = info.key, info.etag
            self._cache.journal.update_file(self._record)

    @property
    def size(self) -> int:
        return self._map.size

    @property
    def dirty(self) -> bool:
        """True while the staged bytes are not (known to be) the object's."""
        return not self._discarded and (self._base is None or self._map.changed
                                         or self._meta_stale)

    @property
    def busy(self) -> bool:
        """Background work still uses the staging file."""
        return bool(self._early_running) or self._writeback is not None

    # -- data --------------------------------------------------------------------------
    async def write(self, offset: int, data: bytes) -> int:
        """Stage ``data`` at ``offset``; returns its length once it is crash-safe.
        OSError(ENOSPC) when the cache cannot hold it (nothing staged is lost)."""
        n = len(data)
        if n == 0:
            return 0
        end = offset + n
        if offset < 0 or end > self._cache.layout.max_size:
            raise OSError(errno.EFBIG, "file too large for a multipart upload")
        async with self._lock:
            self._cache.reserve(n - self._local.count(offset, end))
            self._ensure_journaled()
            self._bump(min(offset, self.size), end)
            try:
                if n <= _INLINE_IO:
                    self._write_sync(offset, data)
                else:
                    await trio.to_thread.run_sync(self._write_sync, offset, data)
            except OSError:
                # The bytes there are unknown now: forget the clean ones so they
                # are fetched again; dirty ones were never the base's anyway.
                for s, e in self._map.dirty.missing(offset, end):
                    self._local.remove(s, e)
                self._account()
                raise
            if offset > self.size:
                self._local.add(self.size, offset)  # a hole: zeros, valid
            self._local.add(offset, end)
            for dm in self._maps():
                dm.write(offset, n)
            self._account()
            self._compact_log()
            self._queue_finished_parts(end)
        return n

    def _compact_log(self) -> None:
        records = self._log.records
        if records > max(_LOG_COMPACT_AT, 4 * len(self._map.dirty)) and \
                self._record is not None:
            self._log.rewrite(self._map.size, self._map.dirty)

    def _write_sync(self, offset: int, data: bytes) -> None:
        view, pos = memoryview(data), offset
        while view:
            written = os.pwrite(self._fd, view, pos)
            view, pos = view[written:], pos + written
        if not self._discarded:
            self._log.write(offset, len(data))
        self._disk_now = os.fstat(self._fd).st_blocks * 512

    async def read(self, offset: int, length: int) -> bytes:
        """Staged bytes; unmodified ranges of the base object are fetched first."""
        end = min(self.size, offset + length)
        if offset < 0 or offset >= end:
            return b""
        await self._fill(offset, end, align=True)
        if end - offset <= _INLINE_IO:
            data = os.pread(self._fd, end - offset, offset)
        else:
            data = await trio.to_thread.run_sync(os.pread, self._fd, end - offset, offset)
        # A concurrent truncate may have cut the file; past its end reads as zeros.
        return data + bytes(end - offset - len(data))

    async def make_local(self) -> None:
        """Fetch every byte still only in the base object, so the staged copy no
        longer needs it (the object is about to be deleted under open handles)."""
        await self._fill(0, self.size)

    async def truncate(self, size: int) -> None:
        if size < 0 or size > self._cache.layout.max_size:
            raise OSError(errno.EFBIG if size > 0 else errno.EINVAL, "bad size")
        async with self._lock:
            old = self.size
            if size == old:
                return
            self._ensure_journaled()
            self._bump(max(0, min(old, size) - 1), max(old, size))
            await trio.to_thread.run_sync(self._truncate_sync, size)
            if size < old:
                self._local.truncate(size)
                self._scan = min(self._scan, self._cache.layout.index(size))
            else:
                self._local.add(old, size)
            for dm in self._maps():
                dm.truncate(size)
            self._account()

    def _truncate_sync(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        if not self._discarded:
            self._log.truncate(size)
        self._disk_now = os.fstat(self._fd).st_blocks * 512

    def _maps(self) -> list[DirtyMap]:
        return [self._map] if self._since is None else [self._map, self._since]

    def _bump(self, start: int, end: int) -> None:
        """New write versions for the parts holding ``[start, end)``: a part read
        for upload before this change no longer matches the file."""
        for n in self._cache.layout.numbers_touching(start, end):
            self._versions[n] = self._versions.get(n, 0) + 1

    def _account(self) -> None:
        disk = getattr(self, "_disk_now", None)
        if disk is None:
            disk = os.fstat(self._fd).st_blocks * 512
        self._cache.used += disk - self._disk
        self._disk = disk
        self._disk_now = None

    def _ensure_journaled(self) -> None:
        """Commit the journal row before the first change reaches the staging file."""
        if self._record is not None or self._discarded:
            return
        if self._log_stale:
            self._log.clear()
            self._log_stale = False
        base = self._base
        self._record = StagedRecord(
            ino=self.ino, key=self._key, name=self.name,
            base_key=base.key if base else None, base_etag=base.etag if base else None,
            base_size=base.size if base else 0,
            base_appendable=bool(base and base.appendable),
            metadata=dict(self.metadata), content_type=self.content_type)
        self._cache.journal.add_file(self._record)

    # -- filling from the base object ---------------------------------------------------
    async def _fill(self, start: int, end: int, align: bool = False) -> None:
        """Make ``[start, end)`` local, fetching what is missing from the base.
        Bytes past the current size (cut by a truncate meanwhile) read as zeros."""
        base = self._base
        gaps = self._local.missing(start, min(end, self.size))
        if not gaps:
            return
        assert base is not None, "a new file has no bytes to fetch"
        if align:  # batch small reads: fetch whole aligned blocks
            block = self._t.fill_block
            limit = min(self.size, base.size)
            wanted = RangeSet((s // block * block, min(limit, -(-e // block) * block))
                              for s, e in gaps)
            gaps = [g for s, e in wanted for g in self._local.missing(s, e)]
        pieces = [(p, min(p + self._t.read_chunk, e)) for s, e in gaps
                  for p in range(s, e, self._t.read_chunk)]
        slots = trio.Semaphore(_FILL_CONCURRENCY)
        async with open_nursery_unwrapped() as nursery:
            for s, e in pieces:
                await slots.acquire()
                nursery.start_soon(self._fill_piece, base, s, e, slots)

    async def _fill_piece(self, base: ObjectInfo, start: int, end: int,
                          slots: trio.Semaphore) -> None:
        try:
            data = await fetch_range(self._cache.client, base.key, start, end, base.etag)
            async with self._lock:
                for s, e in self._local.missing(start, min(end, self.size)):
                    self._cache.reserve(e - s)
                    chunk = memoryview(data)[s - start:e - start]
                    await trio.to_thread.run_sync(os.pwrite, self._fd, chunk, s)
                    self._local.add(s, e)
                self._account()
        finally:
            slots.release()

    # -- flush -------------------------------------------------------------------------
    async def flush(self, metadata: dict[str, str] | None = None,
                    content_type: str | None = None) -> ObjectInfo | None:
        """Upload if dirty; the new object's info, or None when nothing was sent
        (clean, discarded, or handed to the background in write-back mode)."""
        self.remember(metadata, content_type)
        self._raise_background_error()
        if self._t.writeback:
            if self.dirty:
                # Under the lock: a finishing upload rewrites the extent log (new
                # descriptor) and writes use both files.
                async with self._lock:
                    await trio.to_thread.run_sync(self._sync_locally)
                self._start_writeback()
            return None
        return await self._upload()

    async def fsync(self, metadata: dict[str, str] | None = None,
                    content_type: str | None = None) -> ObjectInfo | None:
        """Barrier: returns once every byte staged so far is on the server."""
        self.remember(metadata, content_type)
        await self.wait_background()
        self._raise_background_error()
        return await self._upload()

    async def wait_background(self) -> None:
        """Start a write-back upload still waiting for its delay, and wait until none
        is in flight (its failure, if any, is still reported by the next flush or
        fsync). Never called by the holder of :meth:`hold_writeback`."""
        self.start_writeback_now()
        if self._writeback is not None:
            await self._writeback.wait()

    def start_writeback_now(self) -> None:
        """End a waiting write-back upload's delay (holds still apply; a close
        meanwhile does not delay it again)."""
        if self._writeback is not None:
            self._wb_now = True
            self._wb_wake.set()

    @property
    def writeback_pending(self) -> bool:
        """A write-back upload is scheduled or running."""
        return self._writeback is not None

    @property
    def writeback_waiting(self) -> bool:
        """A write-back upload is scheduled and has sent nothing yet."""
        return self._writeback is not None and not self._wb_sending

    def hold_writeback(self) -> bool:
        """Keep a waiting write-back upload from starting until
        :meth:`release_writeback`, so a rename can give it another key or an unlink
        drop it before anything is sent. False (nothing held) when none is waiting."""
        if not self.writeback_waiting:
            return False
        self._wb_holds += 1
        return True

    def release_writeback(self) -> None:
        self._wb_holds -= 1
        self._wb_wake.set()

    def discard(self) -> None:
        """The file was unlinked: never upload it; forget it at the last release."""
        self._discarded = True
        self._drop_multipart()
        if self._record is not None:
            self._cache.journal.remove_file(self._record.id)  # type: ignore[arg-type]
            self._record = None

    def remember(self, metadata: dict[str, str] | None, content_type: str | None) -> None:
        """The metadata the next upload carries (journaled with the staged file)."""
        if metadata is not None:
            self.metadata = dict(metadata)
        if content_type is not None:
            self.content_type = content_type
        rec = self._record
        # Each close passes the metadata again: only a change costs a journal commit.
        if rec is not None and (rec.metadata, rec.content_type) != (self.metadata,
                                                                    self.content_type):
            rec.metadata, rec.content_type = dict(self.metadata), self.content_type
            self._journal_advisory("metadata", lambda: self._cache.journal.update_file(rec))

    def _journal_advisory(self, what: str, change: Callable[[], None]) -> bool:
        """Apply a journal change that only matters for recovery after a crash.
        When the cache disk fails (read-only, I/O errors) the upload must go on:
        the staged bytes are still readable and the server is the safer place for
        them. False (and a warning) when the journal refused."""
        try:
            change()
        except (sqlite3.Error, OSError) as exc:
            log.warning("the cache journal cannot record the %s of %r (%s); uploading "
                        "anyway, but a crash now could not be recovered from",
                        what, self._key, exc)
            return False
        return True

    def _raise_background_error(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err

    def _sync_locally(self) -> None:
        """Make the staged data and its journal row durable against power loss
        (write-back flush; a worker thread)."""
        os.fsync(self._fd)
        self._log.fsync()
        self._cache.journal.sync()

    def _start_writeback(self) -> None:
        """Upload in the background once ``writeback_delay`` passed since the last
        close: a temporary file renamed or deleted meanwhile (rsync, editors,
        compilers) is uploaded once under its final name, or never."""
        self._wb_due = trio.current_time() + self._t.writeback_delay
        if self._writeback is None:
            self._writeback = trio.Event()
            self._cache.tasks.spawn(self._writeback_loop)

    async def _writeback_due(self) -> None:
        while self._wb_holds or not (self._wb_now or trio.current_time() >= self._wb_due):
            self._wb_wake = trio.Event()
            with trio.move_on_at(math.inf if self._wb_holds or self._wb_now
                                 else self._wb_due):
                await self._wb_wake.wait()

    async def _writeback_loop(self) -> None:
        assert self._writeback is not None
        try:
            await self._writeback_due()
            self._wb_sending, self._wb_now = True, False
            while self.dirty:
                info = await self._upload()
                if info is not None and self._cache.on_upload is not None:
                    self._cache.on_upload(self, info)
        except OSError as exc:
            self._error = exc
        except Exception as exc:
            self._error = _eio(f"uploading {self._key!r} failed", exc)
        finally:
            self._wb_sending = False
            done, self._writeback = self._writeback, None
            done.set()
            self._cache.settle(self)

    async def _upload(self) -> ObjectInfo | None:
        async with self._upload_lock:
            if not self.dirty:
                return None
            size, key = self.size, self._key
            sent_meta = (dict(self.metadata), self.content_type)
            self._since = DirtyMap(size)
            progress = UploadProgress(key, size)
            self._cache.progress.append(progress)
            try:
                info = await self._send(size, key, progress)
            except BaseException:
                self._since = None
                raise
            finally:
                self._cache.progress.remove(progress)
            await self._rebase(info, sent_meta)
            return info

    async def _send(self, size: int, key: str, progress: UploadProgress) -> ObjectInfo:
        base = self._base
        try:
            if self._mp is None and base is not None and base.appendable and \
                    self._map.append_only:
                return await self._append(key, base.size, size, progress)
            if (self._mp is None and base is None and self.append_only and size > 0
                    and self._t.create_appendable):
                return await self._append(key, 0, size, progress)
            if size < self._t.multipart_threshold:
                self._drop_multipart()
                return await self._put(key, size, progress)
            return await self._multipart(key, size, progress)
        except (OSError, trio.Cancelled):
            raise
        except Exception as exc:
            raise _eio(f"uploading {key!r} failed", exc) from exc

    def _slice(self, start: int, end: int) -> Callable[[], FileSlice]:
        """A body factory: a fresh read-only view of the staging file per attempt."""
        # Zero-filled: a truncate racing the upload may cut the file under the body;
        # those bytes are dirty again after the truncate, so the next upload replaces
        # them.
        return lambda: FileSlice(self._fd, start, end - start, zero_fill=True)

    async def _put(self, key: str, size: int, progress: UploadProgress) -> ObjectInfo:
        await self._fill(0, size)
        etag = await self._cache.client.put_object(
            key, self._slice(0, size), content_type=self.content_type,
            metadata=self.metadata, storage_class=self._t.storage_class)
        progress.bytes_done = size
        return self._new_info(key, size, etag)

    async def _append(self, key: str, position: int, size: int,
                      progress: UploadProgress) -> ObjectInfo:
        """APPEND Object from ``position`` (the base's length, or 0 for a new
        appendable object). The base must still be the object we staged on."""
        client = self._cache.client
        new_object = position == 0
        if not new_object:
            assert self._base is not None
            current = await client.head_object(key)
            if current.etag != self._base.etag:
                raise _eio(f"{key!r} changed on the server; not appending", CosError(
                    412, "PreconditionFailed", operation="AppendObject", key=key))
        progress.bytes_total = size - position
        while position < size:
            n = min(self._t.append_chunk, size - position)
            extra = ({"content_type": self.content_type, "metadata": self.metadata}
                     if new_object else {})
            following = await client.append_object(key, position, self._slice(position,
                                                                              position + n),
                                                   **extra)
            if following != position + n:
                raise _eio(f"append to {key!r} ended at {following}, not {position + n}",
                           ValueError(following))
            progress.bytes_done += n
            position, new_object = following, False
        info = await client.head_object(key)
        if info.size != size:
            raise _eio(f"{key!r} has {info.size} bytes after appending, not {size}",
                       ValueError(info.size))
        return info

    def _new_info(self, key: str, size: int, etag: str) -> ObjectInfo:
        return ObjectInfo(key=key, size=size, etag=etag, last_modified=time.time(),
                          content_type=self.content_type or "", metadata=dict(self.metadata),
                          storage_class=self._t.storage_class)

    async def _rebase(self, info: ObjectInfo,
                      sent_meta: tuple[dict[str, str], str | None]) -> None:
        """The upload of a snapshot succeeded: ``info`` is the new base, and only the
        changes made since the snapshot are dirty, metadata included: the upload
        read the metadata at or after ``sent_meta`` was taken, so a difference
        means a change the object may lack."""
        async with self._lock:
            assert self._since is not None
            # Decided here, with no checkpoint before the file turns clean: a
            # metadata change that sees the file dirty relies on this upload loop.
            self._meta_stale = (self.metadata, self.content_type) != sent_meta
            self._base = info
            self._map, self._since = self._since, None
            if self._record is None:
                return
            rec = self._record
            journal = self._cache.journal
            if not self._map.changed:
                # Left behind, the row would at worst make the next mount keep a
                # copy under recovered/ (the object no longer matches its base).
                if self._journal_advisory("upload", lambda: journal.remove_file(rec.id)):  # type: ignore[arg-type]
                    self._record = None
                    # Without a row the log is a stray (swept at start); cleared
                    # only if the file is changed again (_ensure_journaled): a
                    # truncate of a just-fsynced file is not cheap.
                    self._log_stale = True
                return
            # Journal first: a crash between the two leaves a log that says more
            # is dirty than is, which only uploads more.
            rec.base_key, rec.base_etag, rec.base_size = info.key, info.etag, info.size
            rec.base_appendable = info.appendable
            if self._journal_advisory("upload", lambda: journal.update_file(rec)):
                # Failing, the old log stays: it says more is dirty, which is safe.
                self._journal_advisory("upload", lambda: self._log.rewrite(
                    self._map.size, self._map.dirty))

    # -- multipart ---------------------------------------------------------------------
    async def _multipart(self, key: str, size: int, progress: UploadProgress) -> ObjectInfo:
        await self._pause_early()
        try:
            mp = await self._open_multipart(key)
            try:
                return await self._complete(mp, size, progress)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._abort(mp)
                raise
        finally:
            self._flushing = False

    async def _complete(self, mp: _Multipart, size: int,
                        progress: UploadProgress) -> ObjectInfo:
        client = self._cache.client
        base = self._base
        copy_from = base if base is not None and not base.appendable else None
        copies: list[Callable[[], Awaitable[None]]] = []
        uploads: list[Callable[[], Awaitable[None]]] = []
        for n, start, end in self._cache.layout.parts(size):
            if self._part_valid(mp, n, start, end):
                progress.bytes_done += end - start
            elif (copy_from is not None and end <= copy_from.size
                  and not self._map.dirty.intersects(start, end)):
                copies.append(self._copy_job(mp, n, start, end, copy_from, progress))
            else:
                uploads.append(self._part_job(mp, n, start, end, progress))
        await self._run_jobs(uploads + copies)
        if copies:
            # Part copies carry no If-Match: check the source did not change meanwhile.
            assert copy_from is not None
            current = await client.head_object(copy_from.key)
            if current.etag != copy_from.etag:
                raise _eio(f"{copy_from.key!r} changed on the server during the upload",
                           ValueError(current.etag))
        parts = [PartInfo(n, mp.parts[n].etag)
                 for n, _, _ in self._cache.layout.parts(size)]
        etag = await client.complete_multipart_upload(mp.key, mp.upload_id, parts)
        self._forget_multipart(mp)
        if (mp.metadata, mp.content_type) != (self.metadata, self.content_type):
            etag = await self._fix_metadata(mp.key, size, etag)
        return self._new_info(mp.key, size, etag)

    def _part_valid(self, mp: _Multipart, n: int, start: int, end: int) -> bool:
        part = mp.parts.get(n)
        return (part is not None and (part.start, part.end) == (start, end)
                and part.version == self._versions.get(n, 0))

    def _part_job(self, mp: _Multipart, n: int, start: int, end: int,
                  progress: UploadProgress) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            await self._fill(start, end)
            await self._upload_part(mp, n, start, end)
            progress.bytes_done += end - start
        return job

    def _copy_job(self, mp: _Multipart, n: int, start: int, end: int, src: ObjectInfo,
                  progress: UploadProgress) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            async with self._cache.upload_slots:
                etag = await self._cache.client.upload_part_copy(
                    mp.key, mp.upload_id, n, src.key, start, end - 1)
            mp.parts[n] = _Part(etag, start, end, self._versions.get(n, 0))
            progress.bytes_done += end - start
        return job

    async def _run_jobs(self, jobs: list[Callable[[], Awaitable[None]]]) -> None:
        """Run ``jobs`` with at most ``upload_concurrency_per_file`` at once; the
        first failure cancels the rest."""
        slots = trio.Semaphore(self._t.upload_concurrency_per_file)

        async def run(job: Callable[[], Awaitable[None]]) -> None:
            try:
                await job()
            finally:
                slots.release()

        async with open_nursery_unwrapped() as nursery:
            for job in jobs:
                await slots.acquire()
                nursery.start_soon(run, job)

    async def _upload_part(self, mp: _Multipart, n: int, start: int, end: int) -> None:
        version = self._versions.get(n, 0)
        async with self._cache.upload_slots:
            etag = await self._cache.client.upload_part(mp.key, mp.upload_id, n,
                                                        self._slice(start, end))
        if self._mp is mp:
            mp.parts[n] = _Part(etag, start, end, version)

    async def _open_multipart(self, key: str) -> _Multipart:
        async with self._mp_lock:
            if self._mp is None or self._mp.key != key:
                # What the upload starts with, taken before the request: a chmod
                # arriving while it is sent must still count as a change (its
                # completion then fixes the metadata with a copy).
                metadata, content_type = dict(self.metadata), self.content_type
                upload_id = await self._cache.client.create_multipart_upload(
                    key, content_type=content_type, metadata=metadata,
                    storage_class=self._t.storage_class)
                record_id = self._record.id if self._record is not None else None
                self._cache.journal.add_upload(upload_id, key, record_id)
                mp = _Multipart(upload_id, key, metadata, content_type)
                if self._discarded or key != self._key:  # unlinked or renamed meanwhile
                    self._cache.tasks.spawn(self._abort, mp)
                    raise OSError(errno.ESTALE, f"{key!r} was renamed or removed")
                self._mp = mp
            return self._mp

    def _forget_multipart(self, mp: _Multipart) -> None:
        self._cache.journal.remove_upload(mp.upload_id)
        if self._mp is mp:
            self._mp = None

    async def _abort(self, mp: _Multipart) -> None:
        if self._mp is mp:
            self._mp = None
        try:
            await self._cache.client.abort_multipart_upload(mp.key, mp.upload_id)
        except Exception as exc:
            if not (isinstance(exc, CosError) and exc.status == 404):  # 404: gone already
                # Its journal row stays: the next mount aborts it (recover()).
                log.warning("aborting upload of %r failed (the next mount tries again): "
                            "%s", mp.key, exc)
                return
        with contextlib.suppress(sqlite3.Error, OSError):  # left, the next mount finds it gone
            self._cache.journal.remove_upload(mp.upload_id)

    def _drop_multipart(self) -> None:
        """Abandon the open multipart upload (in the background)."""
        if self._mp is not None:
            mp, self._mp = self._mp, None
            self._cache.tasks.spawn(self._abort, mp)

    async def _fix_metadata(self, key: str, size: int, etag: str) -> str:
        """Parts went up under the metadata known when the upload began; replace it
        with the current one (a server-side copy onto itself)."""
        if size > _MAX_COPY:
            log.warning("%r keeps the metadata its upload began with", key)
            return etag
        return await self._cache.client.copy_object(
            key, key, metadata=self.metadata, content_type=self.content_type, if_match=etag,
            storage_class=self._t.storage_class)

    # -- parts uploaded while the writer goes on -----------------------------------------
    def _early_allowed(self) -> bool:
        base = self._base
        appending = base is not None and base.appendable and self._map.append_only
        new_appendable = base is None and self.append_only and self._t.create_appendable
        return not (self._discarded or self._flushing or appending or new_appendable
                    or self.size < self._t.multipart_threshold)

    def _queue_finished_parts(self, written_to: int) -> None:
        """Queue for upload the parts that the writer has just filled completely."""
        if not self._early_allowed():
            return
        layout = self._cache.layout
        while self._scan <= layout.max_parts:
            start, end = layout.bounds(self._scan)
            if end > written_to:
                break
            if self._map.dirty.covers(start, end):
                self._early_queue.append(self._scan)
            self._scan += 1
        self._pump_early()

    def _pump_early(self) -> None:
        while (self._early_queue and not self._flushing
               and len(self._early_running) < self._t.upload_concurrency_per_file):
            n = self._early_queue.pop(0)
            if not self._early_running:
                self._early_idle = trio.Event()
            self._early_running.add(n)
            self._cache.tasks.spawn(self._upload_early, n)

    async def _upload_early(self, n: int) -> None:
        try:
            start, end = self._cache.layout.bounds(n)
            mp = await self._open_multipart(self._key)
            if not self._part_valid(mp, n, start, end):
                await self._upload_part(mp, n, start, end)
        except Exception as exc:
            log.info("early upload of part %d of %r failed (flush retries): %s",
                     n, self._key, exc)
        finally:
            self._early_running.discard(n)
            if not self._early_running:
                self._early_idle.set()
            self._pump_early()
            self._cache.settle(self)

    async def _pause_early(self) -> None:
        """Stop starting early parts and wait for those in flight (flush)."""
        self._flushing = True
        self._early_queue.clear()
        await self._early_idle.wait()

    # -- teardown ---------------------------------------------------------------------
    def close(self, remove: bool) -> None:
        """Close the staging file; ``remove`` deletes it (and its journal row), or
        empties it and its log for a new staged file (:meth:`WriteCache.keep_spare`)."""
        if self._fd < 0:
            return
        if remove and self._record is not None:
            # First: from here the files hold nothing recovery needs (strays).
            self._cache.journal.remove_file(self._record.id)  # type: ignore[arg-type]
            self._record = None
        fd, self._fd = self._fd, -1
        self._cache.used -= self._disk
        self._disk = 0
        if not remove:
            os.close(fd)
            self._log.close()
            return
        spare = Spare(self.path, fd, self._log.path, self._log.detach())
        # A file is closed only once nothing reads it. Should anything still do, a
        # closed descriptor fails loudly where a reused one would send another
        # file's bytes: a file with work in flight is deleted, never kept.
        in_use = self.busy or self._upload_lock.locked() or self._lock.locked()
        if in_use or not self._cache.keep_spare(spare):
            spare.delete()


class WriteCache:
    """The staging cache of one mount: staged files by inode, the journal, the
    background uploads and the space limit.

    Invariants: an inode has at most one StagedFile, found in exactly one of
    ``_open`` (open handles, ``refs > 0``), ``_background`` (released, a write-back
    or early-part upload still running) and ``_idle`` (released and quiet, kept for
    reuse, least recently used first; dirty ones, whose upload failed, are never
    evicted and stay journaled for ``recover()``). Reopening an inode takes its
    file from wherever it is: a second copy would upload stale or empty data over
    the first. ``used`` is the disk space of all staging files.

    Concurrency: trio thread only; one process per cache directory (an exclusive
    lock file guards it).
    """

    def __init__(self, cache_dir: str | os.PathLike[str], aclient: Any,
                 tuning: Tuning | None = None) -> None:
        self.dir = Path(cache_dir)
        self.client = aclient
        self.tuning = tuning or Tuning()
        t = self.tuning
        self.staging_dir = self.dir / "staging"
        self.recovered_dir = self.dir / "recovered"
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"cache directory {self.dir} is used by another mount") \
                from None
        self.journal = Journal(self.dir / "journal.sqlite")
        self.layout = PartLayout(t.part_size, t.parts_per_tier, t.max_part_size)
        self.upload_slots = trio.CapacityLimiter(t.upload_concurrency)
        self.tasks = TaskSet("uploads")
        self.progress: list[UploadProgress] = []
        self.used = 0
        # Told of every upload that finished in the background (write-back mode), whose
        # ObjectInfo no flush() returned: ``on_upload(staged_file, info)``.
        self.on_upload: Callable[[StagedFile, ObjectInfo], None] | None = None
        self._open: dict[int, StagedFile] = {}
        self._background: dict[int, StagedFile] = {}
        self._idle: OrderedDict[int, StagedFile] = OrderedDict()
        self._spares: list[Spare] = []  # emptied staging files, last in first out

    # -- staged files ------------------------------------------------------------------
    async def open(self, ino: int, key: str, base: ObjectInfo | None, truncate: bool = False,
                   append_only: bool = False, metadata: dict[str, str] | None = None,
                   content_type: str | None = None) -> StagedFile:
        """The staged file of ``ino`` (one per inode, refcounted). ``base`` is the
        object it starts from, None for a new file; ``append_only``: opened with
        O_APPEND for writing only (see ``Tuning.create_appendable``);
        ``metadata`` and ``content_type``: what its uploads carry (see
        :meth:`StagedFile.remember`)."""
        f = self._open.get(ino)
        if f is None:
            f = self._reuse(ino, key, base)
        new = f is None
        if f is None:
            f = self._new_staged(ino, key, base, append_only)
        # Before the journal row of a new file is written: recovered after a crash
        # before its first close, it keeps its mode and owner.
        f.remember(metadata, content_type)
        if new and base is None:
            try:
                f._ensure_journaled()  # a new file must appear even if never written
            except BaseException:
                f.close(remove=True)  # e.g. ENOSPC: no stray staging file
                raise
        self._open[ino] = f
        f.refs += 1
        if truncate:
            await f.truncate(0)
        return f

    def _new_staged(self, ino: int, key: str, base: ObjectInfo | None,
                    append_only: bool) -> StagedFile:
        """A new StagedFile, on a spare when there is one. Out of descriptors
        (EMFILE), the idle copies and the spares, two descriptors each, are closed
        and it tries once more: the application's files come first."""
        if self._spares:
            spare = self._spares.pop()
            return StagedFile(self, ino, key, base, spare.name, append_only=append_only,
                              spare=spare)

        def make() -> StagedFile:
            return StagedFile(self, ino, key, base, secrets.token_hex(8),
                              append_only=append_only)

        try:
            return make()
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
            log.warning("out of file descriptors (%s staged files open): closing the idle "
                        "staged copies; raise the mount's open-files limit (ulimit -n, "
                        "LimitNOFILE)", len(self._open))
            self._trim_idle(0)
            self._drop_spares()
            return make()

    def _reuse(self, ino: int, key: str, base: ObjectInfo | None) -> StagedFile | None:
        f = self._background.pop(ino, None)
        if f is not None:
            # Still uploading: it is the inode's newest data, whatever ``base`` says
            # (the upload may not have told the namespace of the new object yet).
            f.key = key
            return f
        f = self._idle.pop(ino, None)
        if f is None:
            return None
        # A copy made by a rename has the same ETag under another key: the staged
        # file's base may be the deleted source.
        same = f.key == key and (f.dirty or (
            base is not None and f.base is not None
            and (f.base.key, f.base.etag) == (base.key, base.etag)))
        if same:
            return f
        self._forget(f)
        return None

    async def release(self, f: StagedFile) -> None:
        """The last handle of ``f``'s inode closed (call once per ``open``)."""
        f.refs -= 1
        if f.refs > 0:
            return
        if self._open.get(f.ino) is f:
            del self._open[f.ino]
        if f.dirty and self.tuning.writeback:
            f._start_writeback()
        self.settle(f)

    def settle(self, f: StagedFile) -> None:
        """Decide what becomes of a released file once no background work uses it."""
        if f.refs > 0 or self._open.get(f.ino) is f or f._fd < 0:
            return
        if f.busy:
            self._background[f.ino] = f
            return
        if self._background.get(f.ino) is f:
            del self._background[f.ino]
        if f._discarded:
            f.close(remove=True)
            return
        if f.dirty:
            log.error("%r was released with changes not uploaded; kept for recovery",
                      f.key)
        self._idle[f.ino] = f
        self._idle.move_to_end(f.ino)
        self._trim_idle(self.tuning.max_idle_files)

    def _forget(self, f: StagedFile) -> None:
        if f.dirty:
            f.close(remove=False)  # stays in the journal for the next recover()
        else:
            f.close(remove=True)

    def _trim_idle(self, keep: int) -> None:
        """Close the oldest clean idle files beyond ``keep``. Called on every
        release, so it stops at the first ``excess`` clean ones instead of scanning
        the table (a dirty idle file, kept for recovery, is never closed here)."""
        excess = len(self._idle) - keep
        if excess <= 0:
            return
        victims: list[StagedFile] = []
        for f in self._idle.values():
            if len(victims) == excess:
                break
            if not f.dirty:
                victims.append(f)
        for f in victims:
            del self._idle[f.ino]
            f.close(remove=True)

    def keep_spare(self, spare: Spare) -> bool:
        """Empty the two files of a removed staged file and keep them open for a
        new one. False when enough are kept or emptying failed: the caller closes
        and deletes them (emptied first, so ext4 has nothing to write out at the
        close of a file that was once a spare, truncated to 0)."""
        try:
            os.ftruncate(spare.fd, 0)
            os.ftruncate(spare.log_fd, 0)
        except OSError:
            return False
        if len(self._spares) >= _MAX_SPARES:
            return False
        self._spares.append(spare)
        return True

    def _drop_spares(self) -> None:
        while self._spares:
            self._spares.pop().delete()

    def _files(self) -> list[StagedFile]:
        return [*self._open.values(), *self._background.values(), *self._idle.values()]

    # -- space -------------------------------------------------------------------------
    def reserve(self, n: int) -> None:
        """Make room for ``n`` more bytes of staged data, evicting clean staged
        files of closed inodes; OSError(ENOSPC) if it cannot fit."""
        if n <= 0:
            return
        while not self._fits(n):
            victim = next((f for f in self._idle.values() if not f.dirty), None)
            if victim is None:
                raise OSError(errno.ENOSPC, "the cache directory is full")
            del self._idle[victim.ino]
            victim.close(remove=True)

    def _fits(self, n: int) -> bool:
        if self.used + n > self.tuning.cache_limit:
            return False
        st = os.statvfs(self.dir)
        keep = min(self.tuning.min_free_bytes,
                   self.tuning.min_free_ratio * st.f_blocks * st.f_frsize)
        return st.f_bavail * st.f_frsize - n >= keep

    def status(self) -> dict[str, Any]:
        """Uploads in progress and cache use, for ``cosfs status``."""
        st = os.statvfs(self.dir)
        files = self._files()
        return {
            "cache_dir": str(self.dir),
            "used_bytes": self.used,
            "limit_bytes": self.tuning.cache_limit,
            "free_bytes": st.f_bavail * st.f_frsize,
            "open_files": len(self._open),
            "idle_files": len(self._idle),
            "dirty_files": sum(1 for f in files if f.dirty),
            "uploads": [
                {"key": p.key, "bytes_done": p.bytes_done, "bytes_total": p.bytes_total,
                 "started": p.started}
                for p in self.progress
            ],
        }

    async def shutdown(self, remove: bool = False) -> None:
        """Clean unmount: wait for background uploads, then close everything.
        Files still dirty stay journaled for the next ``recover()``. ``remove``
        (``-o del_cache``): delete the cache directory too, unless it holds
        something the next mount needs (unsent changes, copies under
        ``recovered/``)."""
        for f in self._files():
            f.start_writeback_now()
        await self.tasks.wait_idle()
        for f in self._files():
            try:
                self._forget(f)
            except OSError as exc:
                # A failing cache disk must not stop the unmount half-way; strays
                # are swept at the next start.
                log.error("cannot tidy the staged copy of %r: %s", f.key, exc)
        self._open.clear()
        self._background.clear()
        self._idle.clear()
        try:
            self._drop_spares()
        except OSError as exc:
            log.error("cannot delete the spare staging files: %s", exc)
        keep = remove and self._needed_later()
        self.journal.close()
        try:
            if remove and not keep:
                self._remove_dir()
        finally:
            os.close(self._lock_fd)

    def _needed_later(self) -> bool:
        """Whether the cache holds what a later mount needs; says so in the log."""
        try:
            unsent = self.journal.holds_changes()
            preserved = self.recovered_dir.exists() and any(self.recovered_dir.iterdir())
        except (sqlite3.Error, OSError) as exc:  # a failing cache disk: keep it all
            log.warning("del_cache: %s kept, it cannot be read: %s", self.dir, exc)
            return True
        if unsent:
            log.warning("del_cache: %s kept, it holds changes not on the server yet "
                        "(the next mount uploads them)", self.dir)
        elif preserved:
            log.warning("del_cache: %s kept, it holds copies recovery preserved in %s",
                        self.dir, self.recovered_dir)
        return unsent or preserved

    def _remove_dir(self) -> None:
        """Delete the cache directory, under its lock (a mount starting meanwhile
        is refused, not emptied): nothing in it is needed any more."""
        try:
            shutil.rmtree(self.staging_dir)
            with contextlib.suppress(FileNotFoundError):
                self.recovered_dir.rmdir()
            self.journal.delete_files()
            (self.dir / "lock").unlink(missing_ok=True)
            self.dir.rmdir()
        except OSError as exc:  # someone else's file in it, a failing disk
            log.warning("del_cache: could not delete %s: %s", self.dir, exc)

    # -- recovery ----------------------------------------------------------------------
    async def recover(self) -> RecoveryReport:
        """Finish what a killed mount left: abort its multipart uploads and upload
        every staged change, unless the object changed on the server meanwhile
        (then the staged copy is kept under ``recovered/`` and logged)."""
        report = RecoveryReport()
        await self._abort_known_uploads(report)
        if self.tuning.abort_stale_uploads:
            await self._abort_stale_uploads(report)
        for rec in self.journal.files():
            try:
                await self._recover_file(rec, report)
            except Exception as exc:
                log.error("recovering %r failed (kept for the next mount): %s", rec.key, exc)
                report.failed.append(rec.key)
        self._remove_strays()
        return report

    async def _abort_known_uploads(self, report: RecoveryReport) -> None:
        for up in self.journal.uploads():
            if await self._abort_upload(up.key, up.upload_id, report):
                self.journal.remove_upload(up.upload_id)
        await self._abort_unrecorded_uploads(report)

    async def _abort_upload(self, key: str, upload_id: str, report: RecoveryReport) -> bool:
        """Abort one upload; False when it may still be there (to retry next time)."""
        try:
            await self.client.abort_multipart_upload(key, upload_id)
            report.aborted_uploads += 1
        except CosError as exc:
            if exc.status != 404:
                log.warning("aborting upload of %r failed: %s", key, exc)
                return False
        return True

    async def _abort_unrecorded_uploads(self, report: RecoveryReport) -> None:
        """A mount killed after Initiate Multipart answered but before the journal
        recorded the upload id leaves an upload nobody knows of. Every key with
        staged data is one the dead mount may have been uploading: its in-progress
        uploads (exactly that key) are ours to abort, before any new one starts."""
        for key in sorted({rec.key for rec in self.journal.files()}):
            try:
                uploads = await self.client.list_multipart_uploads(prefix=key)
            except CosError as exc:
                log.warning("listing multipart uploads of %r failed: %s", key, exc)
                continue
            for up in uploads:
                if up.key == key:
                    await self._abort_upload(up.key, up.upload_id, report)

    async def _abort_stale_uploads(self, report: RecoveryReport) -> None:
        cutoff = time.time() - self.tuning.stale_upload_age
        try:
            uploads = await self.client.list_multipart_uploads(prefix=self.tuning.upload_prefix)
        except CosError as exc:
            log.warning("listing multipart uploads failed: %s", exc)
            return
        for up in uploads:
            if up.initiated < cutoff:
                await self._abort_upload(up.key, up.upload_id, report)

    async def _recover_file(self, rec: StagedRecord, report: RecoveryReport) -> None:
        dm = ExtentLog.replay(self.staging_dir / f"{rec.name}.log", rec.base_size)
        if rec.base_key is not None and not dm.changed:
            self._remove_staging(rec)
            return
        if not (self.staging_dir / rec.name).exists():
            log.error("the staged copy of %r is gone from the cache; cannot recover it",
                      rec.key)
            self._remove_staging(rec)
            report.failed.append(rec.key)
            return
        base = await self._current_base(rec)
        if base is False:
            if await self._landed(rec, dm):
                # Killed after its upload completed, before the journal heard of it:
                # the "change on the server" is our own upload, not a conflict.
                log.warning("recovered %r: the upload interrupted by the crash had "
                            "completed (the object holds the staged bytes)", rec.key)
                self._remove_staging(rec)
                report.uploaded.append(rec.key)
                return
            report.preserved.append((rec.key, self._preserve(rec, dm)))
            return
        f = StagedFile(self, rec.ino, rec.key, base or None, rec.name, record=rec, dirty=dm)
        f.metadata, f.content_type = rec.metadata, rec.content_type
        try:
            await f.fsync()
        finally:
            f.close(remove=not f.dirty)
        report.uploaded.append(rec.key)
        log.info("recovered %r (%d bytes) from the staging cache", rec.key, f.size)

    async def _landed(self, rec: StagedRecord, dm: DirtyMap) -> bool:
        """Whether the object at ``rec.key`` holds exactly the staged bytes. Only
        provable when every byte is staged (nothing would come from the base)."""
        if dm.dirty.count(0, dm.size) != dm.size:
            return False
        try:
            info = await self.client.head_object(rec.key)
        except CosError as exc:
            if exc.status != 404:
                raise
            return False
        if info.size != dm.size:
            return False
        fd = os.open(self.staging_dir / rec.name, os.O_RDONLY)
        try:
            step = self.tuning.fill_block * 8
            for start in range(0, dm.size, step):
                end = min(start + step, dm.size)
                remote = await self.client.get_object(rec.key, start, end - 1,
                                                      if_match=info.etag)
                local = await trio.to_thread.run_sync(os.pread, fd, end - start, start)
                if remote != local:
                    return False
        finally:
            os.close(fd)
        return True

    async def _current_base(self, rec: StagedRecord) -> ObjectInfo | None | bool:
        """The base object if it is still what the journal says; False if the key
        changed on the server (created, replaced or deleted by someone else)."""
        try:
            current = await self.client.head_object(rec.base_key or rec.key)
        except CosError as exc:
            if exc.status != 404:
                raise
            current = None
        if rec.base_key is None:
            return None if current is None else False
        if current is None or current.etag != rec.base_etag:
            return False
        return current

    def _preserve(self, rec: StagedRecord, dm: DirtyMap) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        parts = [p for p in rec.key.split("/") if p not in ("", ".", "..")] or ["unnamed"]
        target = self.recovered_dir.joinpath(stamp, *parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        src = self.staging_dir / rec.name
        os.truncate(src, dm.size)
        shutil.move(src, target)
        ranges = ", ".join(f"{s}-{e}" for s, e in dm.dirty) or "none"
        log.warning("%r changed on the server since it was staged; the local copy is "
                    "kept as %s (bytes written locally: %s)", rec.key, target, ranges)
        self._remove_staging(rec)
        return target

    def _remove_staging(self, rec: StagedRecord) -> None:
        for name in (rec.name, f"{rec.name}.log"):
            with contextlib.suppress(FileNotFoundError):
                (self.staging_dir / name).unlink()
        self.journal.remove_file(rec.id)  # type: ignore[arg-type]

    def _remove_strays(self) -> None:
        """Delete staging files no journal row or staged file refers to."""
        keep = {r.name for r in self.journal.files()}
        keep |= {f.name for f in self._files()} | {s.name for s in self._spares}
        for path in self.staging_dir.iterdir():
            if re.sub(r"\.log(\.new)?$", "", path.name) not in keep:
                path.unlink()
