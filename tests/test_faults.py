"""cosfs under faults: a failing or slow server, a server that goes away, a mount
killed mid-operation, a cache disk that fills up.

Every operation runs with a deadline (a hang fails the test instead of stalling
it). After each scenario the faults stop, the mount is remounted (so recovery
runs) and the bucket is audited with our client: every object must be one whole
version some operation wrote (never a torn one), every acknowledged write (close
or fsync returned) must still be there unless a later operation on the same name
was attempted, and no multipart upload may be left behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Mount, ServerProcess, make_client
from reliability_util import Tally, record, timed

KiB = 1024
MiB = 1024 * KiB
OP_TIMEOUT = 120.0  # far beyond retries x backoff: reaching it means a hang
ABSENT = "absent"


# -- versions: every byte written says which write it belongs to -------------------


def version(name: str, seq: int, size: int) -> bytes:
    """Content of write ``seq`` of ``name``; ``parse`` recognises exactly these."""
    head = f"<{name}:{seq}:{size}>".encode()
    if size < len(head):
        size = len(head)
    seed = hashlib.sha256(head).digest()
    return head + (seed * (size // 32 + 1))[:size - len(head)]


def parse(data: bytes) -> tuple[str, int] | None:
    """(name, seq) of a whole version, None for anything else (torn, truncated)."""
    m = re.match(rb"<([^:>]+):(\d+):(\d+)>", data)
    if m is None:
        return None
    name, seq, size = m.group(1).decode(), int(m.group(2)), int(m.group(3))
    return (name, seq) if data == version(name, seq, size) else None


def digest(data: bytes | None) -> str:
    return ABSENT if data is None else hashlib.md5(data).hexdigest()


# -- the ledger: what each name may hold --------------------------------------------


@dataclass
class Ledger:
    """Per name: the digests the server may hold (a failed operation adds its
    outcome to the old state; a successful one replaces it), and the last
    acknowledged content when no operation on the name failed since."""

    allowed: dict[str, set[str]] = field(default_factory=dict)
    acked: dict[str, bytes | None] = field(default_factory=dict)

    def succeeded(self, name: str, data: bytes | None) -> None:
        self.allowed[name] = {digest(data)}
        self.acked[name] = data

    def failed(self, name: str, *outcomes: bytes | None | str) -> None:
        self.allowed.setdefault(name, {ABSENT}).update(
            o if isinstance(o, str) else digest(o) for o in outcomes)
        self.acked.pop(name, None)

    def may_hold(self, name: str, data: bytes | None) -> bool:
        return digest(data) in self.allowed.get(name, {ABSENT})


@dataclass
class Audit:
    objects: int = 0
    half_written: int = 0
    unexpected: int = 0
    bytes_lost: int = 0
    leftover_uploads: int = 0


def audit(client, ledger: Ledger, prefix: str = "") -> Audit:
    """Compare the bucket with the ledger (faults off, after a remount)."""
    result = Audit()
    found: dict[str, bytes] = {}
    for page in client.iter_list(prefix=prefix):
        for info in page.contents:
            if info.key.endswith("/"):
                continue
            found[info.key[len(prefix):]] = client.get_object(info.key)
    result.objects = len(found)
    for name, data in found.items():
        if parse(data) is None:
            result.half_written += 1
        elif not ledger.may_hold(name, data):
            result.unexpected += 1
    for name in ledger.allowed:
        data = found.get(name)
        if not ledger.may_hold(name, data):
            if name not in found:
                result.unexpected += 1
            acked = ledger.acked.get(name)
            if acked is not None and data != acked:
                result.bytes_lost += len(acked)
    result.leftover_uploads = len(client.list_multipart_uploads())
    return result


# -- one scenario: random operations under a fault ----------------------------------


SIZES = (0, 1000, 100 * KiB, 1536 * KiB)  # the last is multipart with multipart_size=1


class Workload:
    """Seeded random file operations on a mount, each under a deadline, tallied
    and entered in a ledger."""

    def __init__(self, mount: Mount, seed: int, files: int = 6) -> None:
        self.m = mount
        self.rng = random.Random(seed)
        self.names = [f"f{i}" for i in range(files)]
        self.ledger = Ledger()
        self.tally = Tally()
        self.seq = 0
        self.wrong_reads = 0

    def path(self, name: str) -> Path:
        return self.m.path / name

    def attempt(self, fn, what: str) -> bool:
        before = self.tally.ok
        self.tally.run(fn, OP_TIMEOUT, what)
        return self.tally.ok > before

    def write(self, name: str | None = None, size: int | None = None) -> None:
        name = name or self.rng.choice(self.names)
        self.seq += 1
        data = version(name, self.seq, self.rng.choice(SIZES) if size is None else size)
        sync = self.rng.random() < 0.3
        acked = False

        def op() -> None:
            nonlocal acked
            fd = os.open(self.path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for pos in range(0, len(data), 256 * KiB):
                    os.write(fd, data[pos:pos + 256 * KiB])
                if sync:
                    os.fsync(fd)
                    acked = True
            finally:
                os.close(fd)
            acked = True

        self.attempt(op, f"write {name}")
        if acked:
            self.ledger.succeeded(name, data)
        else:
            self.ledger.failed(name, data)

    def read(self) -> None:
        name = self.rng.choice(self.names)

        def op() -> None:
            try:
                data: bytes | None = self.path(name).read_bytes()
            except FileNotFoundError:
                data = None
            if not self.ledger.may_hold(name, data) or (
                    data is not None and parse(data) is None):
                self.wrong_reads += 1

        self.attempt(op, f"read {name}")

    def rename(self) -> None:
        src, dst = self.rng.sample(self.names, 2)
        if self.ledger.allowed.get(src, {ABSENT}) == {ABSENT}:
            return
        ok = self.attempt(lambda: os.rename(self.path(src), self.path(dst)),
                          f"rename {src} {dst}")
        moved = set(self.ledger.allowed.get(src, {ABSENT}))
        if ok:
            self.ledger.allowed[dst] = moved
            if src in self.ledger.acked:
                self.ledger.acked[dst] = self.ledger.acked[src]
            else:
                self.ledger.acked.pop(dst, None)
            self.ledger.succeeded(src, None)
        else:
            self.ledger.failed(dst, *moved)
            self.ledger.failed(src, ABSENT)

    def unlink(self) -> None:
        name = self.rng.choice(self.names)
        if self.ledger.allowed.get(name, {ABSENT}) == {ABSENT}:
            return
        if self.attempt(lambda: os.unlink(self.path(name)), f"unlink {name}"):
            self.ledger.succeeded(name, None)
        else:
            self.ledger.failed(name, ABSENT)

    def namespace(self) -> None:
        """mkdir, list, stat, rmdir within the deadline. ENOENT, EEXIST and ENOTEMPTY
        are right answers here (the directory may or may not exist), not failures."""
        d = self.path(f"d{self.rng.randrange(3)}")
        op = self.rng.choice((lambda: os.mkdir(d), lambda: os.listdir(self.m.path),
                              lambda: os.stat(d), lambda: os.rmdir(d)))

        def answered() -> None:
            try:
                op()
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
                    raise

        self.attempt(answered, "namespace operation")

    def step(self) -> None:
        self.rng.choices((self.write, self.read, self.rename, self.unlink, self.namespace),
                         weights=(4, 3, 1, 1, 2))[0]()


def injected(server: ServerProcess) -> int:
    return sum(op.get("injected", 0) for op in server.stats().values())


def settle_and_audit(m: Mount, server: ServerProcess, w: Workload) -> Audit:
    """Faults off, remount (pending uploads finish, recovery runs), then audit."""
    server.clear_faults()
    timed(m.remount, OP_TIMEOUT, "remount")
    client = make_client(server, m.bucket)
    result = audit(client, w.ledger)
    # What the mount shows after the remount is what the server holds.
    for name in w.names:
        on_server = None
        try:
            on_server = client.get_object(name)
        except Exception:  # noqa: BLE001 - missing: the mount must agree
            pass
        try:
            seen: bytes | None = timed((m.path / name).read_bytes, OP_TIMEOUT, name)
        except FileNotFoundError:
            seen = None
        assert seen == on_server, f"{name}: the mount and the server disagree"
    return result


def report(fault: str, w: Workload, result: Audit, **extra) -> None:
    row = {"fault": fault, "tried": w.tally.tried, "succeeded": w.tally.ok,
           "eio": w.tally.eio, "other_errors": w.tally.other,
           "slowest_s": round(w.tally.slowest, 2), "bytes_lost": result.bytes_lost,
           "half_written": result.half_written, "unexpected": result.unexpected,
           "wrong_reads": w.wrong_reads, "leftover_uploads": result.leftover_uploads,
           **extra}
    record("faults", row)
    print(row)


def check(result: Audit, w: Workload) -> None:
    assert result.half_written == 0, "an object on the server is torn"
    assert result.bytes_lost == 0, "an acknowledged write is gone"
    assert result.unexpected == 0, "an object holds what no operation wrote there"
    assert w.wrong_reads == 0, "a read returned bytes that were never that file's"
    assert result.leftover_uploads == 0, "an abandoned multipart upload is left"


def run_error_rate(mounter, server: ServerProcess, rate: float, ops: int) -> None:
    m = mounter(["multipart_size=1"], server=server, bucket_name=server.bucket)
    w = Workload(m, seed=int(rate * 1000))
    for name in w.names[:3]:
        w.write(name, 1000)  # something old to overwrite
    server.set_faults("*", error_rate=rate)
    for _ in range(ops):
        w.step()
    # Errors are drawn at random and many steps are answered from the mount's
    # caches: go on until the faults were met at least once, or the test proves
    # nothing (a short run could draw none).
    for _ in range(4 * ops):
        if injected(server):
            break
        w.step()
    hits = injected(server)
    result = settle_and_audit(m, server, w)
    report(f"{rate:.0%} errors (500/503) on every operation", w, result, injected=hits)
    check(result, w)
    assert hits > 0
    # Five retries with backoff hide a 5% error rate completely.
    if rate <= 0.05:
        assert w.tally.eio == 0, "a 5% error rate leaked through the retries"


@pytest.mark.parametrize("rate,ops", [
    pytest.param(0.05, 60, marks=pytest.mark.slow),
    (0.20, 25),
    pytest.param(0.20, 200, marks=pytest.mark.slow, id="0.2-long"),
    pytest.param(0.50, 120, marks=pytest.mark.slow),
])
def test_error_rate(mounter, fresh_server, rate, ops) -> None:
    run_error_rate(mounter, fresh_server, rate, ops)


def test_dropped_connections_mid_body(mounter, fresh_server) -> None:
    """Uploads cut after half their body, downloads after half their answer: the
    client retries; nothing torn reaches the server or the application."""
    m = mounter(["multipart_size=1"], server=fresh_server, bucket_name=fresh_server.bucket)
    w = Workload(m, seed=7)
    for name in w.names[:3]:
        w.write(name, 100 * KiB)
    for op in ("PutObject", "UploadPart", "GetObject", "CompleteMultipartUpload",
               "PutObjectCopy"):
        fresh_server.set_faults(op, drop_rate=0.3)
    for _ in range(25):
        w.step()
    hits = injected(fresh_server)
    result = settle_and_audit(m, fresh_server, w)
    report("30% of uploads/downloads cut mid-body", w, result, injected=hits)
    check(result, w)
    assert hits > 0


@pytest.mark.slow
def test_latency_two_seconds(mounter, fresh_server) -> None:
    """2 s on every request: slow, but every operation succeeds."""
    m = mounter(["multipart_size=1"], server=fresh_server, bucket_name=fresh_server.bucket)
    w = Workload(m, seed=2)
    fresh_server.set_faults("*", latency_ms=2000)
    for _ in range(20):
        w.step()
    result = settle_and_audit(m, fresh_server, w)
    report("2 s latency on every request", w, result)
    check(result, w)
    assert w.tally.eio == 0 and not w.tally.other
    assert w.tally.slowest >= 2


def test_latency_beyond_the_timeout_gives_eio_in_bounded_time(mounter, fresh_server) -> None:
    """A server slower than readwrite_timeout: EIO after the retries, never a hang."""
    client = make_client(fresh_server, fresh_server.bucket)
    client.put_object("slow", version("slow", 0, 5000))
    m = mounter(["readwrite_timeout=1", "retries=1"], server=fresh_server,
                bucket_name=fresh_server.bucket)
    os.stat(m.path / "slow")
    fresh_server.set_faults("GetObject", latency_ms=4000)
    w = Workload(m, seed=3)
    start = time.monotonic()
    w.attempt(lambda: (m.path / "slow").read_bytes(), "read slow")
    took = time.monotonic() - start
    fresh_server.clear_faults()
    assert w.tally.eio == 1, w.tally
    # two attempts of 1 s each plus one backoff: seconds, not minutes
    assert took < 10, took
    assert (m.path / "slow").read_bytes() == version("slow", 0, 5000)
    record("faults", {"fault": "4 s latency on GET, readwrite_timeout=1, retries=1",
                      "tried": 1, "succeeded": 0, "eio": 1, "slowest_s": round(took, 2),
                      "bytes_lost": 0, "half_written": 0})


# -- the server goes away --------------------------------------------------------------


def run_outage(mounter, server: ServerProcess, seconds: float) -> None:
    m = mounter(["multipart_size=1", "retries=2"], server=server, bucket_name=server.bucket)
    w = Workload(m, seed=30)
    for name in w.names:
        w.write(name, 5000)
    port = server.port
    server.stop()
    end = time.monotonic() + seconds
    during = Workload(m, seed=31)
    during.ledger = w.ledger  # the same names: failures widen what they may hold
    during.seq = 1000
    while time.monotonic() < end:
        during.step()
    server.start(port)
    # Back up: the same mount works again without a remount.
    after = Workload(m, seed=32)
    after.ledger, after.seq = w.ledger, 2000
    for name in w.names:
        after.write(name)
    assert after.tally.ok == after.tally.tried, "the mount did not recover from the outage"
    for _ in range(10):
        after.step()
    result = settle_and_audit(m, server, after)
    w.tally, w.wrong_reads = during.tally, during.wrong_reads + after.wrong_reads
    report(f"server stopped for {seconds:.0f} s, then restarted", w, result,
           after_restart_ok=after.tally.ok, after_restart_tried=after.tally.tried)
    check(result, w)
    assert during.tally.eio > 0
    # Connection refused: each failure comes back within the retries' backoff.
    assert during.tally.slowest < 30, during.tally.slowest


@pytest.mark.parametrize("seconds", [4, pytest.param(30, marks=pytest.mark.slow)])
def test_server_outage(mounter, fresh_server, seconds) -> None:
    run_outage(mounter, fresh_server, seconds)


# -- the mount process is killed ----------------------------------------------------


def recovery_lines(log: str) -> str:
    return "\n".join(ln for ln in log.splitlines() if "recover" in ln.lower())


def test_sigkill_during_uploads(mounter, fresh_server) -> None:
    """Writers busy when the mount dies: after the next mount every acknowledged file
    is there, every file in flight holds a prefix the application wrote (never
    less than write() acknowledged), recovery says what it did, and no multipart
    upload is left."""
    m = mounter(["multipart_size=1"], server=fresh_server, bucket_name=fresh_server.bucket)
    client = make_client(fresh_server, fresh_server.bucket)
    intended: dict[str, bytes] = {}
    written: dict[str, int] = {}  # bytes write() accepted
    closed: set[str] = set()
    stop = threading.Event()

    def writer(n: int) -> None:
        rng = random.Random(n)
        for i in range(1000):
            if stop.is_set():
                return
            name = f"w{n}-{i}"
            data = version(name, i, rng.choice((3000, 200 * KiB, 2 * MiB + 7)))
            intended[name], written[name] = data, 0
            try:
                fd = os.open(m.path / name, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    for pos in range(0, len(data), 64 * KiB):
                        written[name] += os.write(fd, data[pos:pos + 64 * KiB])
                finally:
                    os.close(fd)
                closed.add(name)
            except OSError:
                return  # the mount is gone

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(closed) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    m.kill()
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    m.start()
    log = m.log()
    in_flight = set(intended) - closed
    lost = half = 0
    for name, data in intended.items():
        try:
            got: bytes | None = client.get_object(name)
        except Exception:  # noqa: BLE001 - absent
            got = None
        if name in closed:
            if got != data:
                lost += len(data)
        elif got is not None and not (data.startswith(got) and len(got) >= written[name]):
            half += 1  # a file in flight holds what write() accepted (maybe more)
    recovered = [n for n in in_flight if f"'{n}'" in recovery_lines(log)]
    uploads = client.list_multipart_uploads()
    record("faults", {"fault": "SIGKILL of the mount during uploads",
                      "tried": len(intended), "succeeded": len(closed), "eio": 0,
                      "bytes_lost": lost, "half_written": half,
                      "recovered_logged": len(recovered), "in_flight": len(in_flight),
                      "leftover_uploads": len(uploads)})
    assert lost == 0 and half == 0
    assert uploads == []
    for name in in_flight:
        if not written[name]:
            continue
        # Acknowledged bytes: recovery must have uploaded them and said so, unless
        # the close() that uploads them had finished on the server when the mount
        # died, before the application heard back (then the file is whole).
        got = client.get_object(name)
        if got != intended[name]:
            assert f"'{name}'" in recovery_lines(log), f"no recovery line for {name}:\n{log}"
        assert got[:written[name]] == intended[name][:written[name]]
    for name in closed:
        assert (m.path / name).read_bytes() == intended[name]


def kill_when(server: ServerProcess, op: str, count: int, m: Mount,
              timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while server.count(op) < count:
        assert time.monotonic() < deadline, f"{op} never reached {count}"
        time.sleep(0.02)
    m.kill()


@pytest.mark.parametrize("phase", ["copy", "delete"])
def test_sigkill_during_directory_rename(mounter, fresh_server, phase) -> None:
    """A directory rename copies every key before deleting any: killed in either
    phase, no file is lost (each is whole under the old name, the new, or both),
    and the next mount finishes the rename: each is under the new name only."""
    client = make_client(fresh_server, fresh_server.bucket)
    files = {f"src/sub{i % 3}/f{i}": version(f"f{i}", i, 2000 + i) for i in range(120)}
    for key, data in files.items():
        client.put_object(key, data)
    m = mounter(server=fresh_server, bucket_name=fresh_server.bucket)
    os.listdir(m.path / "src")
    fresh_server.reset_stats()
    if phase == "copy":
        fresh_server.set_faults("PutObjectCopy", latency_ms=100)
    else:
        fresh_server.set_faults("DeleteMultipleObjects", latency_ms=3000)
    mover = threading.Thread(target=lambda: _quiet(os.rename, m.path / "src", m.path / "dst"),
                             daemon=True)
    mover.start()
    if phase == "copy":
        kill_when(fresh_server, "PutObjectCopy", 40, m)
    else:
        kill_when(fresh_server, "DeleteMultipleObjects", 1, m)
        # The server holds the DELETE it received before the kill for its latency,
        # then carries it out, as a real one would: let it land, so the keys do not
        # go while the restarted mount reads them below.
        time.sleep(3.5)
    mover.join(30)
    fresh_server.clear_faults()
    m.start()
    lost = 0
    for key, data in files.items():
        rel = key[len("src/"):]
        copies = []
        for tree in ("src", "dst"):
            try:
                copies.append(client.get_object(f"{tree}/{rel}"))
            except Exception:  # noqa: BLE001 - not in this tree
                pass
        if not copies or any(c != data for c in copies):
            lost += len(data)
    # What survives is readable through the mount.
    for tree in ("src", "dst"):
        if (m.path / tree).exists():
            for sub in os.listdir(m.path / tree):
                for name in os.listdir(m.path / tree / sub):
                    assert parse((m.path / tree / sub / name).read_bytes()) is not None
    record("faults", {"fault": f"SIGKILL during a directory rename ({phase} phase)",
                      "tried": len(files), "succeeded": len(files) if not lost else 0,
                      "eio": 0, "bytes_lost": lost, "half_written": 0})
    assert lost == 0
    assert sorted(o.key for o in client.list_objects().contents) == \
        sorted(f"dst/{key[len('src/'):]}" for key in files)
    assert client.list_multipart_uploads() == []


def _quiet(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass  # the mount died under it: that is the point


def test_sigkill_during_multipart_complete(mounter, fresh_server) -> None:
    """Killed while CompleteMultipartUpload is in flight: after the next mount the
    object is whole (old or new), recovery is logged, no upload is left."""
    client = make_client(fresh_server, fresh_server.bucket)
    old = version("big", 0, 3000)
    client.put_object("big", old)
    m = mounter(["multipart_size=1"], server=fresh_server, bucket_name=fresh_server.bucket)
    new = version("big", 1, 3 * MiB + 5)
    fresh_server.reset_stats()
    fresh_server.set_faults("CompleteMultipartUpload", latency_ms=1500)
    writer = threading.Thread(target=lambda: _quiet((m.path / "big").write_bytes, new),
                              daemon=True)
    writer.start()
    kill_when(fresh_server, "CompleteMultipartUpload", 1, m)
    writer.join(30)
    time.sleep(2)  # the server finishes the request it was holding
    fresh_server.clear_faults()
    m.start()
    got = client.get_object("big")
    assert got in (old, new), "the object is torn"
    assert client.list_multipart_uploads() == []
    assert (m.path / "big").read_bytes() == got
    log = recovery_lines(m.log())
    assert log, "recovery left no trace in the log"
    preserved = list((m.cache_dir / "recovered").rglob("*")) \
        if (m.cache_dir / "recovered").exists() else []
    record("faults", {"fault": "SIGKILL during CompleteMultipartUpload", "tried": 1,
                      "succeeded": int(got == new), "eio": 0, "bytes_lost": 0,
                      "half_written": 0, "kept_in_recovered": len(preserved)})
    # The upload did complete with exactly the staged bytes: recovery must see that
    # and not file the staged copy away as a conflict with "someone else".
    assert got == new and not any(p.is_file() for p in preserved), log


def test_sigkill_then_a_conflicting_change_keeps_both(mounter, fresh_server) -> None:
    """Unsent data of a killed mount whose object someone else replaced meanwhile
    (same size, other bytes): recovery must not overwrite theirs, and must keep
    ours aside and say where."""
    client = make_client(fresh_server, fresh_server.bucket)
    m = mounter(server=fresh_server, bucket_name=fresh_server.bucket)
    ours, theirs = version("x", 1, 70 * KiB), version("x", 2, 70 * KiB)
    assert len(ours) == len(theirs)
    fd = os.open(m.path / "x", os.O_WRONLY | os.O_CREAT, 0o644)
    assert os.write(fd, ours) == len(ours)
    m.kill()
    _quiet(os.close, fd)
    client.put_object("x", theirs)
    m.start()
    assert client.get_object("x") == theirs
    kept = [p for p in (m.cache_dir / "recovered").rglob("x") if p.is_file()]
    assert [p.read_bytes() for p in kept] == [ours]
    assert str(kept[0]) in m.log()
    record("faults", {"fault": "SIGKILL, then another client replaced the object",
                      "tried": 1, "succeeded": 1, "eio": 0, "bytes_lost": 0,
                      "half_written": 0, "kept_in_recovered": len(kept)})


# -- after an upload failed ------------------------------------------------------------


def fail_upload(m: Mount, server: ServerProcess, name: str, data: bytes) -> None:
    """Write ``name`` while every PUT fails: close() reports EIO and the data stays
    in the cache. Waits until the kernel's asynchronous release has arrived."""
    server.set_faults("PutObject", error_rate=1.0)
    try:
        with pytest.raises(OSError) as e:
            (m.path / name).write_bytes(data)
        assert e.value.errno == errno.EIO
        wait_released(m, name)
    finally:
        server.clear_faults()


