"""Blob files: the bytes of objects and upload parts, one file each, named by a random
id under ``<root>/blobs/<2 hex>/``. A blob is written as a temp file under
``<root>/tmp/`` and renamed into place, so a blob file is complete once it has its
name; what it belongs to is recorded in the metadata database (``store.py``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

CHUNK = 1 << 20  # bytes per read/write when data passes through Python


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

    def link(self, blob: str) -> str:
        """A new name for the same bytes (hard link): how a copy of an immutable blob
        costs nothing. Falls back to a byte copy where links are not possible."""
        new = uuid.uuid4().hex
        try:
            os.link(self.path(blob), self.path(new))
        except OSError:
            shutil.copyfile(self.path(blob), self.path(new))
        return new

    def remove(self, blob: str) -> None:
        try:
            os.unlink(self.path(blob))
        except FileNotFoundError:
            pass

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

    def copy_from(self, src_fd: int, offset: int, count: int) -> None:
        """Append ``count`` bytes of ``src_fd`` from ``offset``; in the kernel when no
        MD5 is wanted, through Python otherwise."""
        assert self._fd is not None
        if self._md5 is None:
            start = os.lseek(self._fd, 0, os.SEEK_CUR)
            try:
                self._kernel_copy(src_fd, offset, count)
                return
            except OSError:  # e.g. no copy_file_range here: start over by hand
                os.lseek(self._fd, start, os.SEEK_SET)
                os.ftruncate(self._fd, start)
        end = offset + count
        while offset < end:
            data = os.pread(src_fd, min(CHUNK, end - offset), offset)
            if not data:
                raise OSError(f"blob shorter than recorded ({offset} < {end})")
            self.write(data)
            offset += len(data)

    def _kernel_copy(self, src_fd: int, offset: int, count: int) -> None:
        done = 0
        while done < count:
            n = os.copy_file_range(src_fd, self._fd, count - done, offset + done)
            if n == 0:
                raise OSError("source blob ended early")
            done += n
        self.size += count

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
