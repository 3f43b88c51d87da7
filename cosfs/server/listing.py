"""The List Objects algorithm (prefix, delimiter, exclusive marker, max-keys counting
keys and common prefixes), independent of the storage it walks. Keys are ``bytes`` in
UTF-8, compared bytewise: the listing order of COS."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Keyed(Protocol):
    key: bytes


# fetch(start, inclusive, stop, limit): up to `limit` entries with start < key (or
# start <= key when inclusive) and key < stop (no bound when stop is None), in order.
Fetch = Callable[[bytes, bool, "bytes | None", int], Sequence[Keyed]]


@dataclass
class ListResult:
    """One page. ``next_marker`` is the last key or common prefix returned, set
    whenever the page is truncated."""

    contents: list = field(default_factory=list)
    common_prefixes: list[bytes] = field(default_factory=list)
    is_truncated: bool = False
    next_marker: bytes | None = None


def successor(prefix: bytes) -> bytes | None:
    """The smallest byte string above every string starting with ``prefix``; ``None``
    when there is none (empty prefix, or all 0xFF)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class _Page:
    """Accumulates one page; ``add`` says whether there was room."""

    def __init__(self, max_keys: int) -> None:
        self.result = ListResult()
        self.room = max_keys
        self.last: bytes | None = None

    def add(self, entry: Keyed | None, prefix: bytes | None) -> bool:
        if self.room == 0:
            self.result.is_truncated = True
            self.result.next_marker = self.last
            return False
        self.room -= 1
        if entry is not None:
            self.result.contents.append(entry)
            self.last = entry.key
        else:
            self.result.common_prefixes.append(prefix)
            self.last = prefix
        return True


_FIRST_BATCH = 16


def list_page(fetch: Fetch, prefix: bytes = b"", delimiter: bytes = b"", marker: bytes = b"",
              max_keys: int = 1000) -> ListResult:
    """One page of List Objects over the entries ``fetch`` yields."""
    if max_keys <= 0:
        return ListResult()
    page = _Page(max_keys)
    stop = successor(prefix) if prefix else None
    cursor, inclusive = (marker, False) if marker >= prefix else (prefix, True)
    # Rows to fetch next: few after a common prefix, whose first row may start
    # another one (a folder of many subfolders would otherwise read a page of rows
    # for each of them and use one), doubling while keys follow each other.
    batch = _FIRST_BATCH
    while True:
        want = min(page.room + 1, batch)
        entries = fetch(cursor, inclusive, stop, want)
        jumped = False
        for entry in entries:
            rest = entry.key[len(prefix):]
            cut = rest.find(delimiter) if delimiter else -1
            if cut < 0:
                if not page.add(entry, None):
                    return page.result
                cursor, inclusive = entry.key, False
                continue
            common = prefix + rest[: cut + len(delimiter)]
            # A prefix at or below the marker was returned by an earlier page.
            if common > marker and not page.add(None, common):
                return page.result
            after = successor(common)
            if after is None:
                return page.result
            cursor, inclusive, jumped = after, True, True
            break
        if jumped:
            batch = _FIRST_BATCH
            continue
        if len(entries) < want:
            return page.result
        batch *= 2