def wait_released(m: Mount, name: str) -> None:
    """Wait for the kernel's asynchronous release of ``name`` after a failed close."""
    deadline = time.monotonic() + 10
    while f"'{name}' was released with changes not uploaded" not in m.log():
        assert time.monotonic() < deadline, "the file was never released"
        time.sleep(0.05)


def keys(client) -> list[str]:
    return sorted(o.key for o in client.list_objects().contents)


def test_unsent_file_stays_listed_and_unlink_discards_it(mounter, cos_server, client) -> None:
    """A file whose upload failed stays visible (its data waits in the cache);
    deleting it must also drop that data, or the next mount's recovery uploads it
    and the deleted file comes back."""
    m = mounter(["retries=0"])
    fail_upload(m, cos_server, "x", b"never acknowledged")
    assert os.listdir(m.path) == ["x"]
    assert (m.path / "x").read_bytes() == b"never acknowledged"
    os.unlink(m.path / "x")
    m.remount()
    assert os.listdir(m.path) == [] and keys(client) == []


def test_reading_an_unsent_file_leaves_its_upload_alone(mounter, cos_server, client) -> None:
    """A reader of a file whose upload failed reads it from the cache, and its close()
    has nothing of its own to send: it neither retries that upload nor reports its
    failure. The data waits for the next mount (or a writer's close or fsync)."""
    m = mounter(["retries=0"])
    fail_upload(m, cos_server, "x", b"unsent")
    cos_server.set_faults("PutObject", error_rate=1.0)
    try:
        assert (m.path / "x").read_bytes() == b"unsent"  # the close raised EIO before
    finally:
        cos_server.clear_faults()
    assert keys(client) == []
    m.remount()
    assert client.get_object("x") == b"unsent"


