"""The data path through a real FUSE mount of the local server: what reads and writes
cost in requests, byte-for-byte integrity with real syscalls, crash recovery of a
killed mount, faults, and the memory bound."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import random
import resource
import sqlite3
import stat
import subprocess
import threading
import time

import pytest
from conftest import make_client
from datapath_util import KiB, MiB, md5, op_stat


def test_first_4k_of_large_object_costs_one_small_get(mounter, cos_server, client) -> None:
    data = random.randbytes(32 * MiB)
    client.put_object("large.bin", data)
    m = mounter()
    path = m.path / "large.bin"
    assert path.stat().st_size == len(data)
    cos_server.reset_stats()
    fd = os.open(path, os.O_RDONLY)  # unbuffered: Python would read st_blksize bytes
    try:
        assert os.read(fd, 4096) == data[:4096]
    finally:
        os.close(fd)
    stats = cos_server.stats()["GetObject"]
    assert stats["count"] == 1
    assert stats["bytes_out"] <= 256 * KiB
    # A buffered read of the first 4 KiB: the kernel (its read-ahead raised to 2 MiB
    # by the mount) asks for about 4 MiB (its first window and the next); the mount's
    # own read-ahead starts only past what the kernel reads ahead by itself.
    cos_server.reset_stats()
    with open(path, "rb") as f:
        assert f.read(4096) == data[:4096]
    assert op_stat(cos_server, "GetObject", "bytes_out") <= 5 * MiB


def test_large_sequential_write_uploads_parts_concurrently(mounter, cos_server,
                                                           client) -> None:
    m = mounter(["multipart_size=1"])
    data = random.randbytes(24 * MiB + 5)
    cos_server.reset_stats()
    with open(m.path / "seq.bin", "wb") as f:
        for pos in range(0, len(data), MiB):
            f.write(data[pos:pos + MiB])
    stats = cos_server.stats()
    assert stats["UploadPart"]["count"] == 25
    assert stats["UploadPart"]["max_concurrent"] > 1
    assert stats["CompleteMultipartUpload"]["count"] == 1
    assert md5(client.get_object("seq.bin")) == md5(data)


def test_append_to_appendable_object_is_one_append(mounter, cos_server, client) -> None:
    client.append_object("app.log", 0, b"line 1\n")
    m = mounter()
    with open(m.path / "app.log", "ab") as f:
        cos_server.reset_stats()
        f.write(b"line 2\n")
        f.write(b"line 3\n")
    assert op_stat(cos_server, "AppendObject") == 1
    assert op_stat(cos_server, "PutObject") == 0
    assert client.get_object("app.log") == b"line 1\nline 2\nline 3\n"
    assert client.head_object("app.log").appendable


def test_one_byte_edit_in_64mb_object_copies_parts(mounter, cos_server, client) -> None:
    data = bytearray(random.randbytes(64 * MiB))
    client.put_object("big.bin", bytes(data))
    m = mounter()  # 8 MiB parts
    cos_server.reset_stats()
    with open(m.path / "big.bin", "r+b") as f:
        f.seek(40 * MiB + 7)
        f.write(b"#")
    data[40 * MiB + 7] = ord("#")
    stats = cos_server.stats()
    assert stats["UploadPartCopy"]["count"] == 7
    assert stats["UploadPart"]["count"] == 1
    assert "PutObject" not in stats
    assert stats["GetObject"]["bytes_out"] <= 8 * MiB + 256 * KiB
    assert md5(client.get_object("big.bin")) == md5(bytes(data))


@pytest.mark.parametrize("size", [48 * MiB, pytest.param(1 << 30, marks=pytest.mark.slow)],
                         ids=["48MiB", "1GiB"])
def test_big_file_round_trip_and_random_reads(mounter, client, tmp_path, size) -> None:
    src = tmp_path / "src.bin"
    rng = random.Random(size)
    with open(src, "wb") as f:
        block = rng.randbytes(4 * MiB + 3)
        for pos in range(0, size, len(block)):
            f.write(block[:size - pos])
    m = mounter(["multipart_size=4"])
    with open(src, "rb") as fin, open(m.path / "big.bin", "wb") as fout:
        while chunk := fin.read(MiB):
            fout.write(chunk)
    m.remount()  # nothing from the kernel's page cache
    reference = src.read_bytes() if size <= 64 * MiB else None
    h_local, h_mount = _file_md5(src), _file_md5(m.path / "big.bin")
    assert h_local == h_mount
    fd = os.open(m.path / "big.bin", os.O_RDONLY)
    ref = os.open(src, os.O_RDONLY)
    try:
        for _ in range(200):
            off, n = rng.randrange(size), rng.randrange(1, 256 * KiB)
            assert os.pread(fd, n, off) == os.pread(ref, n, off)
    finally:
        os.close(fd)
        os.close(ref)
    if reference is not None:
        assert md5(client.get_object("big.bin")) == md5(reference)


def _file_md5(path) -> str:
    import hashlib

    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def test_sparse_truncate_and_random_writes(mounter, client) -> None:
    m = mounter()
    p = m.path / "sparse.bin"
    with open(p, "wb") as f:
        f.seek(5 * MiB)
        f.write(b"end")
        f.seek(100)
        f.write(b"start")
    expected = bytearray(5 * MiB + 3)
    expected[100:105] = b"start"
    expected[-3:] = b"end"
    assert client.get_object("sparse.bin") == expected
    os.truncate(p, 2 * MiB)
    os.truncate(p, 3 * MiB)
    expected = expected[:2 * MiB] + bytes(MiB)
    rng = random.Random(3)
    with open(p, "r+b") as f:
        for _ in range(50):
            off, data = rng.randrange(4 * MiB), rng.randbytes(rng.randrange(1, 9000))
            f.seek(off)
            f.write(data)
            if off > len(expected):
                expected += bytes(off - len(expected))
            expected[off:off + len(data)] = data
    assert p.read_bytes() == expected
    assert client.get_object("sparse.bin") == expected


def test_calls_without_a_handler_fail_cleanly_or_fall_back(mounter, client) -> None:
    """What docs/SEMANTICS.md says of fallocate, copy_file_range, SEEK_HOLE and
    locks: the kernel answers them (or refuses) without the mount's help."""
    m = mounter()
    p = m.path / "f.bin"
    p.write_bytes(b"abc")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    fd = os.open(p, os.O_RDWR)
    try:
        for mode in (0, 1, 3):  # plain, KEEP_SIZE, PUNCH_HOLE | KEEP_SIZE
            assert libc.fallocate(fd, mode, 0, 4096) == -1
            assert ctypes.get_errno() == errno.EOPNOTSUPP
        os.posix_fallocate(fd, 0, MiB)  # glibc writes instead
        assert os.lseek(fd, 10, os.SEEK_DATA) == 10
        assert os.lseek(fd, 10, os.SEEK_HOLE) == MiB  # all of it reads as data
        fcntl.flock(fd, fcntl.LOCK_EX)
        other = subprocess.run(["flock", "--nonblock", str(p), "true"], check=False)
        assert other.returncode == 1  # held by this process, on this machine
        copy = os.open(m.path / "copy.bin", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            assert os.copy_file_range(fd, copy, 2 * MiB, 0) == MiB
        finally:
            os.close(copy)
    finally:
        os.close(fd)
    assert client.get_object("f.bin") == b"abc" + bytes(MiB - 3)
    assert client.get_object("copy.bin") == b"abc" + bytes(MiB - 3)


def test_sqlite_database_and_mmap_work(mounter, client) -> None:
    m = mounter()
    db = sqlite3.connect(m.path / "test.db")
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    with db:
        db.executemany("INSERT INTO t VALUES (?, ?)", ((i, f"value {i}" * 20)
                                                       for i in range(3000)))
    with db:
        db.execute("UPDATE t SET v = 'changed' WHERE k % 7 = 0")
    db.close()
    p = m.path / "mapped.bin"
    p.write_bytes(bytes(64 * KiB))
    with open(p, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        mm[1000:1005] = b"mmap!"
        mm.flush()
    m.remount()
    db = sqlite3.connect(m.path / "test.db")
    assert db.execute("SELECT count(*), sum(v = 'changed') FROM t").fetchone() == (3000, 429)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    assert client.get_object("mapped.bin")[1000:1005] == b"mmap!"


def test_a_reader_of_a_file_being_written_never_uploads_it(mounter, client) -> None:
    """Another program reading a file while it is written (``cat``, ``tail``, a
    backup) shares the staged bytes; its close must not send them: the object
    would be the half-written file. Only the writer's close uploads."""
    m = mounter()
    client.put_object("f", b"old version")
    fd = os.open(m.path / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"first half, ")
        assert (m.path / "f").read_bytes() == b"first half, "
        assert client.get_object("f") == b"old version"
        os.write(fd, b"second half")
    finally:
        os.close(fd)
    assert client.get_object("f") == b"first half, second half"


def test_the_mount_lifts_its_open_files_limit(mounter) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4096:
        pytest.skip(f"the hard open-files limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by the mount
    try:
        m = mounter()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert resource.prlimit(m.proc.pid, resource.RLIMIT_NOFILE) == (hard, hard)


def test_out_of_descriptors_the_mount_gives_up_its_idle_copies(mounter, client) -> None:
    """A mount held to 1,024 descriptors by its hard limit: after 300 files were
    written and closed (their staged copies kept, two descriptors each), 350 more
    can still be written at once."""
    m = mounter()
    resource.prlimit(m.proc.pid, resource.RLIMIT_NOFILE, (1024, 1024))
    (m.path / "d").mkdir()
    for batch, count in (("a", 300), ("b", 350)):
        fds = [os.open(m.path / "d" / f"{batch}{i}", os.O_WRONLY | os.O_CREAT, 0o644)
               for i in range(count)]
        try:
            for i, fd in enumerate(fds):
                os.write(fd, b"%s%d" % (batch.encode(), i))
        finally:
            for fd in fds:
                os.close(fd)
    assert client.get_object("d/b349") == b"b349"
    assert "out of file descriptors" in m.log()


def test_killed_mount_uploads_accepted_writes_on_remount(mounter, cos_server, client) -> None:
    m = mounter(["multipart_size=1"])
    data = random.randbytes(5 * MiB + 11)
    fd = os.open(m.path / "unflushed.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    for pos in range(0, len(data), 128 * KiB):
        assert os.write(fd, data[pos:pos + 128 * KiB]) == len(data[pos:pos + 128 * KiB])
    m.crash(fd)  # SIGKILL: no flush, no unmount
    assert "unflushed.bin" not in [o.key for o in client.list_objects().contents]
    m.start()  # the same cache directory: recovery runs before serving
    assert md5(client.get_object("unflushed.bin")) == md5(data)
    assert (m.path / "unflushed.bin").read_bytes() == data
    assert client.list_multipart_uploads() == []


def test_killed_mount_recovers_a_new_file_with_its_mode(mounter, client) -> None:
    # The journal row of a new file must carry the mode it was created with: a
    # crash before its first close must not bring a script back as 0644.
    m = mounter()
    fd = os.open(m.path / "tool.sh", os.O_WRONLY | os.O_CREAT, 0o750)
    assert os.write(fd, b"#!/bin/sh\n") == 10
    m.crash(fd)
    m.start()
    assert client.head_object("tool.sh").metadata["mode"] == str(stat.S_IFREG | 0o750)
    assert stat.S_IMODE((m.path / "tool.sh").stat().st_mode) == 0o750


def _renamed_before_a_crash(mounter, server, src: str, dst: str, data: bytes,
                            options: list[str] | None = None):
    """A mount of ``server`` that wrote ``src`` and renamed it to ``dst`` while the
    server refuses every DELETE (503, retried): the background delete of the old
    key is still under way when the test crashes the mount. Returns the mount and
    a client of its bucket."""
    m = mounter(options, server=server, bucket_name=server.bucket)
    (m.path / src).write_bytes(data)
    for op in ("DeleteObject", "DeleteMultipleObjects"):
        server.set_faults(op, error_rate=1.0, error_status=503)
    os.rename(m.path / src, m.path / dst)
    return m, make_client(server, server.bucket)


def test_killed_mount_finishes_a_rename_on_remount(mounter, fresh_server) -> None:
    # git's commit of its index: write index.lock, rename it over index. Left
    # behind by a crash, index.lock stops every later git command.
    m, client = _renamed_before_a_crash(mounter, fresh_server, "index.lock", "index",
                                        b"new index")
    m.crash()
    fresh_server.clear_faults()
    m.start()
    assert [o.key for o in client.list_objects().contents] == ["index"]
    assert sorted(os.listdir(m.path)) == ["index"]
    assert (m.path / "index").read_bytes() == b"new index"


def test_killed_mount_uploads_a_new_file_under_a_renamed_name(mounter, fresh_server
                                                              ) -> None:
    m, client = _renamed_before_a_crash(mounter, fresh_server, "log", "log.1", b"old")
    fd = os.open(m.path / "log", os.O_WRONLY | os.O_CREAT, 0o644)
    assert os.write(fd, b"new") == 3
    m.crash(fd)
    fresh_server.clear_faults()
    m.start()
    assert client.get_object("log") == b"new"
    assert client.get_object("log.1") == b"old"
    assert "recovered/" not in m.log()


def test_a_renamed_name_another_client_took_is_kept(mounter, fresh_server) -> None:
    m, client = _renamed_before_a_crash(mounter, fresh_server, "a", "b", b"mine")
    m.crash()
    fresh_server.clear_faults()
    client.put_object("a", b"theirs")  # before the next mount looks
    m.start()
    assert client.get_object("a") == b"theirs"
    assert client.get_object("b") == b"mine"
    assert "another object took its name" in m.log()


def test_a_rename_whose_delete_keeps_failing_never_shows_the_old_name(
        mounter, fresh_server) -> None:
    """The store fails the DELETE of the old key past the retries: the mount tries
    again in the background, and until it succeeds the old name gives EIO, never
    its old bytes (a `rename` that returned must not be undone)."""
    m, client = _renamed_before_a_crash(mounter, fresh_server, "a", "b", b"data",
                                        ["stat_cache_expire=0", "retries=1"])
    for look in (lambda: os.stat(m.path / "a"), lambda: os.listdir(m.path)):
        with pytest.raises(OSError) as exc:
            look()
        assert exc.value.errno == errno.EIO
    assert (m.path / "b").read_bytes() == b"data"
    fresh_server.clear_faults()
    deadline = time.monotonic() + 30
    while [o.key for o in client.list_objects().contents] != ["b"]:
        assert time.monotonic() < deadline, "the mount never tried the DELETE again"
        time.sleep(0.2)
    assert os.listdir(m.path) == ["b"]
    assert "trying again in" in m.log()


def _keys(client, prefix: str = "") -> list[str]:
    return sorted(o.key for o in client.list_objects(prefix=prefix).contents)


def _tree(m, top: str) -> dict[str, bytes]:
    """A directory of 30 files and a subdirectory, written through mount ``m``."""
    files = {f"f{i:02}": random.randbytes(100 + i) for i in range(30)}
    files["sub/deep"] = b"deep"
    (m.path / top / "sub").mkdir(parents=True)
    for name, data in files.items():
        (m.path / top / name).write_bytes(data)
    return files


def _moved_keys(files: dict[str, bytes], top: str) -> list[str]:
    return sorted([f"{top}/", f"{top}/sub/", *(f"{top}/{n}" for n in files)])


def _rename_in_background(m, src: str, dst: str) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def move() -> None:
        try:
            os.rename(m.path / src, m.path / dst)
        except OSError as exc:
            box["error"] = exc

    mover = threading.Thread(target=move)
    mover.start()
    return mover, box


def _crash_midway_through_moving(m, server, client, src: str, dst: str,
                                 total: int) -> None:
    """Rename ``src`` (``total`` keys) to ``dst`` through mount ``m`` and kill the
    mount when some of the copies, not all, are made."""
    server.set_faults("PutObjectCopy", latency_ms=150)  # two at a time: 2.5 s
    mover, _ = _rename_in_background(m, src, dst)  # the mount dies under it
    deadline = time.monotonic() + 30
    while len(_keys(client, f"{dst}/")) < 4:
        assert time.monotonic() < deadline, "the copies never started"
        time.sleep(0.05)
    m.crash()
    mover.join()
    assert len(_keys(client, f"{dst}/")) < total  # cut short midway
    server.clear_faults()


def test_killed_mount_finishes_a_directory_rename_on_remount(mounter, fresh_server) -> None:
    """Killed while it copies a directory's keys: the next mount copies the rest
    and deletes the old ones, so every file is under its new name only."""
    m = mounter(["max_requests=2"], server=fresh_server, bucket_name=fresh_server.bucket)
    client = make_client(fresh_server, fresh_server.bucket)
    files = _tree(m, "src")
    _crash_midway_through_moving(m, fresh_server, client, "src", "dst", len(files) + 2)
    m.start()
    assert _keys(client) == _moved_keys(files, "dst")
    assert sorted(os.listdir(m.path)) == ["dst"]
    for name, data in files.items():
        assert (m.path / "dst" / name).read_bytes() == data
    assert "finished 1 renames a crash cut short" in m.log()


def test_unsent_files_of_a_directory_rename_cut_short_go_up_under_the_new_name(
        mounter, fresh_server) -> None:
    """In write-back mode, files closed but not uploaded move along unsent: after a
    crash midway, the next mount uploads them under the new name, a changed file
    filling from the copy of its old object."""
    m = mounter(["max_requests=2", "writeback", "writeback_delay=60"],
                server=fresh_server, bucket_name=fresh_server.bucket)
    client = make_client(fresh_server, fresh_server.bucket)
    files = _tree(m, "src")
    os.sync()  # the tree is on the server (each file's write-back upload)
    m.remount()
    with open(m.path / "src" / "f00", "r+b") as f:  # a changed existing file
        f.seek(50)
        f.write(b"CHANGED")
    files["f00"] = files["f00"][:50] + b"CHANGED" + files["f00"][57:]
    files["new"] = b"a new file"
    (m.path / "src" / "new").write_bytes(files["new"])
    assert "src/new" not in _keys(client)  # unsent
    _crash_midway_through_moving(m, fresh_server, client, "src", "dst", len(files) + 1)
    m.start()
    assert _keys(client) == _moved_keys(files, "dst")
    for name, data in files.items():
        assert client.get_object(f"dst/{name}") == data, name
    assert "recovered/" not in m.log()


def test_a_directory_rename_whose_deletes_fail_is_done_and_survives_a_crash(
        mounter, fresh_server) -> None:
    """Every copy made, the store fails the DELETEs: the rename has happened (the
    old name is gone from the mount), and a crash before the DELETEs succeed is
    finished by the next mount."""
    m = mounter(["retries=1"], server=fresh_server, bucket_name=fresh_server.bucket)
    client = make_client(fresh_server, fresh_server.bucket)
    files = _tree(m, "src")
    for op in ("DeleteObject", "DeleteMultipleObjects"):
        fresh_server.set_faults(op, error_rate=1.0, error_status=503)
    os.rename(m.path / "src", m.path / "dst")
    assert (m.path / "dst" / "sub" / "deep").read_bytes() == b"deep"
    assert "src/f00" in _keys(client)  # not deleted yet
    m.crash()
    fresh_server.clear_faults()
    m.start()
    assert _keys(client) == _moved_keys(files, "dst")
    assert sorted(os.listdir(m.path)) == ["dst"]


def test_a_directory_rename_that_fails_leaves_it_where_it_was(mounter, client) -> None:
    """One key cannot be copied (archived): the rename fails with its errno, the
    copies made are deleted, the empty directory it was to replace stays, and
    once the cause is gone the same rename works."""
    m = mounter()
    files = _tree(m, "src")
    (m.path / "dst").mkdir()
    client.put_object("src/cold", b"frozen", storage_class="ARCHIVE")
    with pytest.raises(OSError) as exc:
        os.rename(m.path / "src", m.path / "dst")
    assert exc.value.errno == errno.EACCES
    assert sorted(os.listdir(m.path)) == ["dst", "src"]  # after the deletes
    assert os.listdir(m.path / "dst") == []
    assert _keys(client, "dst") == ["dst/"]
    assert "removing the" in m.log()
    client.delete_object("src/cold")
    os.rename(m.path / "src", m.path / "dst")
    assert sorted(os.listdir(m.path)) == ["dst"]
    assert _keys(client, "dst") == _moved_keys(files, "dst")


def _start_a_slow_move(m, server) -> tuple[threading.Thread, dict]:
    """Rename the directory ``src`` to ``dst`` through mount ``m`` in the
    background, each DELETE taking 1.5 s; returns once every copy is made and the
    DELETEs have begun (see _rename_in_background)."""
    server.reset_stats()
    for op in ("DeleteObject", "DeleteMultipleObjects"):
        server.set_faults(op, latency_ms=1500)
    mover, box = _rename_in_background(m, "src", "dst")
    _wait_for(server, "DeleteMultipleObjects", 1)
    return mover, box


def test_a_file_closed_while_its_directory_is_renamed_keeps_what_was_written(
        mounter, fresh_server) -> None:
    """A file open for writing inside a directory being renamed, closed between
    its copy and the DELETE of its old key: the close waits for the rename, and
    the file goes up under its new name (it went to the old key, which the
    rename then deleted, the new name keeping the bytes before)."""
    client = make_client(fresh_server, fresh_server.bucket)
    m = mounter(server=fresh_server, bucket_name=fresh_server.bucket)
    (m.path / "src").mkdir()
    with open(m.path / "src" / "open.txt", "wb") as f:
        f.write(b"first")
        f.flush()
        os.fsync(f.fileno())
        mover, box = _start_a_slow_move(m, fresh_server)
        f.write(b", then more")
    mover.join()
    assert box == {}
    assert _keys(client) == ["dst/", "dst/open.txt"]
    assert client.get_object("dst/open.txt") == b"first, then more"
    assert (m.path / "dst" / "open.txt").read_bytes() == b"first, then more"


def test_calls_inside_a_directory_being_renamed_wait_for_it(mounter, fresh_server) -> None:
    """A mkdir, a create and an unlink inside a directory whose rename is under
    way happen after it, under the new name: none is left under the old prefix,
    none is undone (the listing had missed the new ones, and the copy of the
    unlinked file brought it back)."""
    client = make_client(fresh_server, fresh_server.bucket)
    m = mounter(server=fresh_server, bucket_name=fresh_server.bucket)
    files = _tree(m, "src")
    # Calls on what is inside, as a process working in the directory makes them:
    # they name its inode, not the path the rename is changing.
    fd = os.open(m.path / "src", os.O_RDONLY | os.O_DIRECTORY)
    mover, box = _start_a_slow_move(m, fresh_server)
    try:
        os.mkdir("made", dir_fd=fd)
        os.unlink("f00", dir_fd=fd)
        new = os.open("new.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(new, b"new")
        os.close(new)
    finally:
        os.close(fd)
    mover.join()
    assert box == {}
    del files["f00"]
    assert _keys(client) == sorted([*_moved_keys(files, "dst"), "dst/made/", "dst/new.txt"])
    assert sorted(os.listdir(m.path / "dst")) == sorted(
        ["made", "new.txt", "sub", *(n for n in files if "/" not in n)])
    assert client.get_object("dst/new.txt") == b"new"


def _renaming_a_slow_appendable_log(mounter, server):
    """Rename an appendable object ``log`` to ``log.1`` in the background through a
    mount, each append answered a second after it is served: the copy is two
    appends (of 64 MiB and 1 KiB, downloaded first), and the next step waits for
    that answer. Returns the mount, a client, the data, the thread and the box
    that receives its error."""
    client = make_client(server, server.bucket)
    data = random.randbytes(64 * MiB + KiB)
    client.append_object("log", 0, data[:32 * MiB])
    client.append_object("log", 32 * MiB, data[32 * MiB:])
    m = mounter(server=server, bucket_name=server.bucket)
    assert (m.path / "log").stat().st_size == len(data)
    server.reset_stats()
    server.set_faults("AppendObject", answer_latency_ms=1000)
    mover, box = _rename_in_background(m, "log", "log.1")
    return m, client, data, mover, box


def _wait_for(server, op: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while server.count(op) < count:
        assert time.monotonic() < deadline, f"{op} never reached {count}"
        time.sleep(0.02)


def test_killed_mount_finishes_renaming_an_appendable_file(mounter, fresh_server) -> None:
    """An appendable object is renamed by appending it again under the new name:
    killed midway, the next mount appends it whole there (not leaving half of it)
    and deletes the old name."""
    m, client, data, mover, _ = _renaming_a_slow_appendable_log(mounter, fresh_server)
    # Killed once the first append has landed, while its answer is on the way: no
    # request of the dead mount can land later (and meet the recovery's appends).
    _wait_for(fresh_server, "AppendObject", 1)
    deadline = time.monotonic() + 30
    while "log.1" not in _keys(client):
        assert time.monotonic() < deadline, "the first append never landed"
        time.sleep(0.02)
    m.crash()
    mover.join()
    assert client.head_object("log.1").size == 64 * MiB  # half a copy
    fresh_server.clear_faults()
    m.start()
    assert _keys(client) == ["log.1"]
    assert client.head_object("log.1").appendable
    assert md5(client.get_object("log.1")) == md5(data)
    assert "finished 1 renames a crash cut short" in m.log()


def test_a_failed_rename_of_an_appendable_file_leaves_no_half_copy(mounter, fresh_server
                                                                    ) -> None:
    m, client, data, mover, box = _renaming_a_slow_appendable_log(mounter, fresh_server)
    _wait_for(fresh_server, "AppendObject", 1)
    # The download of the second part is refused once the first part is appended.
    fresh_server.set_faults("GetObject", error_rate=1.0, error_status=403)
    mover.join()
    assert box["error"].errno == errno.EACCES
    fresh_server.clear_faults()
    assert _keys(client) == ["log"]
    assert sorted(os.listdir(m.path)) == ["log"]
    m.remount()  # nothing is left for the next mount to finish
    assert _keys(client) == ["log"]
    assert md5((m.path / "log").read_bytes()) == md5(data)


def test_a_rename_of_an_appendable_file_that_failed_before_copying_changes_nothing(
        mounter, fresh_server) -> None:
    """The store refuses the DELETE that starts the copy of an appendable file over
    another: the rename fails, both files stay as they were, and the next mount
    has no rename to finish (finishing it would put the old file back, and take
    it for a copy of the renamed one)."""
    client = make_client(fresh_server, fresh_server.bucket)
    client.append_object("log", 0, b"appended\n")
    client.put_object("old", b"the file to replace")
    m = mounter(["retries=1"], server=fresh_server, bucket_name=fresh_server.bucket)
    assert sorted(os.listdir(m.path)) == ["log", "old"]
    fresh_server.set_faults("DeleteObject", error_rate=1.0, error_status=503)
    with pytest.raises(OSError) as exc:
        os.rename(m.path / "log", m.path / "old")
    assert exc.value.errno == errno.EIO
    fresh_server.clear_faults()
    m.remount()
    assert client.get_object("log") == b"appended\n"
    assert client.get_object("old") == b"the file to replace"
    assert "renames a crash cut short" not in m.log()


def test_faults_through_the_mount_keep_data_identical(mounter, fresh_server) -> None:
    client = make_client(fresh_server, fresh_server.bucket)
    # About 30 requests at a 20% error rate: the chance that none fails (and the
    # test proves nothing) is about 0.1%.
    data = random.randbytes(20 * MiB + 3)
    m = mounter(["multipart_size=1", "retries=10"], server=fresh_server,
                bucket_name=fresh_server.bucket)
    fresh_server.set_faults("*", error_rate=0.2)
    (m.path / "f.bin").write_bytes(data)
    m.remount()
    assert md5((m.path / "f.bin").read_bytes()) == md5(data)
    injected = sum(op.get("injected", 0) for op in fresh_server.stats().values())
    fresh_server.clear_faults()
    assert injected > 0
    assert md5(client.get_object("f.bin")) == md5(data)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.slow
def test_memory_stays_bounded_reading_2gb_and_writing_another(mounter, client,
                                                              tmp_path) -> None:
    size = 2 << 30
    block = random.randbytes(8 * MiB + 1)
    src = tmp_path / "pattern.bin"
    with open(src, "wb") as f:
        for pos in range(0, size, len(block)):
            f.write(block[:size - pos])
    with open(src, "rb") as f:
        client.put_object("read.bin", f)
    m = mounter()
    assert m.proc is not None
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_bytes(m.proc.pid))
            time.sleep(0.1)

    def read_it() -> None:
        with open(m.path / "read.bin", "rb") as f:
            while f.read(MiB):
                pass

    watcher = threading.Thread(target=watch)
    reader = threading.Thread(target=read_it)
    watcher.start()
    reader.start()
    with open(src, "rb") as fin, open(m.path / "written.bin", "wb") as fout:
        while chunk := fin.read(MiB):
            fout.write(chunk)
    reader.join()
    stop.set()
    watcher.join()
    print(f"mount RSS peak {peak / 2**20:.0f} MiB")  # shown with -s
    assert peak < 300 * 10**6, f"mount RSS peaked at {peak / 2**20:.0f} MiB"
    assert client.head_object("written.bin").size == size
