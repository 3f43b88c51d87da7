"""Model-based tests: random sequences of POSIX operations through a real mount,
every read, listing and stat compared with an in-memory model of what a local
filesystem would hold, and every acknowledged upload compared with the object on
the server (as mountpoint-s3 checks itself against its reference model).

One mount serves a whole test run; each example works in a fresh directory of its
own, which it removes (through the mount) at the end, so examples never see each
other's files but the mount's caches live across them, as they would in real use.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import APPID, Mount, fsync_dir, is_mounted, make_client
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from reliability_util import record

from cosfs.cos import CosError

# A small pool of names makes operations collide: rename over an existing file,
# mkdir of a taken name, rmdir of a non-empty directory...
NAMES = ("a", "b", "c")
MAX_DEPTH = 3
MAX_HANDLES = 4
FILE_MODES = (0o600, 0o640, 0o644, 0o664)
DIR_MODES = (0o700, 0o750, 0o755)
KiB = 1024
MiB = 1024 * KiB

_examples = itertools.count(1)


def payload(seed: int, size: int) -> bytes:
    """``size`` bytes that differ with ``seed`` (cheap to draw, even for MiBs)."""
    block = bytes((seed + i * 7) % 251 for i in range(251))
    return (block * (size // 251 + 1))[:size]


# Data: mostly small, sometimes past the 1 MiB multipart threshold of the mount.
sizes = st.one_of(st.integers(0, 3000), st.integers(0, 3000),
                  st.integers(60 * KiB, 2 * MiB + 5))
datas = st.builds(payload, st.integers(0, 250), sizes)
offsets = st.one_of(st.integers(0, 6000), st.integers(0, 3 * MiB))


@dataclass
class FileModel:
    data: bytearray
    mode: int
    mtime_ns: int | None = None  # known only after utime (writes make it "now")


@dataclass
class Handle:
    fd: int
    fid: int
    writable: bool


@dataclass
class Model:
    """What a local filesystem would hold: directories, paths -> file ids, file
    contents by id (an unlinked file lives on while a handle has it open)."""

    dirs: dict[str, int] = field(default_factory=lambda: {"": 0o755})  # path -> mode
    files: dict[str, int] = field(default_factory=dict)  # path -> fid
    contents: dict[int, FileModel] = field(default_factory=dict)
    replaced: set[int] = field(default_factory=set)  # fids a rename went over
    next_fid: int = 1

    def exists(self, path: str) -> bool:
        return path in self.dirs or path in self.files

    def children(self, d: str) -> set[str]:
        prefix = d + "/" if d else ""
        out = set()
        for p in itertools.chain(self.dirs, self.files):
            if p and p.startswith(prefix) and "/" not in p[len(prefix):]:
                out.add(p[len(prefix):])
        return out

    def below(self, d: str) -> list[str]:
        return [p for p in itertools.chain(self.dirs, self.files) if p.startswith(d + "/")]

    def linked(self, fid: int) -> str | None:
        return next((p for p, f in self.files.items() if f == fid), None)

    def new_file(self, path: str, mode: int) -> int:
        fid = self.next_fid
        self.next_fid += 1
        self.contents[fid] = FileModel(bytearray(), mode)
        self.files[path] = fid
        return fid


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def depth(path: str) -> int:
    return path.count("/") + 1 if path else 0


def expect_errno(code: int, fn, *args) -> None:
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == code, f"{fn.__name__}{args}: {e.value!r}, expected " \
                                  f"{errno.errorcode[code]}"


def read_all(fd: int) -> bytes:
    chunks, pos = [], 0
    while chunk := os.pread(fd, 4 * MiB, pos):
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)


class Env:
    """The mount, the client and counters shared by every example of a run."""

    def __init__(self, mount: Mount, client, settle: float = 0.0) -> None:
        self.mount = mount
        self.client = client
        # Write-back mounts upload after close() returned: how long the server may
        # take to hold what close() accepted.
        self.settle = settle
        self.examples = 0
        self.steps = 0
        self.unclean = False

    def fresh_mount(self) -> None:
        import shutil

        self.mount.kill()
        shutil.rmtree(self.mount.cache_root, ignore_errors=True)
        self.mount.start()
        self.unclean = False

    def problems(self, since: int = 0) -> str:
        """The mount's warnings and errors (for failure messages)."""
        lines = self.mount.log()[since:].splitlines()
        return "\n".join(ln for ln in lines if " WARNING " in ln or " ERROR " in ln
                         or ln.startswith(("Traceback", "  ", "OSError", "cosfs")))[-6000:]


