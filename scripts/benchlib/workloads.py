"""The workloads. Each one prepares its objects on the server directly (never through a
mount), runs against a freshly started mount, and times writes until the server has
them, so a mount that uploads after close() is not credited for returning early."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import raw
from .data import Pattern, build_rsync_source
from .mounts import Mount
from .store import Store

MiB = 1 << 20
MB = 1e6  # throughput is reported in decimal MB/s, as dd and the peers' docs do
SRC_KEY = "src/big.bin"


@dataclass
class Sizes:
    size_mb: int
    small_files: int
    small_kb: int
    ls_files: int
    tree_fanout: int
    rsync_files: int
    streams: int
    timeout: float

    @property
    def size(self) -> int:
        return self.size_mb * MiB


@dataclass
class Ctx:
    """Everything a workload may use, shared by the whole bench run."""

    store: Store
    endpoint: raw.Endpoint
    sizes: Sizes
    workdir: Path
    pattern: Pattern
    big_local: Path = field(init=False)
    rsync_src: Path = field(init=False)
    rsync_files: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.big_local = self.workdir / "big.bin"
        self.rsync_src = self.workdir / "rsync-src"


class Session:
    """The live mount of one run; ``remount`` gives a cold one mid-workload."""

    def __init__(self, mount: Mount, remount: Callable[[], None]) -> None:
        self.mount = mount
        self._remount = remount
        self.notes: list[str] = []

    @property
    def path(self) -> Path:
        return self.mount.path

    def remount(self) -> None:
        self._remount()


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool


class Workload:
    name = ""
    needs_mount = True
    metrics: tuple[Metric, ...] = ()

    def setup(self, ctx: Ctx) -> None:
        """Once per bench run, before any mount: shared objects and local files."""

    def prepare(self, ctx: Ctx, tag: str) -> object:
        """Before each run's mount starts (``tag`` is unique per mount and repeat)."""
        return None

    def warm_server(self, ctx: Ctx, state: object) -> None:
        """After the page cache is dropped, before the mount starts: let the server
        serve what will be read from memory, as for every mount and for the raw
        ceiling (its disk is not what is measured). No mount sees these bytes."""

    def run(self, ctx: Ctx, session: Session | None, tag: str, state: object
            ) -> dict[str, float]:
        raise NotImplementedError

    def cleanup(self, ctx: Ctx, tag: str, state: object) -> None:
        """After the mount is stopped: delete what the run left on the server."""


def _ensure_big_object(ctx: Ctx) -> None:
    size = ctx.sizes.size
    if not ctx.big_local.exists() or ctx.big_local.stat().st_size != size:
        ctx.pattern.write_file(ctx.big_local, size)
    if ctx.store.size(SRC_KEY) != size:
        ctx.store.put_file(SRC_KEY, ctx.big_local)


class Raw(Workload):
    """The ceilings: GETs and a multipart PUT straight from and to the server, no
    mount in between, each stream a process of its own."""

    name = "raw"
    needs_mount = False

    def __init__(self, streams: int) -> None:
        self.metrics = (
            Metric("raw_1", "raw GET, 1 stream", "MB/s", True),
            Metric("raw_n", f"raw GET, {streams} streams", "MB/s", True),
            Metric("raw_put", f"raw multipart PUT, {streams} streams", "MB/s", True))

    def setup(self, ctx: Ctx) -> None:
        _ensure_big_object(ctx)

    def warm_server(self, ctx: Ctx, state: object) -> None:
        ctx.store.drain_range(SRC_KEY, 0, ctx.sizes.size - 1)
        _warm(ctx.big_local)

    def run(self, ctx: Ctx, session: Session | None, tag: str, state: object
            ) -> dict[str, float]:
        size, streams = ctx.sizes.size, ctx.sizes.streams
        one = raw.get_ranges(ctx.endpoint, SRC_KEY, size, 1)
        many = raw.get_ranges(ctx.endpoint, SRC_KEY, size, streams)
        put_key = f"rawput/{tag}.bin"
        try:
            put = raw.put_multipart(ctx.endpoint, put_key, ctx.big_local, streams)
            if ctx.store.size(put_key) != size:
                raise RuntimeError("the raw multipart upload has the wrong size")
        finally:
            ctx.store.delete_prefix(put_key)
        return {"raw_1": size / MB / one, "raw_n": size / MB / many,
                "raw_put": size / MB / put}


