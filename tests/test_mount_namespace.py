"""The namespace through a real FUSE mount of the local COS server, checked with
real syscalls and tools, and with the official SDK on the server side."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
import time

import pytest
from conftest import make_client, run

from cosfs.namespace import chunked


def sdk_head(sdk, bucket: str, key: str) -> dict:
    return sdk.head_object(Bucket=bucket, Key=key)


def sdk_get(sdk, bucket: str, key: str) -> bytes:
    return sdk.get_object(Bucket=bucket, Key=key)["Body"].get_raw_stream().read()


def test_write_then_read_and_cosfs_metadata_on_server(mnt, sdk, bucket):
    p = mnt.path / "hello.txt"
    p.write_bytes(b"hello world\n")
    assert p.read_bytes() == b"hello world\n"
    assert sdk_get(sdk, bucket, "hello.txt") == b"hello world\n"
    h = sdk_head(sdk, bucket, "hello.txt")
    st = p.stat()
    assert int(h["x-cos-meta-mode"]) == st.st_mode and stat.S_ISREG(st.st_mode)
    assert int(h["x-cos-meta-uid"]) == os.getuid()
    assert int(h["x-cos-meta-gid"]) == os.getgid()
    # mtime that was never set explicitly is the object's Last-Modified (no header),
    # the same before and after a remount.
    assert "x-cos-meta-mtime" not in h
    from email.utils import parsedate_to_datetime

    assert int(st.st_mtime) == int(parsedate_to_datetime(h["Last-Modified"]).timestamp())
    assert h["Content-Type"].startswith("text/plain")


def test_empty_file_and_touch(mnt, sdk, bucket):
    run("touch", str(mnt.path / "empty"))
    assert (mnt.path / "empty").stat().st_size == 0
    assert sdk_get(sdk, bucket, "empty") == b""


def test_mkdir_marker_rmdir_and_survives_remount(mnt, sdk, bucket):
    d = mnt.path / "d"
    d.mkdir(mode=0o750)
    h = sdk_head(sdk, bucket, "d/")
    assert h["Content-Type"] == "application/x-directory"
    assert int(h["Content-Length"]) == 0
    assert stat.S_ISDIR(int(h["x-cos-meta-mode"]))
    (d / "f").write_text("x")
    with pytest.raises(OSError) as e:
        d.rmdir()
    assert e.value.errno == errno.ENOTEMPTY
    (d / "f").unlink()
    (mnt.path / "keep").mkdir()
    mnt.remount()
    assert sorted(os.listdir(mnt.path)) == ["d", "keep"]
    assert stat.S_IMODE((mnt.path / "d").stat().st_mode) == 0o750
    (mnt.path / "d").rmdir()
    assert os.listdir(mnt.path) == ["keep"]
    from qcloud_cos.cos_exception import CosServiceError

    with pytest.raises(CosServiceError):
        sdk_head(sdk, bucket, "d/")


def test_readdir_lists_dot_and_dotdot_first(mnt):
    """As every filesystem does (`ls -a`, and tools that count on them), with the
    inode numbers of the directory and of its parent."""
    d = mnt.path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "f").write_text("x")
    (mnt.path / "empty").mkdir()

    def listed(path) -> list[tuple[int, str]]:
        out = run("ls", "-a1iU", str(path)).stdout.split("\n")
        return [(int(ino), name) for ino, name in (line.split() for line in out if line)]

    root, here = mnt.path.stat().st_ino, d.stat().st_ino
    assert listed(d) == [(here, "."), (root, ".."), ((d / "f").stat().st_ino, "f"),
                         ((d / "sub").stat().st_ino, "sub")]
    top = listed(mnt.path)  # (ls shows the ".." of a mount point as what is under it)
    assert top[0] == (root, ".") and top[1][1] == ".."
    assert [name for _, name in listed(mnt.path / "empty")] == [".", ".."]
    assert sorted(os.listdir(d)) == ["f", "sub"]


@pytest.mark.parametrize("name", ["with space", "per%cent", "pl+us", "ha#sh", "qu?estion",
                                  "am&p", "ünïcødé-文件", "semi;colon=eq"])
def test_odd_names_round_trip(mnt, sdk, bucket, name):
    (mnt.path / name).write_bytes(name.encode())
    assert sdk_get(sdk, bucket, name) == name.encode()
    assert name in os.listdir(mnt.path)
    (mnt.path / name).unlink()
    assert name not in os.listdir(mnt.path)


def test_objects_written_by_the_sdk_look_right(mounter, sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="plain.bin", Body=b"12345")
    sdk.put_object(Bucket=bucket, Key="implicit/deeper/file.txt", Body=b"abc")
    sdk.put_object(Bucket=bucket, Key="marked/", Body=b"")
    sdk.put_object(Bucket=bucket, Key="marked/x", Body=b"x")
    sdk.put_object(Bucket=bucket, Key="odd name + 100%/a #1?", Body=b"q")
    sdk.put_object(Bucket=bucket, Key="meta", Body=b"m",
                   Metadata={"x-cos-meta-mode": str(stat.S_IFREG | 0o600),
                             "x-cos-meta-uid": "123", "x-cos-meta-gid": "456",
                             "x-cos-meta-mtime": "1500000000"})
    m = mounter(["uid=4242", "gid=4343", "umask=027"])
    root = m.path
    assert sorted(os.listdir(root)) == ["implicit", "marked", "meta", "odd name + 100%",
                                        "plain.bin"]
    st = (root / "plain.bin").stat()
    assert (st.st_size, st.st_uid, st.st_gid) == (5, 4242, 4343)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert os.listdir(root / "implicit") == ["deeper"]
    assert (root / "implicit" / "deeper" / "file.txt").read_bytes() == b"abc"
    assert stat.S_ISDIR((root / "implicit").stat().st_mode)
    assert os.listdir(root / "marked") == ["x"]
    assert (root / "odd name + 100%" / "a #1?").read_bytes() == b"q"
    st = (root / "meta").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == \
        (0o600, 123, 456, 1500000000)


def test_file_and_directory_of_the_same_name(mounter, sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="both", Body=b"file")
    sdk.put_object(Bucket=bucket, Key="both/inner", Body=b"i")
    m = mounter()
    assert os.listdir(m.path) == ["both"]
    assert (m.path / "both").is_dir()


def test_hidden_odd_keys_never_escape(mounter, sdk, bucket):
    for key in ("a//b", "a/./c", "a/../d", "a/ok"):
        sdk.put_object(Bucket=bucket, Key=key, Body=b"z")
    m = mounter()
    assert sorted(os.listdir(m.path / "a")) == ["ok"]
    assert os.listdir(m.path) == ["a"]


def test_rename_file_and_over_existing(mnt, sdk, bucket):
    (mnt.path / "a").write_text("A")
    (mnt.path / "b").write_text("B")
    os.chmod(mnt.path / "a", 0o600)
    os.rename(mnt.path / "a", mnt.path / "c")
    assert sorted(os.listdir(mnt.path)) == ["b", "c"]
    assert sdk_get(sdk, bucket, "c") == b"A"
    assert stat.S_IMODE(int(sdk_head(sdk, bucket, "c")["x-cos-meta-mode"])) == 0o600
    os.rename(mnt.path / "c", mnt.path / "b")
    assert os.listdir(mnt.path) == ["b"]
    assert (mnt.path / "b").read_text() == "A"
    assert sdk_get(sdk, bucket, "b") == b"A"


def test_rename_directory_tree_with_open_file(mnt, sdk, bucket):
    src = mnt.path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(30):
        (src / f"f{i}").write_text(str(i))
    (src / "sub" / "deep").write_text("deep")
    with open(src / "sub" / "open.txt", "w") as f:
        f.write("first ")
        f.flush()
        os.rename(src, mnt.path / "dst")
        f.write("second")
    assert not src.exists()
    dst = mnt.path / "dst"
    assert len(os.listdir(dst)) == 31
    assert (dst / "sub" / "deep").read_text() == "deep"
    assert (dst / "sub" / "open.txt").read_text() == "first second"
    assert sdk_get(sdk, bucket, "dst/sub/open.txt") == b"first second"
    keys = {o["Key"] for o in sdk.list_objects(Bucket=bucket, Prefix="src/").get("Contents", [])}
    assert keys == set()


def test_rename_directory_over_empty_and_nonempty(mnt):
    (mnt.path / "a").mkdir()
    (mnt.path / "a" / "x").write_text("x")
    (mnt.path / "empty").mkdir()
    (mnt.path / "full").mkdir()
    (mnt.path / "full" / "y").write_text("y")
    with pytest.raises(OSError) as e:
        os.rename(mnt.path / "a", mnt.path / "full")
    assert e.value.errno == errno.ENOTEMPTY
    os.rename(mnt.path / "a", mnt.path / "empty")
    assert os.listdir(mnt.path / "empty") == ["x"]
    with pytest.raises(OSError) as e:
        os.rename(mnt.path / "empty" / "x", mnt.path / "full")
    assert e.value.errno == errno.EISDIR


def test_chmod_chown_utime_persist(mnt, sdk, bucket):
    p = mnt.path / "f"
    p.write_text("data")
    os.chmod(p, 0o604)
    os.chown(p, 1234, 5678)
    os.utime(p, ns=(1_000_000_000 * 10**9, 1_234_567_890_123_456_789))
    # The copy that stores them waits up to a second for more changes.
    deadline = time.monotonic() + 10
    while "x-cos-meta-mtime" not in (h := sdk_head(sdk, bucket, "f")) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(h["x-cos-meta-mode"]) == stat.S_IFREG | 0o604
    assert (h["x-cos-meta-uid"], h["x-cos-meta-gid"]) == ("1234", "5678")
    assert h["x-cos-meta-mtime"] == "1234567890.123456789"
    mnt.remount()
    st = p.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o604, 1234, 5678)
    assert st.st_mtime_ns == 1_234_567_890_123_456_789
    assert p.read_text() == "data"


def test_directory_chmod_and_implicit_directory_gets_marker(mounter, sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="imp/file", Body=b"x")
    m = mounter()
    os.chmod(m.path / "imp", 0o700)
    assert stat.S_IMODE((m.path / "imp").stat().st_mode) == 0o700
    assert stat.S_IMODE(int(sdk_head(sdk, bucket, "imp/")["x-cos-meta-mode"])) == 0o700


def test_symlink_readlink_cosfs_format(mnt, sdk, bucket):
    os.symlink("target/file name", mnt.path / "link")
    assert os.readlink(mnt.path / "link") == "target/file name"
    assert stat.S_ISLNK(os.lstat(mnt.path / "link").st_mode)
    assert sdk_get(sdk, bucket, "link") == b"target/file name"
    assert stat.S_ISLNK(int(sdk_head(sdk, bucket, "link")["x-cos-meta-mode"]))
    mnt.remount()
    assert os.readlink(mnt.path / "link") == "target/file name"


def test_xattrs_and_metadata_limit(mnt, sdk, bucket):
    p = mnt.path / "x"
    p.write_text("x")
    run("setfattr", "-n", "user.color", "-v", "blue", str(p))
    out = run("getfattr", "-n", "user.color", "--only-values", str(p)).stdout
    assert out == "blue"
    assert "x-cos-meta-xattr" in sdk_head(sdk, bucket, "x")
    os.setxattr(p, "user.bin", b"\x00\x01\xff")
    mnt.remount()
    assert os.getxattr(p, "user.bin") == b"\x00\x01\xff"
    assert sorted(os.listxattr(p)) == ["user.bin", "user.color"]
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.huge", b"v" * 3000)
    assert e.value.errno == errno.E2BIG
    with pytest.raises(OSError) as e:
        for i in range(5):
            os.setxattr(p, f"user.fill{i}", b"v" * 400)
    assert e.value.errno == errno.ENOSPC
    os.removexattr(p, "user.color")
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.color")
    assert e.value.errno == errno.ENODATA


def test_statfs_hardlink_and_name_limits(mnt):
    s = os.statvfs(mnt.path)
    assert s.f_blocks * s.f_frsize >= 2**40 and s.f_bavail > 0 and s.f_namemax == 255
    (mnt.path / "f").write_text("x")
    with pytest.raises(OSError) as e:
        os.link(mnt.path / "f", mnt.path / "g")
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        (mnt.path / ("n" * 256)).write_text("x")
    assert e.value.errno == errno.ENAMETOOLONG
    deep = mnt.path
    for _ in range(4):
        deep = deep / ("d" * 200)
        deep.mkdir()
    with pytest.raises(OSError) as e:
        (deep / ("f" * 60)).write_text("x")
    assert e.value.errno == errno.ENAMETOOLONG


def test_tools_cp_a_tar_rsync_keep_mtime(mnt, tmp_path):
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    for i in range(20):
        f = src / ("sub" if i % 2 else ".") / f"file{i}.txt"
        f.write_text(f"content {i}\n" * (i + 1))
        os.utime(f, (1_500_000_000 + i, 1_500_000_000 + i))
    os.chmod(src / "file0.txt", 0o600)
    run("cp", "-a", str(src), str(mnt.path / "cp"))
    assert (mnt.path / "cp" / "file0.txt").stat().st_mtime == 1_500_000_000
    assert stat.S_IMODE((mnt.path / "cp" / "file0.txt").stat().st_mode) == 0o600
    tarball = tmp_path / "t.tar"
    run("tar", "-C", str(tmp_path), "-cf", str(tarball), "tree")
    run("tar", "-C", str(mnt.path), "-xf", str(tarball))
    assert (mnt.path / "tree" / "sub" / "file1.txt").stat().st_mtime == 1_500_000_001
    out = run("rsync", "-a", "--stats", f"{src}/", f"{mnt.path}/rs/").stdout
    assert "Number of regular files transferred: 20" in out
    mnt.remount()
    out = run("rsync", "-a", "--stats", f"{src}/", f"{mnt.path}/rs/").stdout
    assert "Number of regular files transferred: 0" in out
    run("diff", "-r", str(src), str(mnt.path / "rs"))


def test_rm_r_and_mv_between_directories(mnt, sdk, bucket):
    t = mnt.path / "t"
    (t / "a" / "b").mkdir(parents=True)
    for i in range(10):
        (t / "a" / "b" / str(i)).write_text("x")
    run("mv", str(t / "a" / "b" / "3"), str(t / "moved"))
    assert (t / "moved").read_text() == "x"
    run("rm", "-r", str(t))
    assert os.listdir(mnt.path) == []
    assert not sdk.list_objects(Bucket=bucket).get("Contents")


def test_large_directory_lists_completely(mounter, cos_server, bucket):
    client = make_client(cos_server, bucket)
    from concurrent.futures import ThreadPoolExecutor

    n = 10_050
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: client.put_object(f"big/{i:06d}", b""), range(n)))
    m = mounter()
    names = os.listdir(m.path / "big")
    assert len(names) == n and names[0] == "000000"


def test_other_clients_changes_show_after_ttl(mounter, sdk, bucket):
    m = mounter(["stat_cache_expire=1"])
    assert os.listdir(m.path) == []
    sdk.put_object(Bucket=bucket, Key="late", Body=b"123")
    time.sleep(1.5)
    assert os.listdir(m.path) == ["late"]
    sdk.put_object(Bucket=bucket, Key="late", Body=b"123456")
    time.sleep(1.5)
    assert (m.path / "late").stat().st_size == 6
    assert (m.path / "late").read_bytes() == b"123456"


def test_no_stat_cache_sees_changes_at_once(mounter, sdk, bucket):
    m = mounter(["stat_cache_expire=0"])
    (m.path / "f").write_text("one")
    sdk.put_object(Bucket=bucket, Key="f", Body=b"second")
    sdk.put_object(Bucket=bucket, Key="g", Body=b"g")
    assert (m.path / "f").stat().st_size == 6
    assert sorted(os.listdir(m.path)) == ["f", "g"]
    sdk.delete_object(Bucket=bucket, Key="g")
    assert not (m.path / "g").exists()


def test_archived_object_gives_eacces(mounter, sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="cold", Body=b"frozen", StorageClass="ARCHIVE")
    m = mounter()
    with pytest.raises(OSError) as e:
        (m.path / "cold").read_bytes()
    assert e.value.errno == errno.EACCES
    assert (m.path / "cold").stat().st_size == 6  # still listed and stat-able


def test_server_errors_become_eio_and_mount_survives(mounter, cos_server, bucket):
    m = mounter(["retries=1", "stat_cache_expire=0"])
    (m.path / "f").write_text("x")
    cos_server.set_faults("*", error_rate=1.0)
    try:
        with pytest.raises(OSError) as e:
            (m.path / "g").write_text("y")
        assert e.value.errno == errno.EIO
    finally:
        cos_server.clear_faults()
    assert (m.path / "f").read_text() == "x"
    (m.path / "g").write_text("y")
    assert (m.path / "g").read_text() == "y"


def test_read_only_mount(mounter, sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="f", Body=b"x")
    m = mounter(["ro"])
    assert (m.path / "f").read_bytes() == b"x"
    with pytest.raises(OSError) as e:
        (m.path / "g").write_text("y")
    assert e.value.errno == errno.EROFS


def test_sigterm_unmounts_cleanly(mnt):
    (mnt.path / "f").write_text("x")
    mnt.proc.terminate()
    assert mnt.proc.wait(30) == 0
    mnt.proc = None
    from conftest import is_mounted

    assert not is_mounted(mnt.path)


def test_revalidation_costs(mounter, cos_server, bucket):
    """A listing that shows objects unchanged renews their attributes with no HEAD;
    an expired file's stat costs one HEAD, not a HEAD and a LIST."""
    client = make_client(cos_server, bucket)
    for i in range(50):
        client.put_object(f"d/f{i:02d}", b"x" * i)
    m = mounter(["stat_cache_expire=1"])
    cos_server.reset_stats()
    assert len(subprocess.run(["ls", "-l", str(m.path / "d")], capture_output=True,
                              text=True, check=True).stdout.splitlines()) == 51
    assert cos_server.count("HeadObject") >= 50  # cold: every object's metadata
    time.sleep(1.3)
    cos_server.reset_stats()
    subprocess.run(["ls", "-l", str(m.path / "d")], capture_output=True, check=True)
    assert cos_server.count("HeadObject") <= 1  # at most the lookup of "d" itself
    assert cos_server.count("ListObjects") >= 1
    time.sleep(1.3)
    os.stat(m.path / "d")  # revalidates the directory itself
    cos_server.reset_stats()
    assert (m.path / "d" / "f07").stat().st_size == 7
    assert (cos_server.count("HeadObject"), cos_server.count("ListObjects")) == (1, 0)


