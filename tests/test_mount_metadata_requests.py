"""How many requests metadata-heavy work costs through a real mount, counted by the
local server, and that the cheaper paths still show exact attributes."""

from __future__ import annotations

import os
import stat
import subprocess

from conftest import ServerProcess


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