class SeqRead(Workload):
    name = "seq_read"
    metrics = (Metric("seq_read", "sequential read, cold", "MB/s", True),
               Metric("ttfb", "time to first byte", "s", False))

    def setup(self, ctx: Ctx) -> None:
        _ensure_big_object(ctx)

    def prepare(self, ctx: Ctx, tag: str) -> object:
        key = f"read/{tag}.bin"  # a fresh key: nothing anywhere has it cached
        ctx.store.copy(SRC_KEY, key)
        return key

    def warm_server(self, ctx: Ctx, state: object) -> None:
        ctx.store.drain_range(str(state), 0, ctx.sizes.size - 1)

    def run(self, ctx: Ctx, session: Session | None, tag: str, state: object
            ) -> dict[str, float]:
        assert session is not None and isinstance(state, str)
        size = ctx.sizes.size
        buf = bytearray(MiB)
        view = memoryview(buf)
        t0 = time.monotonic()
        with open(session.path / state, "rb", buffering=0) as f:
            n = f.readinto(view[:4096])
            ttfb = time.monotonic() - t0
            offset = 0
            while n:
                ctx.pattern.check(view[:n], offset)
                offset += n
                n = f.readinto(view)
        elapsed = time.monotonic() - t0
        if offset != size:
            raise RuntimeError(f"read {offset} bytes, expected {size}")
        return {"seq_read": size / MB / elapsed, "ttfb": ttfb}

    def cleanup(self, ctx: Ctx, tag: str, state: object) -> None:
        ctx.store.delete_prefix(str(state))


class SeqWrite(Workload):
    name = "seq_write"
    metrics = (Metric("seq_write", "sequential write, until on server", "MB/s", True),
               Metric("write_close", "  of which close() returned after", "s", False))

    def setup(self, ctx: Ctx) -> None:
        _ensure_big_object(ctx)

    def run(self, ctx: Ctx, session: Session | None, tag: str, state: object
            ) -> dict[str, float]:
        assert session is not None
        size, key = ctx.sizes.size, f"seqw-{tag}.bin"
        _warm(ctx.big_local)  # the local source is read from memory, as for every mount
        buf = bytearray(MiB)
        t0 = time.monotonic()
        with open(ctx.big_local, "rb", buffering=0) as src, \
                open(session.path / key, "wb", buffering=0) as dst:
            while n := src.readinto(buf):
                dst.write(memoryview(buf)[:n])
        closed = time.monotonic() - t0
        done = ctx.store.wait_size(key, size, ctx.sizes.timeout)
        _check_object(ctx, key, size)
        return {"seq_write": size / MB / (done - t0), "write_close": closed}

    def cleanup(self, ctx: Ctx, tag: str, state: object) -> None:
        ctx.store.delete_prefix(f"seqw-{tag}.bin")


def _warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MiB):
            pass


