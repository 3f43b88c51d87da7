"""How many requests metadata-heavy work costs through a real mount, counted by the
local server, and that the cheaper paths still show exact attributes."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time

import pytest
from conftest import ServerProcess, fsync_dir


def ops(server: ServerProcess) -> dict[str, int]:
    return {op: v["count"] for op, v in server.stats().items() if v["count"]}


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


COSFS_FILE = {"mode": str(stat.S_IFREG | 0o640), "uid": "1234", "gid": "567",
              "mtime": "1600000000.5"}


def test_ls_l_is_one_list_and_a_head_per_object_with_exact_attributes(
        mounter, client, cos_server):
    n = 40
    for i in range(n):
        # 4 KiB: too large for a symlink, so the listing alone types it.
        client.put_object(f"ls/f{i:03d}", b"z" * 4096,
                          metadata=COSFS_FILE if i % 2 else None)
    m = mounter()
    cos_server.reset_stats()
    out = run("ls", "-ln", "--time-style=+%s", str(m.path / "ls")).splitlines()[1:]
    counts = ops(cos_server)
    assert counts.get("ListObjects", 0) <= 2  # the lookup of ls/, its listing
    assert counts.get("HeadObject", 0) <= n + 1
    assert set(counts) <= {"ListObjects", "HeadObject"}
    assert len(out) == n
    for i in range(n):
        st = os.lstat(m.path / "ls" / f"f{i:03d}")
        if i % 2:
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 567)
            assert st.st_mtime_ns == 1_600_000_000_500_000_000
        else:
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
                0o666 & ~0o022, os.getuid(), os.getgid())
    # ls -l printed what stat says (the metadata, not the listing's defaults).
    assert out[1].split()[:4] == ["-rw-r-----", "1", "1234", "567"]
    assert out[1].split()[5] == "1600000000"


def test_ls_l_sends_the_next_heads_before_it_reaches_them(mounter, client, cos_server):
    """The stat()s after a readdir fetch the following entries ahead, a window that
    doubles (32, 64, ...): the next window goes once a stat reaches past the middle
    of what was sent, so against a distant endpoint it is under way before ``ls
    -l`` gets there, not when it does."""
    for i in range(200):
        client.put_object(f"ls/f{i:03d}", b"z" * 4096)
    m = mounter()
    names = sorted(os.listdir(m.path / "ls"))
    cos_server.reset_stats()
    os.lstat(m.path / "ls" / names[0])
    time.sleep(0.5)
    assert ops(cos_server) == {"HeadObject": 33}  # its own and 32 ahead
    os.lstat(m.path / "ls" / names[10])  # inside the first half: nothing more
    time.sleep(0.5)
    assert ops(cos_server) == {"HeadObject": 33}
    os.lstat(m.path / "ls" / names[17])  # past it: the next 64
    time.sleep(0.5)
    assert ops(cos_server) == {"HeadObject": 97}
    for name in names:
        os.lstat(m.path / "ls" / name)
    time.sleep(0.5)
    assert ops(cos_server) == {"HeadObject": 200}


def test_find_sends_lists_only_and_stat_of_a_listed_directory_is_exact(
        mounter, client, cos_server):
    for a in range(3):
        for b in range(3):
            client.put_object(f"tree/d{a}/e{b}/empty", b"")
            client.put_object(f"tree/d{a}/e{b}/big", b"b" * 5000)
    # A directory with a marker carrying its mode.
    client.put_object("tree/d1/", b"", content_type="application/x-directory",
                      metadata={"mode": str(stat.S_IFDIR | 0o700), "uid": "42", "gid": "43"})
    m = mounter()
    cos_server.reset_stats()
    found = run("find", str(m.path / "tree")).split()
    counts = ops(cos_server)
    assert len(found) == 1 + 3 + 9 + 18
    # One HEAD for the cold lookup of tree (a 404: it is a directory) and one for
    # d1's marker; every other answer comes from LISTs, one per directory plus the
    # lookup's.
    assert counts.get("HeadObject", 0) <= 2
    assert counts.get("ListObjects", 0) <= 13 + 1
    st = os.stat(m.path / "tree" / "d1")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 42, 43)
    assert stat.S_IMODE(os.stat(m.path / "tree" / "d0").st_mode) == 0o755


def test_small_objects_are_typed_by_their_metadata_in_readdir(mounter, client):
    m = mounter()
    (m.path / "dir").mkdir()
    (m.path / "dir" / "file").write_bytes(b"x" * 10)
    os.symlink("file", m.path / "dir" / "link")
    client.put_object("dir/other", b"y" * 20)
    m.remount()
    assert run("find", str(m.path / "dir"), "-type", "l").split() == [
        str(m.path / "dir" / "link")]
    assert sorted(run("find", str(m.path / "dir"), "-type", "f").split()) == [
        str(m.path / "dir" / "file"), str(m.path / "dir" / "other")]
    assert os.readlink(m.path / "dir" / "link") == "file"


def test_negative_lookups_in_a_fresh_listing_cost_nothing(mounter, client, cos_server):
    client.put_object("d/a", b"")
    m = mounter()
    os.listdir(m.path / "d")
    (m.path / "d" / "b").write_bytes(b"1")
    os.rename(m.path / "d" / "b", m.path / "d" / "c")
    cos_server.reset_stats()
    for name in ("x", "y", "b", ".c.tmp"):
        assert not (m.path / "d" / name).exists()
    assert (m.path / "d" / "c").read_bytes() == b"1"
    counts = ops(cos_server)
    assert counts.get("HeadObject", 0) == 0 and counts.get("ListObjects", 0) == 0


def test_lookups_after_the_listing_expired_share_one_list(mounter, client, cos_server):
    """Once a small directory's listing is older than the TTL, new names are
    looked up in one fresh LIST, not a HEAD and a LIST each; names another client
    added meanwhile are found."""
    client.put_object("d/a", b"")
    m = mounter(["stat_cache_expire=1"])
    os.listdir(m.path / "d")
    time.sleep(1.2)
    client.put_object("d/other", b"o")  # someone else's, after our listing
    cos_server.reset_stats()
    for i in range(20):
        assert not (m.path / "d" / f"new{i}").exists()
    counts = ops(cos_server)
    # One LIST revalidates d itself (its entry expired too), one lists it again;
    # name by name this was 20 HEADs and 20 LISTs.
    assert set(counts) == {"ListObjects"} and counts["ListObjects"] <= 2
    assert (m.path / "d" / "other").read_bytes() == b"o"


def keys(client) -> list[str]:
    """Every key in the bucket, in listing order (all pages)."""
    return [o.key for page in client.iter_list() for o in page.contents]


def head_meta(client, key: str) -> dict[str, str]:
    return client.head_object(key).metadata


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


RSYNC_FILES = 12


def rsync_source(tmp_path) -> str:
    """Files in two directories with assorted modes and nanosecond mtimes."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(RSYNC_FILES):
        f = src / ("sub" if i % 2 else "") / f"f{i}"
        f.write_bytes(os.urandom(100 + i))
        os.chmod(f, 0o600 if i % 3 else 0o640)
        os.utime(f, ns=(1_500_000_000_000_000_000 + i, 1_500_000_000_123_456_789 + i))
    os.chmod(src / "sub", 0o750)
    os.utime(src / "sub", ns=(1_400_000_000_000_000_000, 1_400_000_000_000_000_000))
    return str(src)