def test_rename_of_an_unsent_file_moves_its_data(mounter, cos_server, client) -> None:
    """Renaming a file (or its directory) whose upload failed uploads it under the
    new name; a file renamed over one with unsent data replaces that data."""
    m = mounter(["retries=0"])
    (m.path / "d").mkdir()
    fail_upload(m, cos_server, "x", b"x data")
    fail_upload(m, cos_server, "d/in", b"in data")
    (m.path / "old").write_bytes(b"old")
    fail_upload(m, cos_server, "old", b"old, unsent")
    (m.path / "new").write_bytes(b"new")
    os.rename(m.path / "x", m.path / "y")
    os.rename(m.path / "d", m.path / "e")
    os.rename(m.path / "new", m.path / "old")
    m.remount()
    assert sorted(os.listdir(m.path)) == ["e", "old", "y"]
    assert keys(client) == ["d/", "e/in", "old", "y"] or keys(client) == ["e/", "e/in", "old",
                                                                          "y"]
    assert client.get_object("y") == b"x data"
    assert client.get_object("e/in") == b"in data"
    assert client.get_object("old") == b"new"


def test_rename_of_an_unsendable_file_fails_and_changes_nothing(mounter, sdk, bucket,
                                                                client) -> None:
    """An archived object edited in place cannot be uploaded (its base cannot be
    read): renaming it is EACCES, not a rename that only exists until the next
    mount."""
    sdk.put_object(Bucket=bucket, Key="cold", Body=b"frozen", StorageClass="ARCHIVE")
    m = mounter()
    fd = os.open(m.path / "cold", os.O_WRONLY)
    os.pwrite(fd, b"X", 2)
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EACCES
    wait_released(m, "cold")
    with pytest.raises(OSError) as e:
        os.rename(m.path / "cold", m.path / "moved")
    assert e.value.errno == errno.EACCES
    assert os.listdir(m.path) == ["cold"] and keys(client) == ["cold"]