def _check_object(ctx: Ctx, key: str, size: int) -> None:
    """A few ranged GETs: the uploaded bytes are the source's, not just its length."""
    for at in (0, size // 2 - 5, max(0, size - 24)):
        n = min(24, size - at)
        if ctx.store.get_range(key, at, n) != ctx.pattern.expected(at, n):
            raise RuntimeError(f"{key}: wrong bytes on the server at offset {at}")


class SmallFiles(Workload):
    name = "small_files"
    metrics = (Metric("create", "create small files, until on server", "files/s", True),
               Metric("rm", "rm -r them, until gone", "files/s", True))

    def run(self, ctx: Ctx, session: Session | None, tag: str, state: object
            ) -> dict[str, float]:
        assert session is not None
        count, payload = ctx.sizes.small_files, os.urandom(ctx.sizes.small_kb * 1024)
        folder = f"small-{tag}"
        (session.path / folder).mkdir()
        names = [f"f{i:05d}" for i in range(count)]
        t0 = time.monotonic()
        for name in names:
            with open(session.path / folder / name, "wb") as f:
                f.write(payload)
        expected = dict.fromkeys(names, len(payload))
        created = ctx.store.wait_files(folder + "/", expected, ctx.sizes.timeout)
        t1 = time.monotonic()
        subprocess.run(["rm", "-r", str(session.path / folder)], check=True,
                       timeout=ctx.sizes.timeout)
        gone = ctx.store.wait_empty(folder + "/", ctx.sizes.timeout)
        return {"create": count / (created - t0), "rm": count / (gone - t1)}

    def cleanup(self, ctx: Ctx, tag: str, state: object) -> None:
        ctx.store.delete_prefix(f"small-{tag}/")


class Listing(Workload):
    """``ls -l`` of a folder of objects put directly (every mount starts cold)."""

    name = "ls"

    def __init__(self, files: int) -> None:
        self.metrics = (Metric("ls", f"ls -l of {files} objects, cold", "s", False),)

    def setup(self, ctx: Ctx) -> None:
        n, payload = ctx.sizes.ls_files, os.urandom(ctx.sizes.small_kb * 1024)
        if len(ctx.store.list_sizes("ls/")) != n:
            ctx.store.delete_prefix("ls/")
            ctx.store.put_many((f"ls/f{i:05d}", payload) for i in range(n))

    def run(self, ctx: Ctx, session: Session | None, tag: str, state: object
            ) -> dict[str, float]:
        assert session is not None
        t0 = time.monotonic()
        out = _run_checked(["ls", "-l", str(session.path / "ls")], ctx.sizes.timeout)
        elapsed = time.monotonic() - t0
        entries = len(out.splitlines()) - 1  # the "total" line
        if entries != ctx.sizes.ls_files:
            raise RuntimeError(f"ls -l showed {entries} entries, expected "
                               f"{ctx.sizes.ls_files}")
        return {"ls": elapsed}


class Tree(Workload):
    """``find`` over a fanout^3 tree of objects put directly, without directory
    markers (as an SDK or the console's upload leaves them)."""

    name = "tree"

    def __init__(self, fanout: int) -> None:
        entries = fanout + fanout ** 2 + fanout ** 3
        self.metrics = (Metric("find", f"find over {fanout}x{fanout}x{fanout} tree "
                               f"({entries} entries), cold", "s", False),)

    def _keys(self, fanout: int) -> list[str]:
        r = range(fanout)
        return [f"tree/d{a}/d{b}/f{c}" for a in r for b in r for c in r]

    def setup(self, ctx: Ctx) -> None:
        keys = self._keys(ctx.sizes.tree_fanout)
        if sorted(ctx.store.list_sizes("tree/")) != sorted(keys):
            ctx.store.delete_prefix("tree/")
            ctx.store.put_many((k, b"x" * 100) for k in keys)

    def run(self, ctx: Ctx, session: Session | None, tag: str, state: object
            ) -> dict[str, float]:
        assert session is not None
        f = ctx.sizes.tree_fanout
        t0 = time.monotonic()
        out = _run_checked(["find", str(session.path / "tree")], ctx.sizes.timeout)
        elapsed = time.monotonic() - t0
        lines = len(out.splitlines())
        if lines != 1 + f + f ** 2 + f ** 3:
            raise RuntimeError(f"find listed {lines} paths, expected {1 + f + f*f + f**3}")
        return {"find": elapsed}


class Rename(Workload):
    name = "rename"

    def __init__(self, size_mb: int) -> None:
        self.metrics = (Metric("rename", f"rename a {_size_label(size_mb)} file, "
                               "until on server", "s", False),)

    def setup(self, ctx: Ctx) -> None:
        _ensure_big_object(ctx)

    def prepare(self, ctx: Ctx, tag: str) -> object:
        ctx.store.copy(SRC_KEY, f"rename/{tag}.bin")
        return f"rename/{tag}"

    def run(self, ctx: Ctx, session: Session | None, tag: str, state: object
            ) -> dict[str, float]:
        assert session is not None and isinstance(state, str)
        old, new = state + ".bin", state + ".moved"
        os.stat(session.path / old)  # the cold lookup is not the rename
        t0 = time.monotonic()
        os.rename(session.path / old, session.path / new)
        ctx.store.wait_size(new, ctx.sizes.size, ctx.sizes.timeout)
        done = ctx.store.wait_gone(old, ctx.sizes.timeout)
        return {"rename": done - t0}

    def cleanup(self, ctx: Ctx, tag: str, state: object) -> None:
        ctx.store.delete_prefix(str(state))


class Rsync(Workload):
    name = "rsync"

    def __init__(self, files: int) -> None:
        self.metrics = (
            Metric("rsync1", f"rsync -a of {files} small files, until on server", "s",
                   False),
            Metric("rsync2", "second rsync -a (fresh mount)", "s", False),
            Metric("rsync2_files", "  files sent by the second run", "files", False))

    def setup(self, ctx: Ctx) -> None:
        ctx.rsync_files = build_rsync_source(ctx.rsync_src, ctx.sizes.rsync_files)

    def run(self, ctx: Ctx, session: Session | None, tag: str, state: object
            ) -> dict[str, float]:
        assert session is not None
        prefix = f"rsync-{tag}/"
        t0 = time.monotonic()
        self._rsync(ctx, session, prefix)
        done = ctx.store.wait_files(prefix, ctx.rsync_files, ctx.sizes.timeout)
        first = done - t0
        # The second run on a fresh mount: what it skips must come from what the first
        # run stored on the server (mtime, size), not from the mount's memory.
        session.remount()
        t0 = time.monotonic()
        sent = self._rsync(ctx, session, prefix)
        return {"rsync1": first, "rsync2": time.monotonic() - t0, "rsync2_files": sent}

    def _rsync(self, ctx: Ctx, session: Session, prefix: str) -> int:
        cmd = ["rsync", "-a", "--stats", f"{ctx.rsync_src}/", f"{session.path / prefix}"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=ctx.sizes.timeout)
        if r.returncode != 0:
            # Partial failures (e.g. a mount refusing chown) still leave a real
            # transfer to time; note them instead of hiding them.
            tail = r.stderr.strip().splitlines()[-1:] or [""]
            session.notes.append(f"rsync exit {r.returncode}: {tail[0][:160]}")
        m = re.search(r"Number of regular files transferred: ([\d,]+)", r.stdout)
        if m is None:
            raise RuntimeError(f"rsync failed ({r.returncode}): {r.stderr[-300:]}")
        return int(m.group(1).replace(",", ""))

    def cleanup(self, ctx: Ctx, tag: str, state: object) -> None:
        ctx.store.delete_prefix(f"rsync-{tag}/")


def _run_checked(cmd: list[str], timeout: float) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed ({r.returncode}): {r.stderr[-300:]}")
    return r.stdout


def _size_label(size_mb: int) -> str:
    return f"{size_mb // 1024} GB" if size_mb % 1024 == 0 else f"{size_mb} MB"


WORKLOAD_NAMES = ("raw", "seq_read", "seq_write", "small_files", "ls", "tree", "rename",
                  "rsync", "memory")


def make_workloads(names: list[str], sizes: Sizes) -> list[Workload]:
    """In the order of WORKLOAD_NAMES; ``memory`` is measured during seq_read and
    seq_write, so it brings them along."""
    if "memory" in names:
        names = [*names, "seq_read", "seq_write"]
    makers: dict[str, Callable[[], Workload]] = {
        "raw": lambda: Raw(sizes.streams), "seq_read": SeqRead, "seq_write": SeqWrite,
        "small_files": SmallFiles, "ls": lambda: Listing(sizes.ls_files),
        "tree": lambda: Tree(sizes.tree_fanout), "rename": lambda: Rename(sizes.size_mb),
        "rsync": lambda: Rsync(sizes.rsync_files)}
    return [makers[n]() for n in WORKLOAD_NAMES if n in names and n in makers]
