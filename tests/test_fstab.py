"""The mount helper: mount(8)'s argument convention as unit tests, then real mounts
through ``mount -t fuse.cosfs`` and an fstab line (``mount -T FILE``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import _env, is_mounted

from cosfs import control, fstab

# -- argument handling ------------------------------------------------------------


def argv_for(*args: str) -> list[str]:
    return fstab.cosfs_argv(fstab.parse_helper_args(list(args)))


def test_options_only_mount_and_systemd_use_are_dropped():
    got = argv_for("bkt-1250000000:/photos", "/mnt/cos", "-o",
                   "rw,noexec,nosuid,nodev,_netdev,nofail,noauto,user,defaults,"
                   "x-systemd.automount,x-systemd.requires=network-online.target,"
                   "comment=x,allow_other,url=https://cos.example.com,uid=1000,noatime")
    assert got == ["bkt-1250000000:/photos", "/mnt/cos", "-o",
                   "allow_other,url=https://cos.example.com,uid=1000,"
                   "fsname=bkt-1250000000:/photos"]


def test_flags_and_forms_of_mount_helpers():
    h = fstab.parse_helper_args(["b-1250000000", "/m", "-sfnv", "-oro", "-t", "fuse.cosfs"])
    assert (h.sloppy, h.fake, h.verbose, h.fstype) == (True, True, True, "fuse.cosfs")
    assert fstab.cosfs_argv(h) == ["b-1250000000", "/m", "-o", "ro,fsname=b-1250000000"]
    # -r is read-only; an explicit fsname wins; the old "cosfs#bucket" form works.
    assert argv_for("cosfs#b-1250000000", "/m", "-r", "-o", "fsname=mine") == \
        ["b-1250000000", "/m", "-o", "fsname=mine,ro"]


def test_sloppy_drops_unknown_options_and_strict_keeps_them(capsys):
    assert argv_for("b-1250000000", "/m", "-s", "-o", "bogus=1,retries=2") == \
        ["b-1250000000", "/m", "-o", "retries=2,fsname=b-1250000000"]
    assert "bogus" in capsys.readouterr().err
    # Without -s cosfs itself refuses the unknown option (one clear line, later).
    assert "bogus=1" in argv_for("b-1250000000", "/m", "-o", "bogus=1")[3]


@pytest.mark.parametrize("args, fragment", [
    (["only-one-arg"], "usage"),
    (["b-1250000000", "/m", "-N", "/proc/1/ns/mnt"], "-N"),
    (["b-1250000000", "/m", "-t", "ext4"], "not cosfs"),
    (["b-1250000000", "/m", "-o", "setuid=alice"], "setuid"),
    (["b-1250000000", "/m", "-x"], "unknown flag"),
    (["b-1250000000", "/m", "-o"], "needs a value"),
])
def test_bad_helper_invocations(args, fragment, capsys):
    assert fstab.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mount.fuse.cosfs: ") and fragment in err, err
    assert len(err.splitlines()) == 1


def test_fake_mount_does_nothing(tmp_path, capsys):
    assert fstab.main(["b-1250000000", str(tmp_path), "-f", "-v", "-o", "_netdev"]) == 0
    assert "cosfs b-1250000000" in capsys.readouterr().err
    assert not is_mounted(tmp_path)


def test_install_and_remove_never_touch_foreign_files(tmp_path):
    written = fstab.install(tmp_path, "/opt/py with space/python")
    assert sorted(p.name for p in written) == ["mount.cosfs", "mount.fuse.cosfs"]
    script = (tmp_path / "mount.fuse.cosfs").read_text()
    assert "exec '/opt/py with space/python' -m cosfs.fstab \"$@\"" in script
    assert (tmp_path / "mount.fuse.cosfs").stat().st_mode & 0o777 == 0o755
    fstab.install(tmp_path, "/usr/bin/python3")  # its own files: replaced quietly
    (tmp_path / "mount.cosfs").write_text("#!/bin/sh\necho someone else's\n")
    with pytest.raises(fstab.HelperError, match="not written by cosfs"):
        fstab.install(tmp_path, "/usr/bin/python3")
    assert fstab.remove(tmp_path) == [tmp_path / "mount.fuse.cosfs"]
    assert (tmp_path / "mount.cosfs").read_text().endswith("someone else's\n")


# -- real mounts through mount(8) -------------------------------------------------


@pytest.fixture
def helper():
    """The helper installed in /sbin where mount(8) looks (removed afterwards unless
    it was there before)."""
    if shutil.which("mount") is None:
        pytest.skip("mount(8) is not installed")
    targets = [fstab.HELPER_DIR / name for name in fstab.HELPER_NAMES]
    foreign = [t for t in targets if t.exists() and not fstab._ours(t)]
    if foreign:
        pytest.skip(f"{foreign[0]} exists and was not written by cosfs")
    existed = all(t.exists() for t in targets)
    proc = subprocess.run([sys.executable, "-m", "cosfs", "install-helper"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    yield
    if not existed:
        fstab.remove(fstab.HELPER_DIR)


def _source_of(mp: Path) -> str | None:
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == str(mp) and fields[2] == "fuse.cosfs":
                return fields[0]
    return None


def _umount_and_wait(mp: Path) -> None:
    """``umount`` as an admin would, then wait for the daemon to finish and exit."""
    pid = control.request(control.socket_path(mp))["pid"]
    proc = subprocess.run(["umount", str(mp)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the mount process did not exit"


@pytest.fixture
def mountpoint(tmp_path):
    mp = tmp_path / "mp"
    mp.mkdir()
    yield mp
    if is_mounted(mp):
        subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)


def test_mount_t_fuse_cosfs(helper, cos_server, bucket, client, mountpoint, tmp_path):
    opts = (f"url={cos_server.url},use_cache={tmp_path / 'cache'},_netdev,nofail,noatime,"
            f"x-systemd.automount,x-systemd.mount-timeout=30,logfile={tmp_path / 'log'}")
    proc = subprocess.run(["mount", "-t", "fuse.cosfs", bucket, str(mountpoint), "-o", opts],
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _source_of(mountpoint) == bucket
    (mountpoint / "hello.txt").write_bytes(b"via mount(8)\n")
    assert client.get_object("hello.txt") == b"via mount(8)\n"
    _umount_and_wait(mountpoint)
    assert not is_mounted(mountpoint)


def test_fstab_line(helper, cos_server, bucket, client, mountpoint, tmp_path):
    table = tmp_path / "fstab"
    table.write_text(
        "# a comment line\n"
        f"{bucket}:/sub {mountpoint} fuse.cosfs _netdev,nofail,"
        "x-systemd.requires=network-online.target,"
        f"url={cos_server.url},use_cache={tmp_path / 'cache'} 0 0\n")
    proc = subprocess.run(["mount", "-T", str(table), str(mountpoint)], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _source_of(mountpoint) == f"{bucket}:/sub"
    # mount -a sees the line as mounted already (same source): no second mount.
    again = subprocess.run(["mount", "-a", "-T", str(table)], env=_env(),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    with open("/proc/self/mounts") as f:
        assert sum(line.split()[1] == str(mountpoint) for line in f) == 1
    (mountpoint / "x.txt").write_bytes(b"from fstab")
    assert client.get_object("sub/x.txt") == b"from fstab"
    _umount_and_wait(mountpoint)


def test_failed_mount_says_why(helper, cos_server, mountpoint):
    proc = subprocess.run(["mount", "-t", "fuse.cosfs", "nosuch-1250000000", str(mountpoint),
                           "-o", f"url={cos_server.url}"], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "bucket nosuch-1250000000 does not exist" in proc.stderr
    assert not is_mounted(mountpoint)
