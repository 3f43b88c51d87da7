"""Byte ranges: the ``Range`` header of GET/HEAD and ``x-cos-copy-source-range``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import CosServerError

_SINGLE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start..end`` of an object, both inclusive; always ``start <= end``."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def _unsatisfiable(size: int) -> CosServerError:
    return CosServerError("InvalidRange", "The requested range is not satisfiable",
                          headers={"Content-Range": f"bytes */{size}"})


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range a GET should serve of an object of ``size`` bytes.

    ``None`` means the whole object: no header, or one that is syntactically invalid
    or asks for several ranges (RFC 7233 lets a server ignore those; COS serves single
    ranges only). Raises ``InvalidRange`` (416) when the range starts at or beyond the
    end, and for a zero-length suffix.
    """
    if not header:
        return None
    match = _SINGLE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # bytes=-N: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    end = min(int(last), size - 1) if last else size - 1
    return ByteRange(start, end)


def parse_copy_range(header: str, size: int) -> ByteRange:
    """``x-cos-copy-source-range: bytes=a-b`` (both ends required, inclusive) of a
    source of ``size`` bytes; anything else is ``InvalidArgument``."""
    match = _SINGLE.match(header.strip())
    if match is None or not match.group(1) or not match.group(2):
        raise CosServerError("InvalidArgument",
                             f"x-cos-copy-source-range must be bytes=first-last, got {header!r}")
    start, end = int(match.group(1)), int(match.group(2))
    if start > end or end >= size:
        raise CosServerError("InvalidArgument",
                             f"The range {header!r} is not valid for a source of {size} bytes")
    return ByteRange(start, end)