def check_rsync_copy(src: str, m) -> None:
    """A fresh mount shows what rsync copied, and a second rsync sends nothing."""
    m.start()
    for rel in ["sub", *(os.path.join("sub" if i % 2 else "", f"f{i}")
                         for i in range(RSYNC_FILES))]:
        want, got = os.stat(os.path.join(src, rel)), os.stat(m.path / "dst" / rel)
        assert (got.st_mode, got.st_mtime_ns) == (want.st_mode, want.st_mtime_ns)
        assert stat.S_ISDIR(got.st_mode) or got.st_size == want.st_size
    out = run("rsync", "-a", "--stats", f"{src}/", f"{m.path / 'dst'}/")
    assert "Number of regular files transferred: 0" in out


def test_rsync_costs_one_put_one_copy_per_file_and_shared_deletes(mounter, cos_server,
                                                                   tmp_path):
    src, n = rsync_source(tmp_path), RSYNC_FILES
    m = mounter()
    cos_server.reset_stats()
    run("rsync", "-a", f"{src}/", f"{m.path / 'dst'}/")
    m.unmount()  # stores what is still deferred
    counts = ops(cos_server)
    # Per file: the PUT at close and the copy of the rename, which carries rsync's
    # utime and chmod; the temporary names' DELETEs go out together. Per directory
    # (dst, sub): the marker of the mkdir and one copy onto itself for the mode and
    # mtime rsync sets last.
    assert counts.get("PutObject", 0) == n + 2
    assert n <= counts.get("PutObjectCopy", 0) <= n + 2
    assert counts.get("DeleteObject", 0) + counts.get("DeleteMultipleObjects", 0) < n // 2
    assert counts.get("HeadObject", 0) + counts.get("ListObjects", 0) <= 4
    check_rsync_copy(src, m)


