"""Reading objects: ranged GETs with sequential detection and a growing read-ahead
window, bounded by a mount-wide memory budget.

A read never downloads the whole object to answer a small request. The first read
of a handle (and any read that jumps away from the previous one) costs one small
ranged GET. Once two reads follow each other, the handle keeps a window of
read-ahead in flight ahead of the reader: it starts at ``readahead_initial`` and
doubles with every sequential read up to ``readahead_max`` (or the handle's share
of the :class:`ReadBudget`), fetched as ranged GETs of up to ``read_chunk`` bytes,
several at once. The read itself only copies bytes already fetched, or waits for
the GET in flight that covers them.

Every GET carries ``If-Match`` with the ETag the handle was opened on: if the
object is replaced while it is read, the answer is 412 and the read fails with
EIO rather than returning a mix of old and new bytes.
"""

from __future__ import annotations

import errno
import logging
import mmap
from dataclasses import dataclass, field

import trio

from .background import TaskSet
from .cos import CosError
from .errmap import errno_for
from .tuning import MiB, Tuning

log = logging.getLogger(__name__)

_fetches = TaskSet("read-ahead")


class ReadBudget:
    """The read-ahead memory of one mount: bytes fetched (or being fetched) ahead of
    readers, across all open handles.

    Read-ahead only starts a GET when it can take its size from the budget; bytes
    a read needs right now are taken regardless (they are bounded by the request
    size), so ``used`` can pass ``total`` by at most the reads in progress. Each
    reader's window is capped at an equal share of the total, so many readers
    shrink each other's windows instead of growing memory.

    It also keeps up to ``max_spares`` buffers of finished chunks for the next GETs
    of the same size: a new mapping's pages must be zeroed by the kernel, which cost
    about a tenth of a sequential read's CPU. Spares exist only while some reader
    is open (the last one to leave frees them), so they add at most
    ``max_spares`` chunks to the budget, and only while reading.
    Concurrency: trio thread only; no awaits inside, so every method is atomic.
    """

    def __init__(self, total_bytes: int, min_window: int = 1 * MiB,
                 max_spares: int = 4) -> None:
        self.total = total_bytes
        self.min_window = min_window
        self.max_spares = max_spares
        self.used = 0
        self.readers = 0
        self._spares: list[mmap.mmap] = []

    def join(self) -> None:
        self.readers += 1

    def leave(self) -> None:
        self.readers -= 1
        if not self.readers:
            while self._spares:
                _unmap(self._spares.pop())

    def buffer(self, size: int) -> mmap.mmap:
        """A buffer of ``size`` bytes for a GET: a spare one if any fits, else new.
        A spare still holds the bytes of its previous chunk: the GET overwrites all
        of them or fails (and then its buffer is never read)."""
        for i, spare in enumerate(self._spares):
            if len(spare) == size:
                return self._spares.pop(i)
        return chunk_buffer(size)

    def recycle(self, buf: mmap.mmap) -> None:
        """Take back the buffer of a chunk nobody reads any more."""
        if self.readers and len(buf) >= _HUGE_PAGE and len(self._spares) < self.max_spares:
            self._spares.append(buf)
        else:
            _unmap(buf)

    def window_cap(self, wanted: int) -> int:
        """The largest read-ahead window one reader may use now."""
        share = self.total // max(1, self.readers)
        return min(wanted, max(self.min_window, share))

    def try_take(self, n: int) -> bool:
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    def take(self, n: int) -> None:
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n


def object_error(key: str, exc: Exception) -> OSError:
    """The OSError a failed GET of ``key`` becomes (EIO; the reason goes to the log)."""
    status = getattr(exc, "status", None)
    if status == 412:
        log.error("%r changed on the server while it was open; failing the read", key)
        return OSError(errno.EIO, f"{key!r} changed on the server")
    log.error("reading %r failed: %s", key, exc)
    code = errno_for(exc) if isinstance(exc, CosError) else errno.EIO
    return OSError(code, f"reading {key!r} failed")