def test_a_slow_head_of_a_new_name_sends_the_list_beside_it(mounter, cos_server, bucket):
    """The first lookup of a name whose HEAD is slow to answer (a distant endpoint)
    does not wait for its 404 to ask whether a directory has the name: the LIST
    reaches the server while the HEAD is still held there."""
    make_client(cos_server, bucket).put_object("deep/er/file", b"x")
    m = mounter()
    cos_server.reset_stats()
    cos_server.set_faults("HeadObject", latency_ms=3000)
    looked_up: list[bool] = []
    walker = threading.Thread(target=lambda: looked_up.append((m.path / "deep").is_dir()))
    walker.start()
    deadline = time.monotonic() + 2.5
    while cos_server.count("ListObjects") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    listed_before_the_head_answered = cos_server.count("ListObjects") == 1
    walker.join(30)
    assert listed_before_the_head_answered
    assert looked_up == [True]
    assert (cos_server.count("HeadObject"), cos_server.count("ListObjects")) == (1, 1)


def test_a_file_lookup_does_not_wait_for_the_list_beside_it(mounter, cos_server, bucket):
    """An object answers at its HEAD, and wins over a directory of the same name:
    the HEAD is slow enough for the LIST to go too, and the LIST slower still."""
    client = make_client(cos_server, bucket)
    client.put_object("both", b"file")
    client.put_object("both/inner", b"i")
    m = mounter()
    cos_server.reset_stats()
    cos_server.set_faults("HeadObject", latency_ms=200)
    cos_server.set_faults("ListObjects", latency_ms=3000)
    t0 = time.monotonic()
    st_ = os.stat(m.path / "both")
    waited = time.monotonic() - t0
    assert stat.S_ISREG(st_.st_mode) and st_.st_size == 4
    assert cos_server.count("ListObjects") == 1  # sent beside the HEAD, still held
    assert waited < 2.5, f"the lookup waited {waited:.1f} s for the LIST beside its HEAD"
    cos_server.clear_faults()
    with pytest.raises(NotADirectoryError):
        os.listdir(m.path / "both")