class FilesystemMachine(RuleBasedStateMachine):
    env: Env  # set by the test before running

    def __init__(self) -> None:
        super().__init__()
        env = self.env
        if env.unclean or env.mount.proc is None or env.mount.proc.poll() is not None \
                or not is_mounted(env.mount.path):
            # The previous example failed: start over from a fresh mount and cache, so
            # one bug does not cascade into the next examples (and shrinking works).
            env.fresh_mount()
        env.unclean = True  # until teardown completes
        self.log_start = len(env.mount.log())
        self.prefix = f"ex{next(_examples)}"
        self.root = env.mount.path / self.prefix
        self.root.mkdir(mode=0o755)
        self.model = Model()
        self.handles: list[Handle] = []
        env.examples += 1

    # -- helpers ------------------------------------------------------------------

    def p(self, path: str) -> Path:
        return self.root / path if path else self.root

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}"

    def step(self) -> None:
        self.env.steps += 1

    def check_server(self, fid: int) -> None:
        """The object of a linked file holds exactly the model's bytes (called after
        close or fsync returned: the upload was acknowledged)."""
        path = self.model.linked(fid)
        if path is None:
            return
        want = bytes(self.model.contents[fid].data)
        deadline = time.monotonic() + self.env.settle
        while True:
            try:
                got = self.env.client.get_object(self.key(path))
            except CosError:
                if time.monotonic() >= deadline:
                    raise
                got = None
            if got == want or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        assert got == want, f"server copy of {path}: {len(got)} bytes, want {len(want)}"

    def check_file(self, path: str) -> None:
        fm = self.model.contents[self.model.files[path]]
        st_ = os.stat(self.p(path))
        assert stat.S_ISREG(st_.st_mode), path
        assert st_.st_size == len(fm.data), f"size of {path}"
        assert stat.S_IMODE(st_.st_mode) == fm.mode, f"mode of {path}"
        if fm.mtime_ns is not None:
            assert st_.st_mtime_ns == fm.mtime_ns, f"mtime of {path}"
        with open(self.p(path), "rb") as f:
            assert f.read() == fm.data, f"content of {path}"

    def check_dir(self, path: str) -> None:
        st_ = os.stat(self.p(path))
        assert stat.S_ISDIR(st_.st_mode), path
        if path:
            assert stat.S_IMODE(st_.st_mode) == self.model.dirs[path], f"mode of {path}/"
        assert set(os.listdir(self.p(path))) == self.model.children(path), f"listing {path}/"

    def close_all(self) -> None:
        fids = {h.fid for h in self.handles}
        while self.handles:
            os.close(self.handles.pop().fd)
        for fid in fids:
            self.check_server(fid)

    # -- files --------------------------------------------------------------------

    @rule(data=st.data(), name=st.sampled_from(NAMES), content=datas)
    def create_file(self, data, name, content) -> None:
        """open(O_CREAT|O_TRUNC) + write + close: the whole file is the new bytes."""
        self.step()
        parent = data.draw(st.sampled_from(sorted(self.model.dirs)), label="parent")
        path = join(parent, name)
        if path in self.model.dirs:
            expect_errno(errno.EISDIR, os.open, self.p(path), os.O_WRONLY | os.O_CREAT
                         | os.O_TRUNC, 0o644)
            return
        fd = os.open(self.p(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            assert os.write(fd, content) == len(content)
        finally:
            os.close(fd)
        fid = self.model.files.get(path)
        if fid is None:
            fid = self.model.new_file(path, 0o644)
        fm = self.model.contents[fid]
        fm.data[:] = content
        fm.mtime_ns = None
        self.check_server(fid)

    @precondition(lambda self: self.model.files and len(self.handles) < MAX_HANDLES)
    @rule(data=st.data(), writable=st.booleans())
    def open_handle(self, data, writable) -> None:
        self.step()
        path = data.draw(st.sampled_from(sorted(self.model.files)), label="path")
        fd = os.open(self.p(path), os.O_RDWR if writable else os.O_RDONLY)
        self.handles.append(Handle(fd, self.model.files[path], writable))

    def draw_handle(self, data, writable: bool = False) -> Handle | None:
        choices = [h for h in self.handles if h.writable or not writable]
        if not choices:
            return None
        return data.draw(st.sampled_from(choices), label="handle")

    @precondition(lambda self: any(h.writable for h in self.handles))
    @rule(data=st.data(), offset=offsets, content=datas)
    def write_at(self, data, offset, content) -> None:
        self.step()
        h = self.draw_handle(data, writable=True)
        assert h is not None
        assert os.pwrite(h.fd, content, offset) == len(content)
        fm = self.model.contents[h.fid]
        if content:
            if offset > len(fm.data):
                fm.data.extend(bytes(offset - len(fm.data)))
            fm.data[offset:offset + len(content)] = content
            fm.mtime_ns = None

    @precondition(lambda self: self.model.files)
    @rule(data=st.data(), content=datas)
    def append(self, data, content) -> None:
        """open(O_APPEND) + write + close."""
        self.step()
        path = data.draw(st.sampled_from(sorted(self.model.files)), label="path")
        fd = os.open(self.p(path), os.O_WRONLY | os.O_APPEND)
        try:
            assert os.write(fd, content) == len(content)
        finally:
            os.close(fd)
        fm = self.model.contents[self.model.files[path]]
        fm.data.extend(content)
        if content:
            fm.mtime_ns = None
        self.check_server(self.model.files[path])

    @precondition(lambda self: self.model.files)
    @rule(data=st.data(), size=offsets, by_handle=st.booleans())
    def truncate(self, data, size, by_handle) -> None:
        self.step()
        h = self.draw_handle(data, writable=True) if by_handle else None
        if h is not None:
            os.ftruncate(h.fd, size)
            fid = h.fid
        else:
            path = data.draw(st.sampled_from(sorted(self.model.files)), label="path")
            os.truncate(self.p(path), size)
            fid = self.model.files[path]
        fm = self.model.contents[fid]
        if size < len(fm.data):
            del fm.data[size:]
        else:
            fm.data.extend(bytes(size - len(fm.data)))
        fm.mtime_ns = None
        if h is None:
            self.check_server(fid)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def read_handle(self, data) -> None:
        self.step()
        h = self.draw_handle(data)
        assert h is not None
        # A file renamed over or unlinked while open stays readable (POSIX).
        assert read_all(h.fd) == self.model.contents[h.fid].data, "read through a handle"

    @precondition(lambda self: any(h.writable for h in self.handles))
    @rule(data=st.data())
    def fsync(self, data) -> None:
        self.step()
        h = self.draw_handle(data, writable=True)
        assert h is not None
        os.fsync(h.fd)
        self.check_server(h.fid)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def close_handle(self, data) -> None:
        self.step()
        h = self.draw_handle(data)
        assert h is not None
        self.handles.remove(h)
        os.close(h.fd)
        # close() of a writable handle uploads what every handle wrote; that of a
        # read-only one promises nothing about other handles' writes (POSIX).
        if h.writable or not any(o.fid == h.fid and o.writable for o in self.handles):
            self.check_server(h.fid)

    @precondition(lambda self: self.model.files)
    @rule(data=st.data())
    def unlink(self, data) -> None:
        self.step()
        path = data.draw(st.sampled_from(sorted(self.model.files)), label="path")
        os.unlink(self.p(path))
        del self.model.files[path]

    # -- directories ----------------------------------------------------------------

    @rule(data=st.data(), name=st.sampled_from(NAMES), mode=st.sampled_from(DIR_MODES))
    def mkdir(self, data, name, mode) -> None:
        self.step()
        parents = sorted(d for d in self.model.dirs if depth(d) < MAX_DEPTH)
        parent = data.draw(st.sampled_from(parents), label="parent")
        path = join(parent, name)
        if self.model.exists(path):
            expect_errno(errno.EEXIST, os.mkdir, self.p(path), mode)
            return
        os.mkdir(self.p(path), mode)
        self.model.dirs[path] = mode  # the test process's umask (022) keeps these

    @precondition(lambda self: len(self.model.dirs) > 1)
    @rule(data=st.data())
    def rmdir(self, data) -> None:
        self.step()
        path = data.draw(st.sampled_from(sorted(d for d in self.model.dirs if d)), label="dir")
        if self.model.below(path):
            expect_errno(errno.ENOTEMPTY, os.rmdir, self.p(path))
            return
        os.rmdir(self.p(path))
        del self.model.dirs[path]

    # -- renames --------------------------------------------------------------------

    @precondition(lambda self: self.model.files)
    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def rename_file(self, data, name) -> None:
        self.step()
        src = data.draw(st.sampled_from(sorted(self.model.files)), label="src")
        parent = data.draw(st.sampled_from(sorted(self.model.dirs)), label="dst parent")
        dst = join(parent, name)
        if dst in self.model.dirs:
            # The kernel checks "target is an ancestor of the source" first.
            code = errno.ENOTEMPTY if src.startswith(dst + "/") else errno.EISDIR
            expect_errno(code, os.rename, self.p(src), self.p(dst))
            return
        os.rename(self.p(src), self.p(dst))
        if src != dst:
            if dst in self.model.files:
                self.model.replaced.add(self.model.files[dst])
            self.model.files[dst] = self.model.files.pop(src)

    @precondition(lambda self: len(self.model.dirs) > 1)
    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def rename_dir(self, data, name) -> None:
        self.step()
        m = self.model
        src = data.draw(st.sampled_from(sorted(d for d in m.dirs if d)), label="src")
        parent = data.draw(st.sampled_from(sorted(m.dirs)), label="dst parent")
        dst = join(parent, name)
        if dst == src:
            os.rename(self.p(src), self.p(dst))
            return
        if dst.startswith(src + "/"):
            expect_errno(errno.EINVAL, os.rename, self.p(src), self.p(dst))
            return
        if src.startswith(dst + "/"):  # onto an ancestor: never empty
            expect_errno(errno.ENOTEMPTY, os.rename, self.p(src), self.p(dst))
            return
        if dst in m.files:
            expect_errno(errno.ENOTDIR, os.rename, self.p(src), self.p(dst))
            return
        if dst in m.dirs and m.below(dst):
            expect_errno(errno.ENOTEMPTY, os.rename, self.p(src), self.p(dst))
            return
        moved = [src, *m.below(src)]
        if depth(dst) + max(depth(p) - depth(src) for p in moved) > MAX_DEPTH + 1:
            return  # keep keys short; nothing to learn from deep trees
        os.rename(self.p(src), self.p(dst))
        m.dirs.pop(dst, None)
        for old in moved:
            new = dst + old[len(src):]
            if old in m.dirs:
                m.dirs[new] = m.dirs.pop(old)
            else:
                m.files[new] = m.files.pop(old)

    # -- attributes -----------------------------------------------------------------

    @rule(data=st.data(), file_mode=st.sampled_from(FILE_MODES),
          dir_mode=st.sampled_from(DIR_MODES))
    def chmod(self, data, file_mode, dir_mode) -> None:
        self.step()
        targets = sorted(set(self.model.files) | (set(self.model.dirs) - {""}))
        if not targets:
            return
        path = data.draw(st.sampled_from(targets), label="path")
        if path in self.model.files:
            os.chmod(self.p(path), file_mode)
            self.model.contents[self.model.files[path]].mode = file_mode
        else:
            os.chmod(self.p(path), dir_mode)
            self.model.dirs[path] = dir_mode

    @precondition(lambda self: self.model.files)
    @rule(data=st.data(), sec=st.integers(-2**31, 2**33), nsec=st.integers(0, 999_999_999))
    def utime(self, data, sec, nsec) -> None:
        self.step()
        path = data.draw(st.sampled_from(sorted(self.model.files)), label="path")
        mtime = sec * 10**9 + nsec
        os.utime(self.p(path), ns=(mtime, mtime))
        self.model.contents[self.model.files[path]].mtime_ns = mtime

    # -- the whole picture --------------------------------------------------------

    @rule(roll=st.integers(0, 5))
    def remount(self, roll) -> None:
        """Close everything, unmount cleanly, mount again: only the server remains.
        (A remount costs a second: ``roll`` makes it one step in six of its share.)"""
        if roll:
            return
        self.step()
        self.close_all()
        assert self.env.mount.remount() is not None
        self.check_all()

    @rule(roll=st.integers(0, 2))
    def check_everything(self, roll) -> None:
        if not roll:
            self.step()
            self.check_all()

    def check_all(self) -> None:
        for d in sorted(self.model.dirs):
            self.check_dir(d)
        for path in sorted(self.model.files):
            self.check_file(path)

    @invariant()
    def mount_alive(self) -> None:
        proc = self.env.mount.proc
        assert proc is not None and proc.poll() is None, self.env.mount.log()[-3000:]

    def check_server_tree(self) -> None:
        """With every handle closed the bucket holds exactly the model: one object
        per file with its bytes, and a marker for every empty directory."""
        fsync_dir(self.root)  # renamed files' old keys are deleted in the background
        keys = {}
        for page in self.env.client.iter_list(prefix=self.prefix + "/"):
            for info in page.contents:
                keys[info.key[len(self.prefix) + 1:]] = info
        keys.pop("", None)  # the example directory's own marker
        files = {k for k in keys if not k.endswith("/")}
        assert files == set(self.model.files), "objects on the server"
        for marker in (k[:-1] for k in keys if k.endswith("/")):
            assert marker in self.model.dirs, f"stale directory marker {marker}/"
        for d in self.model.dirs:
            if d and not self.model.below(d):
                assert d + "/" in keys, f"empty directory {d} has no marker"
        for path in files:
            self.check_server(self.model.files[path])

    def remove_all(self) -> None:
        """Clean the bucket for the next example, through the mount (rm -r), and
        check that nothing is left on the server."""
        import shutil

        shutil.rmtree(self.root)
        left = [o.key for p in self.env.client.iter_list(prefix=self.prefix + "/")
                for o in p.contents]
        assert left == [], f"rm -r left {left}"

    def teardown(self) -> None:
        try:
            self.close_all()
            self.check_all()
            self.check_server_tree()
            self.remove_all()
            self.env.unclean = False
        except BaseException:
            print(f"mount log of {self.prefix}:\n{self.env.problems(self.log_start)}")
            raise
        finally:
            for h in self.handles:
                try:
                    os.close(h.fd)
                except OSError:
                    pass
            self.handles.clear()


def _run_machine(env: Env, max_examples: int, steps: int) -> None:
    FilesystemMachine.env = env
    failures = 0
    try:
        run_state_machine_as_test(FilesystemMachine, settings=settings(
            max_examples=max_examples, stateful_step_count=steps, deadline=None,
            database=None, print_blob=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate, Phase.shrink]))
    except BaseException as exc:
        failures = len(exc.exceptions) if isinstance(exc, BaseExceptionGroup) else 1
        raise
    finally:
        record("model", {"test": "stateful", "writeback": env.settle > 0,
                         "examples": env.examples, "steps": env.steps,
                         "max_examples": max_examples, "step_count": steps,
                         "failures": failures})


def _model_env(cos_server, tmp_path_factory, options: list[str],
               settle: float) -> Iterator[Env]:
    label = re.sub(r"[^a-z0-9]+", "-", "-".join(options[1:])) or "x"
    name = f"model-{label}-{os.getpid()}-{APPID}"
    cos_server.create_bucket(name)
    base = tmp_path_factory.mktemp("model")
    mp = base / "mnt"
    mp.mkdir()
    m = Mount(cos_server, name, mp, base / "cache", options).start()
    yield Env(m, make_client(cos_server, name), settle)
    try:
        m.unmount()
    except Exception:
        m.kill()


@pytest.fixture(scope="module")
def model_env(cos_server, tmp_path_factory) -> Iterator[Env]:
    yield from _model_env(cos_server, tmp_path_factory, ["multipart_size=1"], 0.0)


@pytest.fixture(scope="module")
def writeback_env(cos_server, tmp_path_factory) -> Iterator[Env]:
    yield from _model_env(cos_server, tmp_path_factory, ["multipart_size=1", "writeback"],
                          10.0)


@pytest.fixture(scope="module")
def quick_writeback_env(cos_server, tmp_path_factory) -> Iterator[Env]:
    """Write-back uploads that start while the next operations on the file run."""
    yield from _model_env(cos_server, tmp_path_factory,
                          ["multipart_size=1", "writeback", "writeback_delay=0.05"], 10.0)


def test_model_small(model_env: Env) -> None:
    _run_machine(model_env, max_examples=15, steps=25)


def test_model_writeback(writeback_env: Env) -> None:
    """The same model on a write-back mount: close() returns before the upload, so
    the server is checked once the upload had time to land."""
    _run_machine(writeback_env, max_examples=15, steps=25)


@pytest.mark.slow
def test_model_large(model_env: Env) -> None:
    _run_machine(model_env, max_examples=300, steps=60)


# -- many workers at once -------------------------------------------------------------

SHARED_FILES = 3
SHARED_SIZE = 16 * KiB  # one FUSE write: the kernel serialises writes to one inode


def version_bytes(worker: int, seq: int, size: int = SHARED_SIZE) -> bytes:
    """A whole-file version that names its writer, so a torn mix cannot pass."""
    head = f"{worker:03d}:{seq:06d}:".encode()
    return head + payload(worker * 7919 + seq, size - len(head))


def parse_version(data: bytes) -> tuple[int, int] | None:
    try:
        worker, seq = (int(x) for x in data[:11].decode().split(":")[:2])
    except (UnicodeDecodeError, ValueError):
        return None
    return (worker, seq) if data == version_bytes(worker, seq, len(data)) else None


@dataclass
class Write:
    """One whole-file write of a shared file: when it began and when it returned."""

    target: str
    version: tuple[int, int]
    start: float
    end: float


@dataclass
class WorkerLog:
    private: dict[str, bytes] = field(default_factory=dict)  # name -> content
    writes: list[Write] = field(default_factory=list)
    ops: int = 0


class Worker:
    """Random operations on a private directory (checked against a model as it
    goes) and whole-file writes to shared files (checked at the end)."""

    def __init__(self, n: int, root: Path, seed: int) -> None:
        import random

        self.n = n
        self.dir = root / f"w{n:02d}"
        self.shared = root / "shared"
        self.rng = random.Random(seed)
        self.log = WorkerLog()
        self.seq = 0

    def run(self, deadline: float) -> None:
        import time

        self.dir.mkdir()
        ops = (self.put, self.put, self.append, self.rename, self.unlink, self.truncate,
               self.read_private, self.overwrite_shared, self.replace_shared,
               self.read_shared)
        while time.monotonic() < deadline:
            self.rng.choice(ops)()
            self.log.ops += 1

    def content(self) -> bytes:
        self.seq += 1
        size = self.rng.choice((0, 100, 5000, 70 * KiB, 1 * MiB + 3))
        return payload(self.n * 1000 + self.seq, size)

    def put(self) -> None:
        name, data = f"f{self.rng.randrange(4)}", self.content()
        (self.dir / name).write_bytes(data)
        self.log.private[name] = data

    def append(self) -> None:
        if not self.log.private:
            return
        name, data = self.rng.choice(sorted(self.log.private)), self.content()[:3000]
        with open(self.dir / name, "ab") as f:
            f.write(data)
        self.log.private[name] += data

    def truncate(self) -> None:
        if not self.log.private:
            return
        name, size = self.rng.choice(sorted(self.log.private)), self.rng.randrange(8000)
        os.truncate(self.dir / name, size)
        old = self.log.private[name]
        self.log.private[name] = old[:size] + bytes(max(0, size - len(old)))

    def rename(self) -> None:
        if not self.log.private:
            return
        src, dst = self.rng.choice(sorted(self.log.private)), f"f{self.rng.randrange(4)}"
        os.rename(self.dir / src, self.dir / dst)
        self.log.private[dst] = self.log.private.pop(src)

    def unlink(self) -> None:
        if self.log.private:
            name = self.rng.choice(sorted(self.log.private))
            os.unlink(self.dir / name)
            del self.log.private[name]

    def read_private(self) -> None:
        if self.log.private:
            name = self.rng.choice(sorted(self.log.private))
            assert (self.dir / name).read_bytes() == self.log.private[name], \
                f"worker {self.n}: {name}"
        assert set(os.listdir(self.dir)) == set(self.log.private), f"worker {self.n} listing"

    def overwrite_shared(self) -> None:
        """Rewrite a shared file in place with one pwrite of a same-size version."""
        import time

        self.seq += 1
        target = f"s{self.rng.randrange(SHARED_FILES)}"
        start = time.monotonic()
        fd = os.open(self.shared / target, os.O_WRONLY)
        try:
            assert os.pwrite(fd, version_bytes(self.n, self.seq), 0) == SHARED_SIZE
            end = time.monotonic()
        finally:
            os.close(fd)
        self.log.writes.append(Write(target, (self.n, self.seq), start, end))

    def replace_shared(self) -> None:
        """The classic atomic replace: write a temporary file, rename it over."""
        import time

        self.seq += 1
        target = f"r{self.rng.randrange(SHARED_FILES)}"
        tmp = self.shared / f".tmp-{self.n}-{self.seq}"
        tmp.write_bytes(version_bytes(self.n, self.seq, 5000 + self.n))
        start = time.monotonic()
        os.rename(tmp, self.shared / target)
        self.log.writes.append(Write(target, (self.n, self.seq), start, time.monotonic()))

    def read_shared(self) -> None:
        name = self.rng.choice([f"s{i}" for i in range(SHARED_FILES)]
                               + [f"r{i}" for i in range(SHARED_FILES)])
        # Renamed over mid-read through this mount: the open handle keeps reading
        # the version it opened.
        data = (self.shared / name).read_bytes()
        # A concurrent in-place pwrite may be half-way through the page cache (as on
        # any Linux filesystem); renamed-over files promise a whole version always.
        if name.startswith("r"):
            assert parse_version(data) is not None, f"torn read of {name}"


def final_version(writes: list[Write], target: str) -> set[tuple[int, int]]:
    """Versions that may legitimately be last: those no later write began after."""
    mine = [w for w in writes if w.target == target]
    return {w.version for w in mine if not any(o.start > w.end for o in mine)}


def run_workers(env: Env, workers: int, seconds: float) -> None:
    import threading
    import time

    root = env.mount.path / f"conc{next(_examples)}"
    (root / "shared").mkdir(parents=True)
    for i in range(SHARED_FILES):
        (root / "shared" / f"s{i}").write_bytes(version_bytes(999, i))
        (root / "shared" / f"r{i}").write_bytes(version_bytes(999, i, 5000))
    crew = [Worker(n, root, seed=n) for n in range(workers)]
    errors: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def run(w: Worker) -> None:
        try:
            w.run(deadline)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in crew]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
        assert not t.is_alive(), "a worker hung in the mount"
    writes = [w for c in crew for w in c.log.writes]
    figures = {"test": "concurrency", "writeback": env.settle > 0,
               "workers": workers, "seconds": seconds,
               "operations": sum(w.log.ops for w in crew), "shared_writes": len(writes),
               "failures": 1}
    try:
        if errors:
            raise errors[0]
        check_workers(env, root, crew, writes)
        figures["failures"] = 0
    finally:
        record("model", figures)
    assert figures["operations"] > workers  # the run really did something


