"""Request bodies that can be sent again on every retry.

A body is ``bytes``, a readable seekable binary file (rewound to where it stood
when the call began), or a callable returning a fresh body (bytes, a file, or an
iterable of bytes) per attempt. Files are streamed, never read into memory; an
iterable is spooled to a temporary file first because COS needs a Content-Length.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

BodySource = bytes | bytearray | memoryview | BinaryIO | Callable[[], Any]

SPOOL_IN_MEMORY = 8 << 20


class Payload:
    """One request body, re-openable per attempt.

    Invariant: every :meth:`open` yields the same bytes (for a callable: whatever
    it returns, which the caller promises is the same). Not thread-safe: one call
    owns its payload.
    """

    def __init__(self, source: BodySource) -> None:
        if isinstance(source, bytes | bytearray | memoryview):
            self._bytes: bytes | None = bytes(source)
            self._file: BinaryIO | None = None
            self._factory: Callable[[], Any] | None = None
        elif _is_seekable_file(source):
            self._bytes, self._file, self._factory = None, source, None  # type: ignore[assignment]
            self._start = source.tell()  # type: ignore[union-attr]
        elif callable(source):
            self._bytes, self._file, self._factory = None, None, source
        else:
            raise TypeError(
                "body must be bytes, a seekable binary file, or a callable returning a "
                f"fresh body per attempt, not {type(source).__name__}"
            )

    last_length = 0  # the length of the body the latest open() yielded

    @property
    def in_memory(self) -> bytes | None:
        """The body when it is plain bytes (then digests are cheap), else None."""
        return self._bytes

    @functools.cached_property
    def content_md5(self) -> str | None:
        """Base64 MD5 of an in-memory body (computed once, sent on every attempt)."""
        if self._bytes is None:
            return None
        return base64.b64encode(hashlib.md5(self._bytes).digest()).decode()

    @contextlib.contextmanager
    def open(self) -> Iterator[tuple[bytes | BinaryIO, int]]:
        """Yield ``(data, length)`` for one attempt; ``data`` is bytes or a file
        positioned at the start of the body."""
        if self._bytes is not None:
            self.last_length = len(self._bytes)
            yield self._bytes, self.last_length
        elif self._file is not None:
            self.last_length = _rewind(self._file, self._start)
            yield self._file, self.last_length
        else:
            assert self._factory is not None
            with _fresh(self._factory()) as (data, length):
                self.last_length = length
                yield data, length


def _is_seekable_file(obj: Any) -> bool:
    return hasattr(obj, "read") and hasattr(obj, "seek") and hasattr(obj, "tell")


def _rewind(f: BinaryIO, start: int) -> int:
    """Seek ``f`` to ``start`` and return the number of bytes from there to its end."""
    end = f.seek(0, io.SEEK_END)
    f.seek(start)
    return max(0, end - start)


@contextlib.contextmanager
def _fresh(produced: Any) -> Iterator[tuple[bytes | BinaryIO, int]]:
    """Turn what a body factory returned into ``(data, length)``; close it after."""
    if isinstance(produced, bytes | bytearray | memoryview):
        data = bytes(produced)
        yield data, len(data)
    elif _is_seekable_file(produced):
        with contextlib.closing(produced):
            yield produced, _rewind(produced, produced.tell())
    elif isinstance(produced, Iterable) and not isinstance(produced, str):
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
            for chunk in produced:
                spool.write(chunk)
            yield spool, _rewind(spool, 0)  # type: ignore[misc]
    else:
        raise TypeError(f"a body factory returned {type(produced).__name__}")


class FileSlice(io.RawIOBase):
    """A read-only, seekable window ``[offset, offset+length)`` of an open file
    descriptor, read with ``os.pread`` so it never moves the descriptor's own offset.

    Several slices of one descriptor may be read by different threads at once (a
    multipart upload of a staging file). The descriptor stays owned by the caller
    and must stay open while the slice is in use.

    With ``zero_fill`` the window may reach past the file's end (or the file may be
    cut while the slice is sent) and those bytes read as zeros, so the body always
    has the length announced; otherwise such a window is refused up front.
    """

    def __init__(self, fd: int, offset: int, length: int, *, zero_fill: bool = False) -> None:
        super().__init__()
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        # A window past the end would promise a Content-Length the body cannot fill.
        if not zero_fill and offset + length > os.fstat(fd).st_size:
            raise ValueError(f"slice [{offset}, {offset + length}) ends past the file's end")
        self._fd, self._offset, self._length, self._pos = fd, offset, length, 0
        self._zero_fill = zero_fill

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._length - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._offset + self._pos)
        if not data and self._zero_fill:
            data = bytes(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def __len__(self) -> int:
        return self._length

    def window(self) -> tuple[int, int, int]:
        """(descriptor, file offset, byte count) of what is left to read: what
        ``sendfile`` needs to send it from the page cache without a copy through
        Python."""
        return self._fd, self._offset + self._pos, self._length - self._pos