def test_writeback_rsync_sends_each_file_once_under_its_final_name(
        mounter, cos_server, tmp_path):
    src, n = rsync_source(tmp_path), RSYNC_FILES
    m = mounter(["writeback"])
    cos_server.reset_stats()
    run("rsync", "-a", f"{src}/", f"{m.path / 'dst'}/")
    m.unmount()
    counts = ops(cos_server)
    # Each temporary file is renamed (and utime'd, chmod'ed) while its upload
    # waits: one PUT per file, under its final name, with the final metadata; no
    # temporary key to copy or delete. Directories as without write-back.
    assert counts.get("PutObject", 0) == n + 2
    assert counts.get("PutObjectCopy", 0) <= 2
    assert "DeleteObject" not in counts
    check_rsync_copy(src, m)


def test_writeback_files_deleted_within_the_delay_are_never_sent(mounter, cos_server):
    # A delay far longer than the test: the unmount must not wait it out either.
    m = mounter(["writeback", "writeback_delay=600"])
    cos_server.reset_stats()
    for i in range(5):
        (m.path / f"scratch{i}").write_bytes(b"scratch")
        (m.path / f"scratch{i}").unlink()
    (m.path / "kept").write_bytes(b"kept")
    assert m.unmount() == 0
    writes = {op: n for op, n in ops(cos_server).items() if op not in ("HeadObject",
                                                                         "ListObjects")}
    assert writes == {"PutObject": 1}


def test_writeback_rename_within_the_delay_survives_a_crash(mounter, client):
    m = mounter(["writeback", "writeback_delay=600"])
    (m.path / "d").mkdir()
    tmp = m.path / "d" / ".f.tmp"
    tmp.write_bytes(b"data" * 1000)
    os.chmod(tmp, 0o640)
    os.rename(tmp, m.path / "d" / "f")
    m.kill()  # nothing of f was sent yet
    assert keys(client) == ["d/"]
    m.start()  # recovery uploads it, under the name it had when the mount died
    assert client.get_object("d/f") == b"data" * 1000
    assert int(head_meta(client, "d/f")["mode"]) == stat.S_IFREG | 0o640
    assert keys(client) == ["d/", "d/f"]


def test_writeback_rename_over_an_object_within_the_delay(mounter, client):
    """A file not sent yet, renamed over one that has an object, goes up first and
    is copied over it: the name must not keep the old object while the mount
    thinks it has none (an unlink of the name then left the old object behind,
    and it came back at the next mount)."""
    m = mounter(["writeback", "writeback_delay=600"])
    (m.path / "f").write_bytes(b"old")
    os.fsync(fd := os.open(m.path / "f", os.O_RDONLY))
    os.close(fd)
    assert client.get_object("f") == b"old"
    (m.path / ".f.tmp").write_bytes(b"new")
    os.rename(m.path / ".f.tmp", m.path / "f")
    assert client.get_object("f") == b"new"  # not the old object, even for a moment
    assert (m.path / "f").read_bytes() == b"new"
    os.unlink(m.path / "f")
    assert m.unmount() == 0
    assert keys(client) == []
    m.start()
    assert os.listdir(m.path) == []


def test_writeback_rename_over_a_file_whose_upload_is_running(mounter, client, cos_server):
    """The target's object appears only while the rename waits for its running
    upload: the file renamed onto it goes up then, and is copied over it."""
    m = mounter(["writeback", "writeback_delay=0.2"])
    cos_server.set_faults("PutObject", latency_ms=3000)
    try:
        (m.path / "f").write_bytes(b"old")
        time.sleep(1)  # f's upload has started; the server answers it late
        (m.path / ".f.tmp").write_bytes(b"new")
        os.rename(m.path / ".f.tmp", m.path / "f")
    finally:
        cos_server.clear_faults()
    assert client.get_object("f") == b"new"
    os.unlink(m.path / "f")
    assert m.unmount() == 0
    assert keys(client) == []