def check_workers(env: Env, root: Path, crew: list[Worker], writes: list[Write]) -> None:
    """After the run: every private file as its worker's model says, every shared
    file one whole version that was legitimately last, the server in agreement."""
    prefix = root.name
    env.mount.remount()  # nothing from caches: what the server holds, through the mount
    for w in crew:
        d = root / w.dir.name
        assert set(os.listdir(d)) == set(w.log.private), f"worker {w.n} listing after remount"
        for name, data in w.log.private.items():
            assert (d / name).read_bytes() == data, f"worker {w.n}: {name} after remount"
            assert env.client.get_object(f"{prefix}/{d.name}/{name}") == data
    for i in range(SHARED_FILES):
        for target in (f"s{i}", f"r{i}"):
            got = (root / "shared" / target).read_bytes()
            version = parse_version(got)
            assert version is not None, f"shared {target} is not one whole version"
            allowed = final_version(writes, target) or {(999, i)}
            assert version in allowed, f"shared {target}: {version} is not the last write"
            assert env.client.get_object(f"{prefix}/shared/{target}") == got
    assert sorted(os.listdir(root / "shared")) == sorted(
        [f"s{i}" for i in range(SHARED_FILES)] + [f"r{i}" for i in range(SHARED_FILES)])
    assert env.client.list_multipart_uploads() == []