# -- the cache disk -----------------------------------------------------------------


@pytest.fixture
def small_cache(tmp_path: Path):
    """A 20 MiB tmpfs where the mount named "mnt" keeps its cache."""
    cache = tmp_path / "mnt-cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(cache)],
                   check=True)
    yield cache
    subprocess.run(["umount", "-l", str(cache)], check=False)


def journal_ok(cache: Path) -> None:
    # mode=rw: a journal that is not there fails, rather than being made empty here.
    db = sqlite3.connect(f"file:{cache / 'journal.sqlite'}?mode=rw", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


def test_cache_disk_full(mounter, fresh_server, small_cache) -> None:
    """ENOSPC from write() with a log line that says why; what was accepted before
    stays; the mount works again once space is back; the journal stays sound."""
    client = make_client(fresh_server, fresh_server.bucket)
    m = mounter(["multipart_size=1"], server=fresh_server, bucket_name=fresh_server.bucket)
    first = version("first", 0, 5 * MiB)
    (m.path / "first").write_bytes(first)
    big = version("big", 0, 40 * MiB)
    accepted = 0
    fd = os.open(m.path / "big", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as e:
            for pos in range(0, len(big), MiB):
                accepted += timed(lambda pos=pos: os.write(fd, big[pos:pos + MiB]),
                                  OP_TIMEOUT, "write")
        assert e.value.errno == errno.ENOSPC
    finally:
        timed(lambda: os.close(fd), OP_TIMEOUT, "close")
    assert 0 < accepted < len(big)
    # Closing uploaded what write() accepted: nothing accepted is lost.
    assert client.get_object("big") == big[:accepted]
    assert client.get_object("first") == first
    # Space comes back once the closed file's clean copy is evicted.
    later = version("later", 0, 5 * MiB)
    (m.path / "later").write_bytes(later)
    assert client.get_object("later") == later
    # Someone else fills the disk: a small write is refused, then works again.
    filler = small_cache / "filler"
    with open(filler, "wb") as f, pytest.raises(OSError):
        while True:
            f.write(bytes(MiB))
    with pytest.raises(OSError) as e:
        (m.path / "small").write_bytes(version("small", 0, 300 * KiB))
    assert e.value.errno == errno.ENOSPC
    # The refused create leaves no phantom name behind.
    assert "small" not in os.listdir(m.path)
    filler.unlink()
    (m.path / "small").write_bytes(version("small", 1, 300 * KiB))
    assert client.get_object("small") == version("small", 1, 300 * KiB)
    assert m.unmount() == 0
    journal_ok(m.cache_dir)
    log = m.log()
    full_lines = [ln for ln in log.splitlines()
                  if " WARNING " in ln and "cache directory" in ln and "full" in ln]
    record("faults", {"fault": "cache disk full (20 MiB tmpfs)", "tried": 5,
                      "succeeded": 3, "eio": 0, "other_errors": {"ENOSPC": 2},
                      "bytes_lost": 0, "half_written": 0})
    assert full_lines, f"no log line says the cache is full:\n{log[-3000:]}"


def fill(path: Path) -> None:
    """Write zeros to ``path`` until its filesystem is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(bytes(64 * KiB))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:  # the last few bytes, one page at a time
                os.write(f.fileno(), bytes(4096))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_disk_full_mid_log_record_loses_nothing(mounter, fresh_server, small_cache) -> None:
    """The extent log gets one record per write(). When the disk fills just as a
    record crosses into a new page, write(2) stores part of it: that torn record
    must not end the replay early and drop the writes acknowledged after it."""
    client = make_client(fresh_server, fresh_server.bucket)
    m = mounter(server=fresh_server, bucket_name=fresh_server.bucket)
    fd = os.open(m.path / "edits", os.O_RDWR | os.O_CREAT, 0o644)
    for _ in range(195):  # 195 records of 21 bytes: 4095 bytes, 1 short of a page
        assert os.pwrite(fd, b"a", 0) == 1
    logs = list((m.cache_dir / "staging").glob("*.log"))
    assert [p.stat().st_size for p in logs] == [195 * 21]
    filler = small_cache / "filler"
    fill(filler)
    try:
        os.pwrite(fd, b"b", 0)  # its record does not fit: refused, or stored whole
        accepted_b = True
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
        accepted_b = False
    filler.unlink()
    assert os.pwrite(fd, b"after", 5000) == 5
    m.crash(fd)  # acknowledged, not uploaded: only the journal and the log know it
    m.start()
    got = client.get_object("edits")
    assert got[5000:] == b"after", "a write acknowledged after the disk filled was lost"
    # A refused write may leave its bytes where the file already held unsent data
    # (the writer's documented trade-off: data lands before its log record).
    assert got[:1] == b"b" if accepted_b else got[:1] in (b"a", b"b")
    record("faults", {"fault": "cache disk full in the middle of a log record",
                      "tried": 197, "succeeded": 196 + accepted_b,
                      "other_errors": {} if accepted_b else {"ENOSPC": 1}, "eio": 0,
                      "bytes_lost": 0, "half_written": 0})


@pytest.fixture
def ext4_cache(tmp_path: Path):
    """A 64 MiB ext4 filesystem (loop device, errors=remount-ro) where the mount
    named "mnt" keeps its cache; ``go_read_only()`` makes the kernel turn it
    read-only the way a failing disk does."""
    image, cache = tmp_path / "cache.img", tmp_path / "mnt-cache"
    cache.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(cache)],
                   check=True)
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(cache)], check=True,
                            capture_output=True, text=True).stdout.strip()

    def go_read_only() -> None:
        Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("1")

    def repair() -> None:
        """Unmount, fsck, mount read-write again."""
        subprocess.run(["umount", str(cache)], check=True)
        subprocess.run(["e2fsck", "-p", "-f", str(image)], check=False, capture_output=True)
        subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(cache)],
                       check=True)

    go_read_only.repair = repair  # type: ignore[attr-defined]
    yield go_read_only
    subprocess.run(["umount", "-l", str(cache)], check=False)


def test_cache_disk_turns_read_only(mounter, fresh_server, ext4_cache) -> None:
    """The cache filesystem goes read-only under a running mount: new writes get
    EROFS or EIO (with a warning in the log), reads and what was uploaded before
    go on, the unmount completes, and after a repair the journal is sound."""
    client = make_client(fresh_server, fresh_server.bucket)
    m = mounter(server=fresh_server, bucket_name=fresh_server.bucket)
    before = version("before", 0, 200 * KiB)
    (m.path / "before").write_bytes(before)
    fd = os.open(m.path / "open", os.O_WRONLY | os.O_CREAT, 0o644)
    ext4_cache()
    outcomes: dict[str, str] = {}
    for what, op in {"create": lambda: (m.path / "new").write_bytes(b"new"),
                     "write": lambda: os.write(fd, b"more")}.items():
        with pytest.raises(OSError) as e:
            timed(op, OP_TIMEOUT, what)
        assert e.value.errno in (errno.EROFS, errno.EIO), (what, e.value)
        outcomes[what] = errno.errorcode[e.value.errno]
    _quiet(os.close, fd)
    assert (m.path / "before").read_bytes() == before
    warned = [ln for ln in m.log().splitlines() if " WARNING " in ln and "cache" in ln]
    assert warned, m.log()[-3000:]
    assert timed(m.unmount, OP_TIMEOUT, "unmount") == 0, m.log()[-3000:]
    assert "Traceback" not in m.log()
    ext4_cache.repair()
    journal_ok(m.cache_dir)
    m.start()
    assert client.get_object("before") == before
    assert "new" not in os.listdir(m.path)
    record("faults", {"fault": "cache disk turns read-only (ext4 error)", "tried": 3,
                      "succeeded": 1, "eio": sum(v == "EIO" for v in outcomes.values()),
                      "other_errors": {"EROFS": sum(v == "EROFS" for v in outcomes.values())},
                      "bytes_lost": 0, "half_written": 0})


def test_data_accepted_before_the_cache_disk_failed_is_uploaded(mounter, fresh_server,
                                                               ext4_cache) -> None:
    """Bytes write() accepted before the cache disk went read-only are still readable
    in the staging file: close() should upload them (the journal, on the failed
    disk, can no longer protect them anyway)."""
    client = make_client(fresh_server, fresh_server.bucket)
    m = mounter(server=fresh_server, bucket_name=fresh_server.bucket)
    accepted = version("inflight", 0, 300 * KiB)
    fd = os.open(m.path / "inflight", os.O_WRONLY | os.O_CREAT, 0o644)
    assert os.write(fd, accepted) == len(accepted)
    ext4_cache()
    _quiet(os.close, fd)
    assert client.get_object("inflight") == accepted