async def fetch_range(aclient, key: str, start: int, end: int, etag: str,
                      buffer: mmap.mmap | None = None) -> mmap.mmap:
    """Bytes ``[start, end)`` of ``key`` if its ETag is still ``etag``; else
    OSError(EIO). Never returns a short or mixed answer. ``buffer`` (of exactly
    ``end - start`` bytes) receives them if given; else a new one."""
    try:
        return await aclient.call(_get_range, aclient.sync, key, start, end, etag, buffer)
    except OSError:
        raise
    except Exception as exc:
        raise object_error(key, exc) from exc


def _get_range(client, key: str, start: int, end: int, etag: str,
               buf: mmap.mmap | None) -> mmap.mmap:
    """Receive one ranged GET into a buffer of its exact size (a worker thread).
    The socket writes straight into the buffer: no piece is allocated, copied or
    joined on the way, which matters because those copies hold the interpreter
    lock the FUSE replies need.

    The buffer is an anonymous mapping, not a bytearray: malloc keeps freed
    multi-MiB blocks in per-thread arenas for reuse, so with GETs finishing on
    many worker threads the process would hold several windows' worth of freed
    memory; a mapping goes back to the system the moment the chunk is dropped."""
    if buf is None:
        buf = chunk_buffer(end - start)
    client.get_object_into(key, buf, start, if_match=etag)
    return buf


_HUGE_PAGE = 2 * MiB


def chunk_buffer(size: int) -> mmap.mmap:
    """A zeroed private anonymous mapping of ``size`` bytes.

    Private, not shared (``mmap(-1, n)``'s default): a shared mapping is backed by
    shmem, whose page faults cost several times more. Large buffers ask for
    transparent huge pages: filling 8 MiB of 4 KiB pages takes 2,048 page faults,
    most of the CPU a GET costs on loopback; a few huge pages take a handful. Where
    huge pages are off, the advice is ignored (or refused: then nothing changes)."""
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if size >= _HUGE_PAGE and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buf.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return buf


def _unmap(buf: mmap.mmap) -> None:
    try:
        buf.close()  # gives the memory back now, not when the collector gets to it
    except BufferError:
        pass  # still exported somewhere: freed with its last reference


@dataclass(eq=False)
class _Chunk:
    """One ranged GET: ``[start, end)``; ``data`` is set once ``done`` is."""

    start: int
    end: int
    budget: int  # bytes taken from the ReadBudget, 0 once given back
    ahead: bool  # started by read-ahead (not by a read that needed it)
    done: trio.Event = field(default_factory=trio.Event)
    data: mmap.mmap | None = None
    error: OSError | None = None
    dropped: bool = False
    users: int = 0  # reads holding on to ``data``: it is not recycled under them