def test_concurrent_workers_short(model_env: Env) -> None:
    run_workers(model_env, workers=16, seconds=8)


def test_concurrent_workers_writeback(writeback_env: Env) -> None:
    run_workers(writeback_env, workers=16, seconds=8)


def test_concurrent_workers_writeback_quick(quick_writeback_env: Env) -> None:
    # Unlinks and renames racing the RELEASE of the close() before them, and
    # renames of unsent files over uploaded ones, used to bring deleted files back
    # after a remount, or lose renamed ones.
    run_workers(quick_writeback_env, workers=12, seconds=6)


@pytest.mark.slow
def test_concurrent_workers_long(model_env: Env) -> None:
    run_workers(model_env, workers=16, seconds=120)


# -- regressions: failures the model found, as explicit sequences ---------------------


def test_regression_second_handle_then_rename_then_truncate(mounter, client) -> None:
    """Two handles on one file, both closed, then a rename: the file's staged copy
    stayed referenced under the old key, so the next truncate uploaded to the old
    name (resurrecting it) and left the new one stale."""
    m = mounter()
    b, c = m.path / "b", m.path / "c"
    b.write_bytes(b"first version")
    fd = os.open(b, os.O_RDWR)
    b.write_bytes(b"second")  # a second handle of the same inode
    os.close(fd)
    os.rename(b, c)
    c.write_bytes(b"")
    assert client.get_object("c") == b""
    assert sorted(os.listdir(m.path)) == ["c"]
    fsync_dir(m.path)  # the old key's DELETE runs in the background until then
    assert [o.key for o in client.list_objects().contents] == ["c"]


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_RDWR], ids=["reader", "staged"])
@pytest.mark.parametrize("what", ["file", "directory"])
def test_regression_open_handle_reads_after_rename(mounter, flags, what) -> None:
    """An open file renamed (itself or its directory) still reads its bytes: the
    handle used to fetch from the old key, which the rename had deleted (ENOENT)."""
    m = mounter()
    data = payload(1, 3 * MiB)  # more than the first read fetches
    (m.path / "d").mkdir()
    (m.path / "d" / "f").write_bytes(data)
    m.remount()  # nothing in the kernel's page cache
    fd = os.open(m.path / "d" / "f", flags)
    try:
        if what == "file":
            os.rename(m.path / "d" / "f", m.path / "d" / "g")
        else:
            os.rename(m.path / "d", m.path / "e")
        assert read_all(fd) == data
    finally:
        os.close(fd)


