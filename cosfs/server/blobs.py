"""Blob files: the bytes of objects and upload parts, one file each, named by a random
id under ``<root>/blobs/<2 hex>/``. A blob is written as a temp file under
``<root>/tmp/`` and renamed into place, so a blob file is complete once it has its
name; what it belongs to is recorded in the metadata database (``store.py``).

The database names an object's bytes by a *reference*: one blob id, or, for a
completed multipart upload, ``id:size,id:size,...``, its parts in order. Completing
an upload keeps the parts as they are instead of copying them into one file, so it
costs no I/O however large the object (COS too answers it in about constant time).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20  # bytes per read/write when data passes through Python


def segments(ref: str) -> list[tuple[str, int | None]]:
    """The blob ids of a reference with their sizes (``None``: the only blob, as long
    as its object)."""
    if ":" not in ref:
        return [(ref, None)]
    out: list[tuple[str, int | None]] = []
    for item in ref.split(","):
        blob, size = item.split(":")
        out.append((blob, int(size)))
    return out


def join_segments(parts: list[tuple[str, int]]) -> str:
    """The reference of an object made of ``parts`` (blob id, size), in order."""
    return ",".join(f"{blob}:{size}" for blob, size in parts)


class BlobDir:
    """The blob tree of one server root. Stateless apart from its paths: safe to use
    from any thread."""

    def __init__(self, root: Path) -> None:
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        for n in range(256):
            (self.blobs / f"{n:02x}").mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)

    def path(self, blob: str) -> Path:
        return self.blobs / blob[:2] / blob

    def writer(self, md5: bool = False) -> BlobWriter:
        return BlobWriter(self, md5)

    def link(self, ref: str) -> str:
        """A new reference to the same bytes (hard links): how a copy of immutable
        blobs costs nothing. Falls back to a byte copy where links are not possible."""
        if ":" not in ref:
            return self._link(ref)
        return join_segments([(self._link(blob), size or 0) for blob, size in segments(ref)])

    def _link(self, blob: str) -> str:
        new = uuid.uuid4().hex
        try:
            os.link(self.path(blob), self.path(new))
        except OSError:
            shutil.copyfile(self.path(blob), self.path(new))
        return new

    def remove(self, ref: str) -> None:
        for blob, _ in segments(ref):
            try:
                os.unlink(self.path(blob))
            except FileNotFoundError:
                pass

    def reader(self, ref: str, size: int, on_close: Callable[[], None]) -> BlobReader:
        return BlobReader(self, ref, size, on_close)

    def sweep(self, referenced: set[str]) -> int:
        """Delete temp files and blobs nobody references (left by a crash between
        writing a blob and recording it); returns how many blobs went."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(exist_ok=True)
        removed = 0
        for sub in self.blobs.iterdir():
            for entry in os.scandir(sub):
                if entry.name not in referenced:
                    os.unlink(entry.path)
                    removed += 1
        return removed


class BlobWriter:
    """A blob being written. ``commit()`` renames it into the blob tree and returns its
    id; ``discard()`` removes it. Owned by one thread."""

    def __init__(self, blobs: BlobDir, md5: bool) -> None:
        self._blobs = blobs
        self.id = uuid.uuid4().hex
        self._tmp = blobs.tmp / self.id
        self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._md5 = hashlib.md5() if md5 else None
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self._md5 is not None:
            self._md5.update(data)
        self.size += len(data)

    def copy_from(self, src: BinaryIO, offset: int, count: int) -> None:
        """Append ``count`` bytes of ``src`` from ``offset`` (through Python: the MD5
        of a copied part is wanted anyway)."""
        end = offset + count
        while offset < end:
            data = os.pread(src.fileno(), min(CHUNK, end - offset), offset)
            if not data:
                raise OSError(f"blob shorter than recorded ({offset} < {end})")
            self.write(data)
            offset += len(data)

    @property
    def md5_hex(self) -> str:
        assert self._md5 is not None
        return self._md5.hexdigest()

    def commit(self) -> str:
        self._close()
        os.rename(self._tmp, self._blobs.path(self.id))
        return self.id

    def discard(self) -> None:
        self._close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class BlobReader:
    """The bytes of one object for one reader: its blob files in order, each opened
    when a read first needs it (a ranged GET of a large multipart object opens one or
    two parts, not all). The store keeps the blobs from being unlinked until
    ``close()``, which calls ``on_close``. Owned by one thread."""

    def __init__(self, blobs: BlobDir, ref: str, size: int,
                 on_close: Callable[[], None]) -> None:
        self._blobs = blobs
        self._segments = segments(ref)
        self._size = size
        self._files: dict[int, BinaryIO] = {}
        self._on_close: Callable[[], None] | None = on_close

    def pieces(self, offset: int, length: int) -> Iterator[tuple[BinaryIO, int, int]]:
        """(file, offset in it, count) that together hold ``length`` bytes of the
        object from ``offset``, in order."""
        for index, (blob, size) in enumerate(self._segments):
            if length <= 0:
                return
            size = self._size if size is None else size
            if offset >= size:
                offset -= size
                continue
            count = min(length, size - offset)
            yield self._file(index, blob), offset, count
            length -= count
            offset = 0

    def _file(self, index: int, blob: str) -> BinaryIO:
        if index not in self._files:
            self._files[index] = open(self._blobs.path(blob), "rb", buffering=0)  # noqa: SIM115
        return self._files[index]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()