def test_unlinked_file_stays_readable_through_open_handles(mounter, cos_server, bucket):
    data = os.urandom(3 * 1024 * 1024 + 5)
    make_client(cos_server, bucket).put_object("f", data)
    m = mounter()
    reader = os.open(m.path / "f", os.O_RDONLY)
    try:
        assert os.pread(reader, 100, 0) == data[:100]  # only the start fetched so far
        os.unlink(m.path / "f")
        assert not (m.path / "f").exists()
        got = b"".join(iter(lambda: os.read(reader, 1 << 20), b""))  # pread kept offset 0
        assert got == data
    finally:
        os.close(reader)
    assert "f" not in os.listdir(m.path)
    from cosfs.cos import CosError

    with pytest.raises(CosError):
        make_client(cos_server, bucket).head_object("f")


# The default delay holds each upload back past the rename or unlink that follows
# the close; without one the upload is running by then.
WRITEBACK = pytest.mark.parametrize("writeback", [["writeback"],
                                                  ["writeback", "writeback_delay=0"]],
                                    ids=["delayed", "at-once"])


@WRITEBACK
def test_writeback_rename_after_close_keeps_data(mounter, cos_server, bucket, sdk, writeback):
    """rsync's pattern in write-back mode: each temporary file is utime'd, chmod'ed
    and renamed while its upload waits or runs."""
    m = mounter(writeback)
    (m.path / "d").mkdir()
    for i in range(40):
        tmp = m.path / "d" / f".t{i}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.write(fd, b"x" * 12000)
        os.close(fd)
        os.utime(tmp, (1_500_000_000, 1_500_000_000))
        os.chmod(tmp, 0o644)
        os.rename(tmp, m.path / "d" / f"f{i}")
    assert m.unmount() == 0
    client = make_client(cos_server, bucket)
    sizes = {o.key: o.size for page in client.iter_list(prefix="d/") for o in page.contents}
    assert sizes == {"d/": 0, **{f"d/f{i}": 12000 for i in range(40)}}  # no stray .t*
    bad = [i for i in range(40) if "x-cos-meta-mtime" not in sdk_head(sdk, bucket, f"d/f{i}")]
    assert not bad, bad
    for i in range(40):
        h = sdk_head(sdk, bucket, f"d/f{i}")
        assert (h["x-cos-meta-mode"], h["x-cos-meta-mtime"]) == (str(0o100644), "1500000000")
        assert sdk_get(sdk, bucket, f"d/f{i}") == b"x" * 12000