def test_regression_open_handle_reads_after_unlink(mounter) -> None:  # fixed in cedf4c1
    """POSIX (and docs/SEMANTICS.md) promise an unlinked file stays readable through
    the handles open on it."""
    m = mounter()
    data = payload(2, 3 * MiB)
    (m.path / "f").write_bytes(data)
    m.remount()
    fd = os.open(m.path / "f", os.O_RDWR)
    try:
        os.unlink(m.path / "f")
        assert read_all(fd) == data
    finally:
        os.close(fd)


def test_regression_rename_after_a_truncate_that_changed_nothing(mounter, client) -> None:
    """open(O_TRUNC) of an empty file marked it as holding unsent data though nothing
    changed; a rename then moved it only in memory (the object stayed under the old
    name, which came back next to the new one), and a chmod was kept for an upload
    that never came (lost at the next mount)."""
    m = mounter()
    a = m.path / "a"
    a.write_bytes(b"")
    a.write_bytes(b"")  # O_TRUNC to the size it has
    os.rename(a, m.path / "b")
    assert os.listdir(m.path) == ["b"]
    fsync_dir(m.path)  # the old key's DELETE runs in the background until then
    assert [o.key for o in client.list_objects().contents] == ["b"]
    (m.path / "b").write_bytes(b"")
    os.chmod(m.path / "b", 0o604)
    m.remount()
    assert stat.S_IMODE((m.path / "b").stat().st_mode) == 0o604