def test_a_renamed_files_old_key_is_deleted_in_the_background_and_fenced(
        mounter, client, cos_server):
    """rename() returns once the copy is made; the DELETE of the old key runs on,
    and nothing can see the old key or race it: a new file of the old name is
    written after the DELETE, a listing shows the rename done, fsync of the
    directory and unmount wait for it."""
    from cosfs.cos import CosError

    m = mounter()
    d = m.path / "mv"
    d.mkdir()
    (d / "a").write_bytes(b"first")
    (d / "c").write_bytes(b"third")
    cos_server.set_faults("DeleteObject", latency_ms=1500)
    os.rename(d / "a", d / "b")
    # rename() did not wait for the slow DELETE: another client still sees mv/a.
    assert client.get_object("mv/a") == b"first"
    assert not (d / "a").exists()
    (d / "a").write_bytes(b"second")  # its PUT waits for the DELETE of mv/a
    os.rename(d / "c", d / "e")
    assert sorted(os.listdir(d)) == ["a", "b", "e"]  # the LIST waited for mv/c's
    os.rename(d / "e", d / "f")
    fsync_dir(d)  # waits for the DELETE of mv/e
    assert [o.key for o in client.list_objects(prefix="mv/").contents] == \
        ["mv/", "mv/a", "mv/b", "mv/f"]
    os.rename(d / "f", d / "g")
    m.unmount()  # waits for the DELETE of mv/f
    cos_server.clear_faults()
    assert client.get_object("mv/a") == b"second"
    assert client.get_object("mv/b") == b"first"
    for gone in ("mv/c", "mv/e", "mv/f"):
        with pytest.raises(CosError) as exc:
            client.head_object(gone)
        assert exc.value.status == 404
    assert client.get_object("mv/g") == b"third"


def test_the_old_keys_of_renames_in_a_row_go_in_one_request(mounter, client, cos_server):
    """rsync renames every file it writes: the old keys' DELETEs wait a moment for
    each other and go as one Delete Multiple, not a request per file."""
    m = mounter()
    d = m.path / "rs"
    d.mkdir()
    n = 30
    for i in range(n):
        (d / f".f{i}.tmp").write_bytes(b"%d" % i)
    cos_server.reset_stats()
    for i in range(n):
        os.rename(d / f".f{i}.tmp", d / f"f{i}")
    fsync_dir(d)  # the directory's fsync sends what still lingers
    counts = ops(cos_server)
    assert counts.get("DeleteMultipleObjects", 0) >= 1
    assert counts.get("DeleteObject", 0) + counts.get("DeleteMultipleObjects", 0) < n // 2
    assert keys(client) == ["rs/"] + sorted(f"rs/f{i}" for i in range(n))
    assert [client.get_object(f"rs/f{i}") for i in range(n)] == [b"%d" % i for i in range(n)]


def test_a_store_without_delete_multiple_gets_one_delete_per_old_key(
        mounter, client, cos_server):
    m = mounter()
    for i in range(6):
        (m.path / f"a{i}").write_bytes(b"x")
    cos_server.set_faults("DeleteMultipleObjects", error_rate=1.0, error_status=501)
    try:
        for i in range(6):
            os.rename(m.path / f"a{i}", m.path / f"b{i}")
        fsync_dir(m.path)
        assert keys(client) == [f"b{i}" for i in range(6)]
        cos_server.reset_stats()
        for i in range(6, 9):  # from now on, without asking again
            os.rename(m.path / f"b{i - 6}", m.path / f"c{i}")
        fsync_dir(m.path)
    finally:
        cos_server.clear_faults()
    assert "DeleteMultipleObjects" not in ops(cos_server)
    assert keys(client) == [f"b{i}" for i in range(3, 6)] + [f"c{i}" for i in range(6, 9)]


def test_metadata_changes_of_a_closed_file_share_one_request(mounter, client, cos_server):
    m = mounter()
    p = m.path / "f"
    p.write_bytes(b"data")
    cos_server.reset_stats()
    os.chmod(p, 0o600)
    os.utime(p, ns=(1_000_000_000, 1_234_567_890_000_000_001))
    st = os.stat(p)  # at once, before the server has it
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime_ns == 1_234_567_890_000_000_001
    assert wait_for(lambda: head_meta(client, "f").get("mtime") == "1234567890.000000001")
    assert int(head_meta(client, "f")["mode"]) == stat.S_IFREG | 0o600
    assert ops(cos_server).get("PutObjectCopy", 0) == 1
    assert client.get_object("f") == b"data"


def test_deferred_metadata_is_stored_at_unmount_and_fsync(mounter, client):
    m = mounter()
    (m.path / "a").write_bytes(b"a")
    (m.path / "b").write_bytes(b"b")
    os.chmod(m.path / "b", 0o604)
    fd = os.open(m.path / "b", os.O_RDONLY)
    try:
        os.fsync(fd)
        assert int(head_meta(client, "b")["mode"]) == stat.S_IFREG | 0o604
    finally:
        os.close(fd)
    os.chmod(m.path / "a", 0o606)
    m.unmount()
    assert int(head_meta(client, "a")["mode"]) == stat.S_IFREG | 0o606