class ObjectReader:
    """Reads one object version for one open handle.

    Invariants: ``_chunks`` is sorted by start and its ranges never overlap; every
    chunk in it either holds or is fetching exactly its range; budget taken by a
    chunk is given back exactly once (when it is dropped and done).
    Concurrency: the kernel may send several reads of one handle at once; they run
    as trio tasks and only await while waiting for a chunk, so the bookkeeping
    between awaits is atomic. GETs run as background tasks; ``close`` does not wait
    for them (they return their budget when they end).
    """

    def __init__(self, aclient, key: str, size: int, etag: str, budget: ReadBudget,
                 tuning: Tuning | None = None) -> None:
        self._client = aclient
        self.key = key
        self.size = size
        self.etag = etag
        self._budget = budget
        self._t = tuning or Tuning()
        self._chunks: list[_Chunk] = []
        self._last_end: int | None = None  # where the latest reads ended
        self._run_start = 0  # where the current sequential run began
        self._window = self._t.readahead_initial
        self._closed = False
        self.hits = 0
        self.misses = 0
        budget.join()

    async def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; fewer only at the end of the object."""
        return bytes(await self.read_view(offset, length))

    async def read_view(self, offset: int, length: int) -> bytes | memoryview:
        """Like :meth:`read`, but a read inside one chunk is a view of its buffer,
        which saves the last copy of a FUSE read reply.

        The view is only valid until the caller's next checkpoint: a dropped
        chunk's buffer is recycled and the next GET overwrites it. pyfuse3 sends
        the reply before it yields again, so ``Operations.read`` may return it.
        """
        if self._closed:
            raise OSError(errno.EBADF, "reader is closed")
        end = min(self.size, offset + length)
        if offset < 0 or offset >= end:
            return b""
        sequential = self._note_access(offset, end)
        log.debug("read %r %d+%d (%s)", self.key, offset, end - offset,
                  "sequential" if sequential else "random")
        ready = all(c.done.is_set() for c in self._overlapping(offset, end))
        if ready and self._covers(offset, end):
            self.hits += 1
        else:
            self.misses += 1
        self._fetch_gaps(offset, end, sequential)
        if sequential:
            self._read_ahead(end)
        return await self._collect(offset, end)

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        """:meth:`close` for callers that cannot await (it never blocks)."""
        if self._closed:
            return
        self._closed = True
        for chunk in self._chunks:
            self._drop(chunk)
        self._chunks = []
        self._budget.leave()

    # -- access pattern --------------------------------------------------------
    def _note_access(self, offset: int, end: int) -> bool:
        """Record a read; True when it continues the previous ones."""
        slack = self._t.sequential_slack
        last = self._last_end
        sequential = last is not None and (
            last - slack <= offset <= last + slack
            or any(c.ahead for c in self._overlapping(offset, offset + 1)))
        if sequential:
            assert last is not None
            self._last_end = max(last, end)
            # Bytes well behind the reader will not be asked for again.
            self._forget(lambda c: c.end <= offset - slack)
            # Read ahead twice what the run has read so far (as the kernel does):
            # a reader that stops early wastes little, a long run soon reaches the cap.
            run = self._last_end - self._run_start
            if run <= 4 * self._t.kernel_readahead:
                # The kernel reads this far ahead by itself (its synchronous and
                # asynchronous windows of the mount's read-ahead, growing): more
                # from us is wasted on a reader that stops early (a header, a `file`
                # probe), and a long run soon gets its window.
                self._window = 0
            else:
                self._window = min(max(self._t.readahead_initial, 2 * run),
                                   self._window_cap())
        else:
            self._last_end = end
            self._run_start = offset
            self._window = self._t.readahead_initial
            self._forget(lambda c: c.end <= offset or c.start >= end)
        return sequential

    def _window_cap(self) -> int:
        return self._budget.window_cap(self._t.readahead_max)

    # -- chunks ----------------------------------------------------------------
    def _overlapping(self, start: int, end: int) -> list[_Chunk]:
        return [c for c in self._chunks if c.start < end and c.end > start]

    def _covers(self, start: int, end: int) -> bool:
        pos = start
        for c in self._overlapping(start, end):
            if c.start > pos:
                return False
            pos = c.end
        return pos >= end

    def _gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        gaps, pos = [], start
        for c in self._overlapping(start, end):
            if c.start > pos:
                gaps.append((pos, c.start))
            pos = max(pos, c.end)
        if pos < end:
            gaps.append((pos, end))
        return gaps

    def _next_start(self, pos: int) -> int:
        """Where the first chunk at or after ``pos`` begins (the size if none)."""
        return min((c.start for c in self._chunks if c.start >= pos), default=self.size)

    def _fetch_gaps(self, start: int, end: int, sequential: bool) -> None:
        """Start GETs for the parts of ``[start, end)`` no chunk covers. Each is at
        least ``read_min_fetch`` long (the whole object when that is small); in a
        sequential run, a piece of the window when the budget allows."""
        small_object = self.size <= self._t.readahead_initial
        for gap_start, gap_end in self._gaps(start, end):
            limit = min(self._next_start(gap_end), self.size)
            stop = limit if small_object else min(
                max(gap_end, gap_start + self._t.read_min_fetch), limit)
            if sequential:
                longer = min(gap_start + min(self._t.read_chunk, self._window), limit)
                if longer > stop and self._budget.try_take(longer - gap_start):
                    self._start(_Chunk(gap_start, longer, longer - gap_start, ahead=True))
                    continue
            self._budget.take(stop - gap_start)  # needed now: taken even over budget
            self._start(_Chunk(gap_start, stop, stop - gap_start, ahead=sequential))

    def _read_ahead(self, pos: int) -> None:
        """Keep ``_window`` bytes past ``pos`` fetched or in flight."""
        self._window = min(self._window, self._window_cap())
        frontier = pos
        for c in self._chunks:  # skip what is already covered
            if c.start <= frontier < c.end:
                frontier = c.end
        in_flight = sum(1 for c in self._chunks if not c.done.is_set())
        while (frontier < self.size and frontier - pos < self._window
               and in_flight < self._t.read_concurrency):
            stop = min(frontier + min(self._t.read_chunk, self._window),
                       self._next_start(frontier), self.size)
            if not self._budget.try_take(stop - frontier):
                break
            self._start(_Chunk(frontier, stop, stop - frontier, ahead=True))
            in_flight += 1
            frontier = stop
            for c in self._chunks:
                if c.start <= frontier < c.end:
                    frontier = c.end

    def _start(self, chunk: _Chunk) -> None:
        i = 0
        while i < len(self._chunks) and self._chunks[i].start < chunk.start:
            i += 1
        self._chunks.insert(i, chunk)
        log.debug("GET %r %d+%d (%s)", self.key, chunk.start, chunk.end - chunk.start,
                  "read-ahead" if chunk.ahead else "needed")
        _fetches.spawn(self._fetch, chunk)

    async def _fetch(self, chunk: _Chunk) -> None:
        try:
            buf = self._budget.buffer(chunk.end - chunk.start)
            chunk.data = await fetch_range(self._client, self.key, chunk.start, chunk.end,
                                           self.etag, buf)
        except OSError as exc:
            chunk.error = exc
        except Exception as exc:
            chunk.error = object_error(self.key, exc)
        finally:
            chunk.done.set()
            if chunk.dropped:
                self._give_back(chunk)

    def _forget(self, stale) -> None:
        keep = []
        for c in self._chunks:
            if stale(c):
                self._drop(c)
            else:
                keep.append(c)
        self._chunks = keep

    def _drop(self, chunk: _Chunk) -> None:
        """Stop tracking ``chunk``; its memory goes once no read holds it."""
        chunk.dropped = True
        if chunk.done.is_set():
            self._give_back(chunk)

    def _give_back(self, chunk: _Chunk) -> None:
        self._budget.give(chunk.budget)
        chunk.budget = 0
        self._release_data(chunk)

    def _release_data(self, chunk: _Chunk) -> None:
        """Recycle the buffer of a chunk that is dropped, done and read by nobody."""
        if chunk.dropped and chunk.users == 0 and chunk.data is not None \
                and chunk.done.is_set():
            data, chunk.data = chunk.data, None
            self._budget.recycle(data)

    async def _collect(self, start: int, end: int) -> bytes | memoryview:
        """Wait for the chunks covering ``[start, end)``: a view of one chunk's
        buffer (see :meth:`read_view`), or the pieces of several joined."""
        pieces: list[memoryview] = []
        pos = start
        chunks = self._overlapping(start, end)
        for chunk in chunks:
            chunk.users += 1  # dropped meanwhile, its buffer still waits for us
        try:
            for chunk in chunks:
                await chunk.done.wait()
                if chunk.error is not None:
                    if chunk in self._chunks:
                        self._chunks.remove(chunk)
                        self._drop(chunk)  # a later read tries again
                    raise chunk.error
                assert chunk.data is not None and chunk.start <= pos
                stop = min(end, chunk.end)
                pieces.append(memoryview(chunk.data)[pos - chunk.start:stop - chunk.start])
                pos = stop
        finally:
            for chunk in chunks:
                chunk.users -= 1
                self._release_data(chunk)
        assert pos == end, "chunks must cover the read"
        # Nearly every read lies in one chunk: its slice is the answer, no join.
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)