@pytest.mark.parametrize("mtime_ns", [0, -1_500_000_000, -1], ids=["epoch", "-1.5s", "-1ns"])
def test_regression_mtime_at_or_before_the_epoch(mounter, mtime_ns) -> None:
    """utime to the epoch read back as the upload time (0 was taken for "unset"),
    and a negative fraction of a second was stored floored (-1.5 s as -2.5 s)."""
    m = mounter()
    (m.path / "f").write_bytes(b"x")
    os.utime(m.path / "f", ns=(mtime_ns, mtime_ns))
    m.remount()
    assert (m.path / "f").stat().st_mtime_ns == mtime_ns


def test_regression_read_only_handle_sees_writes_through_the_mount(mounter) -> None:
    """A read-only handle opened before another handle rewrote the file read EIO
    (its If-Match named the old object) instead of the new bytes."""
    m = mounter()
    p = m.path / "f"
    p.write_bytes(b"old content")
    m.remount()
    fd = os.open(p, os.O_RDONLY)
    try:
        with open(p, "ab") as f:
            f.write(b" and more")
        os.truncate(p, 15)
        assert os.pread(fd, 100, 0) == b"old content and"
    finally:
        os.close(fd)


def test_regression_read_only_handle_sees_a_write_back_upload(mounter, client) -> None:
    """Write-back: a read-only handle opened before another handle rewrote the
    file, which then went up in the background, read EIO (its If-Match named the
    old object: only foreground uploads moved readers to the new one)."""
    m = mounter(["writeback"])
    p = m.path / "f"
    p.write_bytes(b"old content")
    m.remount()
    fd = os.open(p, os.O_RDONLY)
    try:
        p.write_bytes(b"new content, longer")
        deadline = time.monotonic() + 10
        while client.get_object("f") != b"new content, longer":
            assert time.monotonic() < deadline, "the write-back upload did not land"
            time.sleep(0.05)
        time.sleep(0.2)  # the mount records the finished upload after the server has it
        assert os.pread(fd, 100, 0) == b"new content, longer"
    finally:
        os.close(fd)


