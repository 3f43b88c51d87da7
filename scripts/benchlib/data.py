"""Test data: a large file whose every byte is known without storing a copy, and a
folder of small files for rsync."""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path

MiB = 1 << 20


class Pattern:
    """Block ``i`` (1 MiB) is the 8-byte block number followed by one random MiB.

    A mount that returns the right number of bytes in the wrong order, or stale or
    zeroed data, fails :meth:`check` at the next block boundary, at no real cost."""

    def __init__(self, seed: int) -> None:
        self.noise = random.Random(seed).randbytes(MiB)

    def block(self, i: int) -> bytes:
        return struct.pack("<Q", i) + self.noise[8:]

    def expected(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            i, within = divmod(offset, MiB)
            take = min(length, MiB - within)
            # Slice the header and the noise separately: building a whole block per
            # probe would copy a MiB for every 16 bytes checked.
            head = struct.pack("<Q", i)[within:within + take] if within < 8 else b""
            out += head + self.noise[within + len(head):within + take]
            offset += take
            length -= take
        return bytes(out)

    def write_file(self, path: Path, size: int) -> None:
        with open(path, "wb") as f:
            for i in range(size // MiB):
                f.write(self.block(i))
            if size % MiB:
                f.write(self.block(size // MiB)[:size % MiB])

    def check(self, data: memoryview, offset: int) -> None:
        """Check ``data`` read at ``offset``: the 16 bytes at each block boundary in it,
        and 8 bytes in its middle. Raises ValueError on a mismatch."""
        first = -(-offset // MiB) * MiB
        probes = list(range(first, offset + len(data), MiB))
        probes.append(offset + len(data) // 2)
        for at in probes:
            n = min(16, offset + len(data) - at)
            if n > 0 and bytes(data[at - offset:at - offset + n]) != self.expected(at, n):
                raise ValueError(f"wrong data at offset {at}")


def build_rsync_source(dest: Path, count: int, max_size: int = 256 << 10,
                       donor: Path = Path("/usr/share/doc")) -> dict[str, int]:
    """About ``count`` small regular files: a copy of the donor tree (regular files
    only: symlinks would fail on mounts without symlink support and are not what is
    measured), topped up with generated files. Returns relative path -> size."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    files: dict[str, int] = {}
    for root, dirs, names in os.walk(donor):
        dirs.sort()
        for name in sorted(names):
            if len(files) >= count:
                return files
            src = Path(root, name)
            if src.is_symlink() or not src.is_file() or src.stat().st_size > max_size:
                continue
            rel = str(src.relative_to(donor))
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
            files[rel] = src.stat().st_size
    _top_up(dest, files, count)
    return files


def _top_up(dest: Path, files: dict[str, int], count: int) -> None:
    rng = random.Random(7)
    while len(files) < count:
        n = len(files)
        rel = f"generated/d{n // 100:03d}/f{n:05d}.txt"
        size = rng.randint(512, 8192)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(rng.randbytes(size))
        files[rel] = size