def test_deferred_metadata_survives_a_crash_of_the_mount(mounter, client):
    m = mounter()
    (m.path / "f").write_bytes(b"kept")
    (m.path / "g").write_bytes(b"old")
    os.chmod(m.path / "f", 0o611)
    os.chmod(m.path / "g", 0o622)
    m.kill()  # before the delay ran out
    assert int(head_meta(client, "f")["mode"]) == stat.S_IFREG | 0o644
    # g changes on the server meanwhile: it must keep what the server has.
    client.put_object("g", b"new", metadata={"mode": str(stat.S_IFREG | 0o640)})
    m.start()
    assert int(head_meta(client, "f")["mode"]) == stat.S_IFREG | 0o611
    assert client.get_object("f") == b"kept"
    assert int(head_meta(client, "g")["mode"]) == stat.S_IFREG | 0o640
    assert client.get_object("g") == b"new"
    assert stat.S_IMODE(os.stat(m.path / "f").st_mode) == 0o611


@pytest.mark.parametrize("options", [[], ["writeback", "writeback_delay=0.2"]],
                         ids=["default", "writeback"])
def test_an_upload_after_a_deferred_change_keeps_what_came_after_it(mounter, client,
                                                                    cos_server, options):
    """A chmod or utime of a clean file waits for its copy; data written before
    that copy goes up carrying it. The copy must not come afterwards: it would
    undo a later chmod, and give back the utime's mtime to a file written since."""
    m = mounter(options)
    a, b = m.path / "a", m.path / "b"
    a.write_bytes(b"")
    b.write_bytes(b"one")
    fd = os.open(a, os.O_RDWR)
    try:
        os.chmod(a, 0o600)  # deferred: nothing to upload yet
        os.pwrite(fd, b"x", 0)
        os.chmod(a, 0o640)  # goes with the data
    finally:
        os.close(fd)
    os.utime(b, ns=(981_173_106_000_000_000,) * 2)
    with open(b, "ab") as f:
        f.write(b"two")
    written = time.time()
    cos_server.reset_stats()
    time.sleep(1.5)  # past the delay of the deferred copies (and of write-back)
    assert wait_for(lambda: client.get_object("b") == b"onetwo")
    assert ops(cos_server).get("PutObjectCopy", 0) == 0
    assert int(head_meta(client, "a")["mode"]) == stat.S_IFREG | 0o640
    assert "mtime" not in head_meta(client, "b")  # Last-Modified: when it was written
    m.remount()
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o640
    assert os.stat(b).st_mtime >= written - 2
    assert a.read_bytes() == b"x" and b.read_bytes() == b"onetwo"


def test_an_object_replaced_on_the_server_keeps_its_data_and_metadata(mounter, client):
    m = mounter()
    (m.path / "f").write_bytes(b"mine")
    os.chmod(m.path / "f", 0o600)
    client.put_object("f", b"theirs", metadata={"mode": str(stat.S_IFREG | 0o640)})
    time.sleep(2.5)  # the delay has run out: the conditional copy was refused
    assert client.get_object("f") == b"theirs"
    assert int(head_meta(client, "f")["mode"]) == stat.S_IFREG | 0o640
    # The same when the change rides on a rename.
    (m.path / "r").write_bytes(b"mine")
    os.chmod(m.path / "r", 0o600)
    client.put_object("r", b"theirs", metadata={"mode": str(stat.S_IFREG | 0o640)})
    os.rename(m.path / "r", m.path / "s")
    assert client.get_object("s") == b"theirs"
    assert int(head_meta(client, "s")["mode"]) == stat.S_IFREG | 0o640


# -- -o listing_attrs ------------------------------------------------------------------


def test_listing_attrs_answers_lookups_by_name_from_the_listing(mounter, client, cos_server):
    """With -o listing_attrs, the lookups by name after the second one in a
    directory never read cost nothing: its listing says all there is."""
    for i in range(10):
        client.put_object(f"l/f{i}", b"x" * (i + 1))
    m = mounter(["listing_attrs"])
    os.stat(m.path / "l")
    cos_server.reset_stats()
    sizes = [os.lstat(m.path / "l" / f"f{i}").st_size for i in range(10)]
    assert sizes == list(range(1, 11))
    counts = ops(cos_server)
    assert counts.get("ListObjects", 0) == 1
    assert counts.get("HeadObject", 0) == 1  # the first name, before the LIST