@pytest.mark.parametrize("options", [[], ["writeback"]], ids=["default", "writeback"])
def test_regression_truncate_right_after_close_is_uploaded(mounter, client, options) -> None:
    """Shrunk by the model (write-back): truncate(path) right after close() was
    never uploaded when the closing handle's RELEASE, which FUSE sends after
    close() returns, unstaged the file while the truncate waited for it: the flush
    that follows found nothing staged. Racy, so many rounds."""
    m = mounter(["multipart_size=1", *options])
    (m.path / "c").mkdir()
    for i in range(60):
        p = m.path / "c" / f"a{i}"
        p.write_bytes(os.urandom(65489))
        time.sleep((i % 5) * 0.002)
        os.truncate(p, 1000)
        deadline = time.monotonic() + 5
        while server_size(client, f"c/a{i}") != 1000:
            assert time.monotonic() < deadline, f"c/a{i}: the truncate never went up"
            time.sleep(0.02)


def server_size(client, key: str) -> int | None:
    """The size of ``key`` on the server, None while it is not there (write-back:
    close() returns before the upload)."""
    try:
        return len(client.get_object(key))
    except CosError as exc:
        if exc.status != 404:
            raise
        return None


def test_regression_read_only_close_with_a_writer_open(mounter, client) -> None:
    """Shrunk by the model: closing a read-only handle while another handle holds
    unsent writes uploads nothing (POSIX promises nothing there); the writer's
    close does. (The model used to expect the upload at any close.)"""
    m = mounter()
    p = m.path / "b"
    p.write_bytes(b"")
    ro = os.open(p, os.O_RDONLY)
    rw = os.open(p, os.O_RDWR)
    os.pwrite(rw, b"z" * 61440, 0)
    os.close(ro)
    assert os.pread(rw, 10, 0) == b"z" * 10
    os.close(rw)
    assert client.get_object("b") == b"z" * 61440


