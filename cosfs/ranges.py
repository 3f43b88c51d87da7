"""Pure bookkeeping of byte ranges: range sets, the dirty map of a staged file, and
the part layout of multipart uploads. No I/O here, so all of it is unit-tested alone.

Ranges are half-open ``[start, end)`` pairs of ints throughout.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

INFINITY = 1 << 63


class RangeSet:
    """A set of byte offsets stored as sorted, disjoint, non-adjacent ranges.

    Invariant: ``_starts`` and ``_ends`` have equal length, are strictly
    increasing, and ``_ends[i] < _starts[i + 1]`` (touching ranges are merged).
    Not thread-safe; the owner serialises access (everything runs on one trio loop).
    """

    __slots__ = ("_starts", "_ends")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    def copy(self) -> RangeSet:
        new = RangeSet()
        new._starts = list(self._starts)
        new._ends = list(self._ends)
        return new

    @property
    def total(self) -> int:
        """Number of offsets in the set."""
        return sum(e - s for s, e in self)

    @property
    def first(self) -> int | None:
        return self._starts[0] if self._starts else None

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        # Every range that overlaps or touches [start, end) merges with it.
        lo = bisect_left(self._ends, start)
        hi = bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def remove(self, start: int, end: int) -> None:
        if start >= end:
            return
        lo = bisect_right(self._ends, start)
        hi = bisect_left(self._starts, end)
        if lo >= hi:
            return
        keep_s: list[int] = []
        keep_e: list[int] = []
        if self._starts[lo] < start:
            keep_s.append(self._starts[lo])
            keep_e.append(start)
        if self._ends[hi - 1] > end:
            keep_s.append(end)
            keep_e.append(self._ends[hi - 1])
        self._starts[lo:hi] = keep_s
        self._ends[lo:hi] = keep_e

    def truncate(self, size: int) -> None:
        """Drop every offset at or beyond ``size``."""
        self.remove(size, INFINITY)

    def overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of the set inside ``[start, end)``."""
        if start >= end:
            return []
        lo = bisect_right(self._ends, start)
        hi = bisect_left(self._starts, end)
        return [(max(s, start), min(e, end))
                for s, e in zip(self._starts[lo:hi], self._ends[lo:hi], strict=True)]

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` not in the set."""
        gaps = []
        pos = start
        for s, e in self.overlapping(start, end):
            if s > pos:
                gaps.append((pos, s))
            pos = e
        if pos < end:
            gaps.append((pos, end))
        return gaps

    def covers(self, start: int, end: int) -> bool:
        if start >= end:
            return True
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def intersects(self, start: int, end: int) -> bool:
        return bool(self.overlapping(start, end))

    def count(self, start: int, end: int) -> int:
        """How many offsets of ``[start, end)`` are in the set."""
        return sum(e - s for s, e in self.overlapping(start, end))


class DirtyMap:
    """Which bytes of a staged file differ from its base object, and its size.

    Invariant: every offset below ``size`` that is not in ``dirty`` holds the base
    object's byte at the same offset (so it lies below ``base_size``). Growing the
    file (a write past the end, a truncate up) therefore marks the new bytes dirty,
    and shrinking it forgets dirty bytes past the new end. The writer applies every
    change here as it happens, and crash recovery replays the same calls from the
    extent log, so both reach the same state.
    """

    __slots__ = ("base_size", "size", "dirty")

    def __init__(self, base_size: int, size: int | None = None) -> None:
        self.base_size = base_size
        self.size = base_size
        self.dirty = RangeSet()
        if size is not None:
            self.truncate(size)

    def write(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        if offset > self.size:
            self.dirty.add(self.size, offset)  # the hole reads as zeros
        self.dirty.add(offset, offset + length)
        self.size = max(self.size, offset + length)

    def truncate(self, size: int) -> None:
        if size < self.size:
            self.dirty.truncate(size)
        else:
            self.dirty.add(self.size, size)
        self.size = size

    @property
    def changed(self) -> bool:
        return bool(self.dirty) or self.size != self.base_size

    @property
    def append_only(self) -> bool:
        """True when the only change is new bytes after the old end."""
        first = self.dirty.first
        return self.size > self.base_size and first is not None and first >= self.base_size


class PartLayout:
    """Where each part of a multipart upload starts and ends, independent of the
    final size (so parts can go up while the file still grows).

    Parts are numbered from 1. Tier ``k`` (``k = 0, 1, ...``) holds ``per_tier``
    parts of ``min(first_size * 2**k, max_part_size)`` bytes; the last tier runs
    to part ``max_parts``. Immutable.
    """

    def __init__(self, first_size: int, per_tier: int = 1000,
                 max_part_size: int = 5 << 30, max_parts: int = 10_000) -> None:
        if first_size <= 0 or per_tier <= 0:
            raise ValueError("part sizes and tier length must be positive")
        self.max_parts = max_parts
        # (first part number, first offset, part size) of each tier.
        self._tiers: list[tuple[int, int, int]] = []
        number, offset, size = 1, 0, first_size
        while number <= max_parts:
            size = min(size, max_part_size)
            self._tiers.append((number, offset, size))
            count = min(per_tier, max_parts - number + 1)
            number += count
            offset += count * size
            size *= 2
        self.max_size = offset
        self._numbers = [t[0] for t in self._tiers]
        self._offsets = [t[1] for t in self._tiers]

    def bounds(self, n: int) -> tuple[int, int]:
        """``[start, end)`` of part ``n`` in a file large enough to hold it."""
        if not 1 <= n <= self.max_parts:
            raise ValueError(f"part number {n} out of range")
        first, offset, size = self._tiers[bisect_right(self._numbers, n) - 1]
        start = offset + (n - first) * size
        return start, start + size

    def index(self, offset: int) -> int:
        """Number of the part holding byte ``offset``."""
        if not 0 <= offset < self.max_size:
            raise ValueError(f"offset {offset} beyond the largest multipart object")
        first, start, size = self._tiers[bisect_right(self._offsets, offset) - 1]
        return first + (offset - start) // size

    def parts(self, size: int) -> list[tuple[int, int, int]]:
        """``(number, start, end)`` of every part of a ``size``-byte object; the last
        one is cut at ``size``."""
        if size <= 0:
            return []
        plan = []
        for n in range(1, self.index(size - 1) + 1):
            start, end = self.bounds(n)
            plan.append((n, start, min(end, size)))
        return plan

    def numbers_touching(self, start: int, end: int) -> range:
        """Numbers of the parts that hold any byte of ``[start, end)``."""
        if start >= end:
            return range(0)
        last = min(end, self.max_size) - 1
        return range(self.index(min(start, last)), self.index(last) + 1)