@WRITEBACK
def test_writeback_unlink_and_replace_right_after_close(mounter, cos_server, bucket, sdk,
                                                        writeback):
    """An upload waiting or running in the background must not land after the
    unlink or rename that follows it (a deleted file coming back, a replaced one
    reverting)."""
    m = mounter(writeback)
    expected = {}
    for i in range(30):
        data = os.urandom(100_000)
        done = subprocess.run(["sh", "-c", f"head -c 100000 > f.tmp && mv f.tmp f{i % 3}"],
                              cwd=m.path, input=data, capture_output=True)
        assert done.returncode == 0, (i, done.stderr, m.log()[-5000:])
        expected[f"f{i % 3}"] = data
        gone = m.path / f"gone{i}"
        gone.write_bytes(data)
        gone.unlink()
    for name, data in expected.items():
        assert (m.path / name).read_bytes() == data
    assert m.unmount() == 0
    client = make_client(cos_server, bucket)
    keys = {o.key for page in client.iter_list() for o in page.contents}
    assert keys == set(expected)
    for name, data in expected.items():
        assert sdk_get(sdk, bucket, name) == data


def test_chunks_of_heads_keep_every_parallel_slot_busy() -> None:
    """Few entries: one HEAD per chunk (all in parallel, one round trip of latency);
    many: chunks grow to keep the slots busy, never past the cap."""
    assert chunked(list(range(9)), 64, 8) == [[i] for i in range(9)]
    assert [len(c) for c in chunked(list(range(40)), 16, 8)] == [3] * 13 + [1]
    assert [len(c) for c in chunked(list(range(1000)), 16, 8)] == [8] * 125
    assert chunked([], 16, 8) == []
    assert sum(chunked(list(range(100)), 7, 8), []) == list(range(100))