def test_listing_attrs_lists_without_heads_and_ignores_metadata(mounter, client, cos_server):
    for i in range(10):
        client.put_object(f"d/f{i}", b"y" * (10 + i), metadata=COSFS_FILE if i % 2 else None)
    client.put_object("d/link", b"f1", metadata={"mode": str(stat.S_IFLNK | 0o777)})
    client.put_object("d/sub/", b"", content_type="application/x-directory",
                      metadata={"mode": str(stat.S_IFDIR | 0o700), "uid": "42"})
    client.put_object("d/sub/x", b"x")
    m = mounter(["listing_attrs"])
    cos_server.reset_stats()
    out = run("ls", "-ln", str(m.path / "d")).splitlines()[1:]
    found = run("find", str(m.path / "d")).split()
    with os.scandir(m.path / "d") as it:
        kinds = {e.name: (e.is_file(follow_symlinks=False), e.is_symlink()) for e in it}
    counts = ops(cos_server)
    # One HEAD for the cold lookup of d (a 404: a directory), then LISTs only.
    assert counts.get("HeadObject", 0) <= 1
    assert set(counts) <= {"ListObjects", "HeadObject"}
    assert len(out) == 12 and len(found) == 1 + 12 + 1
    assert kinds["link"] == (True, False) and kinds["f1"] == (True, False)
    # Every object shows the mount's defaults and its Last-Modified, whatever its
    # metadata says (a HEAD's answer is read the same way: see the next test).
    for name in ("f0", "f1", "link"):
        st = os.lstat(m.path / "d" / name)
        assert stat.S_ISREG(st.st_mode)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
            0o666 & ~0o022, os.getuid(), os.getgid())
        assert int(st.st_mtime) == int(client.head_object(f"d/{name}").last_modified)
    assert (m.path / "d" / "link").read_bytes() == b"f1"
    assert stat.S_IMODE(os.stat(m.path / "d" / "sub").st_mode) == 0o777 & ~0o022
    assert os.listxattr(m.path / "d" / "f1") == []


def test_listing_attrs_stores_changes_and_lists_the_defaults(mounter, client):
    m = mounter(["listing_attrs"])
    p = m.path / "f"
    p.write_bytes(b"data")
    os.chmod(p, 0o600)
    os.utime(p, ns=(1_000_000_000, 1_234_567_890_000_000_000))
    os.symlink("f", m.path / "l")
    os.setxattr(p, "user.k", b"v")
    # This mount shows its own changes while it holds the file...
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert os.readlink(m.path / "l") == "f"
    m.unmount()
    # ...and stores them, for COSFS and for mounts without the option,
    meta = head_meta(client, "f")
    assert int(meta["mode"]) == stat.S_IFREG | 0o600 and meta["mtime"] == "1234567890"
    plain = mounter(name="plain")
    assert stat.S_IMODE(os.stat(plain.path / "f").st_mode) == 0o600
    assert os.readlink(plain.path / "l") == "f"
    assert os.getxattr(plain.path / "f", "user.k") == b"v"
    # but a fresh listing of its own shows the defaults and Last-Modified.
    m.start()
    st = os.lstat(p)
    assert (stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (
        0o666 & ~0o022, int(client.head_object("f").last_modified))
    assert stat.S_ISREG(os.lstat(m.path / "l").st_mode)
    assert (m.path / "l").read_bytes() == b"f" and p.read_bytes() == b"data"


def test_a_chmod_while_a_multipart_upload_is_being_started_is_not_lost(
        mounter, client, cos_server):
    """The upload's metadata was recorded after its Initiate request returned, so a
    chmod that came while it was sent looked already carried: no fix-up copy, and
    the object kept the old mode."""
    m = mounter(["multipart_size=1"])
    cos_server.set_faults("InitiateMultipartUpload", latency_ms=1500)
    try:
        fd = os.open(m.path / "big", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, os.urandom(3 << 20))  # the first full part starts the upload
            time.sleep(0.5)  # its Initiate is on the wire
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    finally:
        cos_server.clear_faults()
    assert int(head_meta(client, "big")["mode"]) == stat.S_IFREG | 0o600


def test_a_file_made_while_its_directory_is_being_listed_is_listed(
        mounter, client, cos_server):
    """A listing that left the server before a file of ours was uploaded into the
    directory does not describe it: it is not kept as the directory's listing, so
    readdir shows the file afterwards. (Here the listing is the readdir-ahead of a
    walk: reading p/a readies its sibling p/b in the background.)"""
    client.put_object("p/a/x", b"x" * 5000)
    client.put_object("p/b/x", b"x" * 5000)
    m = mounter()
    p = m.path / "p"
    assert not (p / "b" / "new").exists()  # known absent: creating it sends no LIST
    assert sorted(os.listdir(p)) == ["a", "b"]
    os.stat(p / "a")  # a's listing is kept: reading it sends nothing
    # LISTs are served at once, answered late: p/b's will not show p/b/new.
    cos_server.set_faults("ListObjects", answer_latency_ms=1500)
    try:
        assert os.listdir(p / "a") == ["x"]  # a walk: p/b's LIST leaves now
        (p / "b" / "new").write_bytes(b"n")  # uploaded before that LIST answers
        time.sleep(2)
    finally:
        cos_server.clear_faults()
    assert sorted(os.listdir(p / "b")) == ["new", "x"]


def test_a_walk_readies_the_next_directories_in_the_background(
        mounter, client, cos_server):
    """Reading one subdirectory of a directory read before readies the following
    ones (their listings and the HEADs their readdir needs) in the background, so
    reading them sends nothing, and every object is still HEADed once, typed
    right (a symlink among small files) and shown with its metadata."""
    for d in range(4):
        for f in range(3):
            client.put_object(f"p/d{d}/f{f}", b"s" * 100,
                              metadata=COSFS_FILE if f == 1 else None)
    client.put_object("p/d3/link", b"d0/f0", metadata={"mode": str(stat.S_IFLNK | 0o777)})
    m = mounter()
    p = m.path / "p"
    assert sorted(os.listdir(p)) == ["d0", "d1", "d2", "d3"]
    cos_server.reset_stats()
    assert sorted(os.listdir(p / "d0")) == ["f0", "f1", "f2"]
    assert sorted(os.listdir(p / "d1")) == ["f0", "f1", "f2"]
    time.sleep(1)  # what these readied settles
    total = ops(cos_server)
    cos_server.reset_stats()
    assert sorted(os.listdir(p / "d2")) == ["f0", "f1", "f2"]
    assert sorted(os.listdir(p / "d3")) == ["f0", "f1", "f2", "link"]
    assert ops(cos_server) == {}  # readied ahead
    assert total.get("HeadObject", 0) == 13  # each object once
    assert total.get("ListObjects", 0) <= 4  # each directory once
    assert run("find", str(p), "-type", "l").split() == [str(p / "d3" / "link")]
    assert os.readlink(p / "d3" / "link") == "d0/f0"
    st = os.stat(p / "d2" / "f1")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 567)