@pytest.mark.parametrize("options", [[], ["writeback"]])
def test_regression_open_racing_a_rename_over_the_name(mounter, options) -> None:
    """Readers opening a name while other writers rename files over it: an open the
    kernel resolved to the inode being replaced used to read the new object under
    the old size (or the old ETag: EIO). Every read is one whole version. With
    write-back the new file is only in the cache when the open comes: that open
    used to fail with ESTALE, and the kernel's one retry found the name replaced
    again."""
    import threading
    import time

    m = mounter(options)
    d = m.path / "s"
    d.mkdir()
    (d / "r").write_bytes(b"0" * 5000)
    stop = time.monotonic() + 5
    errors: list[object] = []

    def writer(k: int) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            tmp = d / f".tmp{n}-{k}"
            tmp.write_bytes(str(k).encode() * (5000 + 7 * k))
            os.rename(tmp, d / "r")

    def reader() -> None:
        while time.monotonic() < stop:
            try:
                data = (d / "r").read_bytes()
            except OSError as exc:
                errors.append(exc)
                continue
            k = data[:1]
            if data != k * len(data) or len(data) != 5000 + 7 * int(k):
                errors.append((len(data), data[:1], data[-8:]))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(1, 7)]
    threads += [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, (len(errors), errors[:5])