def test_a_walk_readies_the_first_subdirectories_of_what_it_reads(
        mounter, client, cos_server):
    """A walk is depth first: reading p/a as part of one readies p/a's first
    subdirectories too, so going down into them sends nothing."""
    for sub in ("a/s0", "a/s1", "b"):
        client.put_object(f"p/{sub}/f", b"s" * 100)
    m = mounter()
    p = m.path / "p"
    assert sorted(os.listdir(p)) == ["a", "b"]
    assert sorted(os.listdir(p / "a")) == ["s0", "s1"]  # a walk: p's listing was read
    time.sleep(1)  # what it readied settles
    cos_server.reset_stats()
    assert os.listdir(p / "a" / "s0") == ["f"]
    assert os.listdir(p / "a" / "s1") == ["f"]
    assert ops(cos_server) == {}


def test_lookups_by_name_in_a_directory_never_read_send_their_heads_ahead(
        mounter, client, cos_server):
    """rsync lstat()s every file it may send, in name order, without reading the
    directory: the second name looked up lists the directory, and the files that
    follow are HEADed in the background, so each is HEADed once and later
    lookups wait for nothing. The attributes are still each object's own."""
    names = [f"f{i:02d}" for i in range(40)]
    for n in names:
        client.put_object(f"r/{n}", b"s" * 100, metadata=COSFS_FILE)
    client.put_object("r/link", b"f00", metadata={"mode": str(stat.S_IFLNK | 0o777)})
    m = mounter()
    r = m.path / "r"
    os.stat(r)
    cos_server.reset_stats()
    for n in names[:2]:
        os.lstat(r / n)
    time.sleep(1)  # what they sent ahead settles
    first = ops(cos_server)
    cos_server.reset_stats()
    for n in names[2:]:
        st = os.lstat(r / n)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 567)
    assert stat.S_ISLNK(os.lstat(r / "link").st_mode)
    time.sleep(0.5)
    rest = ops(cos_server)
    # The directory's listing; and the LIST of "f00/", if the HEAD of f00 took
    # longer than a lookup waits before asking whether a directory has the name.
    assert first.get("ListObjects", 0) in (1, 2)
    assert first.get("HeadObject", 0) + rest.get("HeadObject", 0) == 41  # each once
    assert rest.get("HeadObject", 0) <= 9  # the window reaches the last ones late
    with pytest.raises(FileNotFoundError):
        os.lstat(r / "f99")  # the listing says so
    assert ops(cos_server).get("HeadObject", 0) == rest.get("HeadObject", 0)


def test_a_readdir_waits_for_the_heads_the_lookups_sent_ahead(mounter, client, cos_server):
    """A readdir while HEADs sent ahead by lookups are on their way takes their
    answers instead of HEADing the same objects again."""
    names = [f"f{i:02d}" for i in range(40)]
    for n in names:
        client.put_object(f"r/{n}", b"s" * 100, metadata=COSFS_FILE)
    m = mounter()
    r = m.path / "r"
    os.stat(r)
    os.lstat(r / names[0])
    cos_server.reset_stats()
    cos_server.set_faults("HeadObject", answer_latency_ms=1500)
    try:
        # The second lookup lists r and sends the HEADs of f02..f33 ahead; the
        # readdir comes while they (and the lookup's own HEAD) are unanswered.
        second = threading.Thread(target=os.lstat, args=(r / names[1],))
        second.start()
        time.sleep(0.5)
        listed = sorted(os.listdir(r))
        second.join()
    finally:
        cos_server.clear_faults()
    assert listed == names
    heads = ops(cos_server).get("HeadObject", 0)
    assert heads <= 40  # f01 at most twice (its lookup, the readdir), the rest once
    st = os.lstat(r / names[20])
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 567)
    assert ops(cos_server).get("HeadObject", 0) == heads


def test_directories_looked_up_in_a_listed_directory_are_readied_ahead(
        mounter, client, cos_server):
    """rsync lstat()s each directory of a tree, then each file in it, with no
    readdir: a directory its parent's listing shows is readied with its lookup,
    and so are the directories after it: the LIST of its first keys (kept as
    its listing), its marker's HEAD, the HEADs of all its files and the same
    for its first subdirectories. So the lookups that follow wait for nothing,
    and nothing is asked twice. The listing said directory, so no HEAD asks for
    the object of the same name it hides."""
    for d in ("a", "b", "c", "d"):
        client.put_object(f"t/{d}/", b"", metadata={"mode": str(stat.S_IFDIR | 0o750)})
        for f in range(3):
            client.put_object(f"t/{d}/f{f}", b"s" * 100, metadata=COSFS_FILE)
    client.put_object("t/c/s/f", b"s" * 100, metadata=COSFS_FILE)
    client.put_object("t/c", b"hidden by the directory t/c/")
    m = mounter()
    t = m.path / "t"
    os.stat(t)
    os.lstat(t / "a")
    cos_server.reset_stats()
    os.lstat(t / "b")  # the second lookup in t lists t, and readies b, c and d
    time.sleep(0.5)
    # t; for b, c and d their first keys, markers and files; c/s and its file.
    assert ops(cos_server) == {"ListObjects": 5, "HeadObject": 13}
    cos_server.reset_stats()
    for d in ("b", "c", "d"):
        st = os.lstat(t / d)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
        for f in range(3):
            st = os.lstat(t / d / f"f{f}")
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 567)
    assert stat.S_ISDIR(os.lstat(t / "c" / "s").st_mode)
    assert stat.S_ISREG(os.lstat(t / "c" / "s" / "f").st_mode)
    time.sleep(0.5)
    assert ops(cos_server) == {}


def test_reading_one_directory_readies_nothing_else(mounter, client, cos_server):
    """A readdir that is not part of a walk (its parent was not read) and ls -l of a
    directory (no subdirectory is read) cost no request for other directories."""
    for d in range(3):
        client.put_object(f"q/d{d}/f", b"s" * 100)
    m = mounter()
    cos_server.reset_stats()
    assert os.listdir(m.path / "q" / "d0") == ["f"]
    time.sleep(0.5)
    counts = ops(cos_server)
    assert counts.get("HeadObject", 0) <= 3  # q and d0 (directories: 404s), d0/f
    assert counts.get("ListObjects", 0) <= 3  # q's lookup, d0's lookup and listing
    m.remount()
    cos_server.reset_stats()
    run("ls", "-l", str(m.path / "q"))
    time.sleep(0.5)
    counts = ops(cos_server)
    assert counts.get("HeadObject", 0) <= 1  # q: a 404
    assert counts.get("ListObjects", 0) <= 5  # q's lookup and listing, each d's
