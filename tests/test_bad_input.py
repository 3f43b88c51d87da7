"""Bad input, each with the exact message or errno it must get: command lines,
credentials and endpoints that cannot work (tests/test_mount_cli.py covers the
first few), then hostile names, odd keys, oversized keys, attributes and files,
and archived objects inside a mount."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import APPID, SECRET_ID, SECRET_KEY, Mount, _env, fsync_dir, make_client
from reliability_util import record
from test_mount_cli import cosfs, one_line_error

from cosfs.ranges import PartLayout

MiB = 1024 * 1024


@pytest.fixture
def mp(tmp_path: Path) -> Path:
    p = tmp_path / "mp"
    p.mkdir()
    return p


def refused(case: str, proc, fragment: str, status: int = 1) -> None:
    """One line on stderr, ``cosfs: `` then the fragment, the exit status, no secret;
    and a row in the report."""
    one_line_error(proc, fragment, status)
    record("bad_input", {"input": case, "result": proc.stderr.strip()})


# -- the command line ---------------------------------------------------------------


@pytest.mark.parametrize("args,fragment", [
    (["-o"], "-o needs a value"),
    (["-o", "retries=-1"], "option retries: invalid value '-1'"),
    (["-o", "umask=9"], "option umask: invalid value '9'"),
    (["-o", "ro=maybe"], "option ro takes no value or 0/1, not 'maybe'"),
    (["-o", "url"], "option url needs a value (url=...)"),
    (["-o", "dbglevel=loud"], "dbglevel must be one of"),
    (["-x"], "unknown flag '-x'"),
    (["--no-such-option=1"], "unknown option 'no_such_option'"),
], ids=["o-without-value", "negative-int", "bad-octal", "flag-with-word", "str-without-value",
        "bad-log-level", "unknown-flag", "unknown-long-option"])
def test_malformed_options(bucket, mp, args, fragment) -> None:
    refused(f"cosfs ... {' '.join(args)}", cosfs(bucket, str(mp), *args), fragment, status=2)


def test_too_many_arguments(bucket, mp) -> None:
    refused("three positional arguments", cosfs(bucket, str(mp), "extra"),
            "usage: cosfs BUCKET-APPID[:/PREFIX] MOUNTPOINT", status=2)


def test_prefix_with_dot_dot(cos_server, bucket, mp) -> None:
    refused("bucket:/a/../b", cosfs(f"{bucket}:/a/../b", str(mp), "-o",
                                    f"url={cos_server.url}"),
            "invalid prefix component '..'")


def test_url_with_another_scheme(bucket, mp) -> None:
    refused("-o url=ftp://...", cosfs(bucket, str(mp), "-o", "url=ftp://127.0.0.1:21"),
            "invalid url 'ftp://127.0.0.1:21': expected http(s)://HOST[:PORT]")


# -- credentials ----------------------------------------------------------------------


def no_secret_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in _env().items() if not k.startswith("COS_")}
    env["HOME"] = str(home)  # no ~/.passwd-cosfs of the machine's
    return env


def test_no_credentials_anywhere(cos_server, bucket, mp, tmp_path) -> None:
    if Path("/etc/passwd-cosfs").exists():
        pytest.skip("this machine has /etc/passwd-cosfs")
    refused("no credentials", cosfs(bucket, str(mp), "-o", f"url={cos_server.url}",
                                    env=no_secret_env(tmp_path)),
            "no credentials: set COS_SECRET_ID and COS_SECRET_KEY")


@pytest.mark.parametrize("content,fragment", [
    (None, "does not exist"),
    ("just-one-field\n", "line 1: expected bucket:SecretId:SecretKey"),
    (f"other-1250000000:{SECRET_ID}:{SECRET_KEY}\n", "no key pair for bucket"),
], ids=["missing", "malformed-line", "other-bucket-only"])
def test_bad_passwd_files(cos_server, bucket, mp, tmp_path, content, fragment) -> None:
    pw = tmp_path / "passwd"
    if content is not None:
        pw.write_text(content)
        os.chmod(pw, 0o600)
    proc = cosfs(bucket, str(mp), "-o", f"url={cos_server.url},passwd_file={pw}",
                 env=no_secret_env(tmp_path))
    refused(f"passwd file: {fragment}", proc, fragment)


# -- endpoints ---------------------------------------------------------------------


def test_tls_certificate_not_trusted(bucket, mp, tls) -> None:
    """A self-signed chain and no ``ca_bundle``: refused, and the line says it is
    the certificate (not "cannot connect", which sends people to the firewall)."""
    proc = cosfs(bucket, str(mp), "-o", f"url={tls.url}")
    refused("HTTPS endpoint with an untrusted certificate", proc,
            f"TLS certificate of {tls.url} not trusted: certificate verify failed: "
            "unable to get local issuer certificate (for a private CA use "
            "-o ca_bundle=FILE)")
    assert tls.handshake_failures >= 1


def test_ca_bundle_that_is_not_a_certificate(bucket, mp, tls, tmp_path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    proc = cosfs(bucket, str(mp), "-o", f"url={tls.url},ca_bundle={junk}")
    refused("ca_bundle that is not a certificate", proc,
            f"cannot use ca_bundle {junk}: no certificate or crl found")


# -- the cache directory ---------------------------------------------------------------


def test_cache_directory_read_only(cos_server, bucket, mp, tmp_path) -> None:
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(cache)],
                   check=True)
    try:
        proc = cosfs(bucket, str(mp), "-o", f"url={cos_server.url},use_cache={cache}")
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)
    refused("cache directory on a read-only filesystem", proc,
            f"cache directory {cache}/{bucket}-")  # the mount's own, below use_cache
    assert proc.stderr.rstrip().endswith("is not writable: Read-only file system")


def test_cache_directory_of_another_mount(mounter, cos_server, bucket, tmp_path) -> None:
    """Two mounts on one cache directory would mix their journals: the second is
    refused with one line, before it mounts anything."""
    first = mounter()
    other = tmp_path / "other"
    other.mkdir()
    proc = cosfs(bucket, str(other), "-o", f"url={cos_server.url},use_cache={first.cache_root}")
    refused("cache directory used by another mount", proc,
            f"cache directory {first.cache_dir} is used by another mount")
    assert not os.path.ismount(other)


def _kill_with_unsent(m: Mount, name: str) -> bytes:
    data = f"{name} was never closed".encode()
    fd = os.open(m.path / name, os.O_WRONLY | os.O_CREAT, 0o644)
    assert os.write(fd, data) == len(data)
    m.crash(fd)
    return data


def test_one_cache_directory_for_two_buckets(mounter, cos_server, bucket, client,
                                             tmp_path) -> None:
    """s3fs users give every bucket the same use_cache (often /tmp): each mount keeps
    its cache in a directory of its own below it, so the changes a crash left go to
    the bucket they were written to, and del_cache deletes no other bucket's."""
    a = mounter()
    unsent = _kill_with_unsent(a, "unsent.txt")
    other = f"t-other-{os.getpid()}-{APPID}"
    cos_server.create_bucket(other)
    (tmp_path / "b").mkdir()
    b = Mount(cos_server, other, tmp_path / "b", a.cache_root, ["del_cache"])
    try:
        b.start()
        (b.path / "b.txt").write_bytes(b"b")
        assert os.listdir(b.path) == ["b.txt"]
        b_cache = b.cache_dir
        assert b.unmount() == 0
    finally:
        b.kill()
    assert not b_cache.exists()  # del_cache: nothing unsent, so it went at unmount
    other_client = make_client(cos_server, other)
    assert [o.key for o in other_client.list_objects().contents] == ["b.txt"]
    a.start()
    assert client.get_object("unsent.txt") == unsent


def test_del_cache_deletes_no_unsent_change_and_no_live_cache(mounter, cos_server, bucket,
                                                              client, mp) -> None:
    a = mounter()
    unsent = _kill_with_unsent(a, "unsent.txt")
    a.start(["del_cache"])  # recovery first: the crash's change is uploaded
    assert client.get_object("unsent.txt") == unsent
    proc = cosfs(bucket, str(mp), "-o",
                 f"url={cos_server.url},use_cache={a.cache_root},del_cache")
    refused("del_cache on the cache of a live mount", proc,
            f"cache directory {a.cache_dir} is used by another mount")
    (a.path / "after.txt").write_bytes(b"still cached")
    assert client.get_object("after.txt") == b"still cached"
    assert (a.cache_dir / "journal.sqlite").exists()


def test_del_cache_keeps_a_cache_that_holds_unsent_changes(mounter, fresh_server) -> None:
    client = make_client(fresh_server, fresh_server.bucket)
    m = mounter(["del_cache", "retries=0"], server=fresh_server,
                bucket_name=fresh_server.bucket)
    fresh_server.set_faults("PutObject", error_rate=1.0, error_status=503)
    with pytest.raises(OSError) as failed:
        (m.path / "f").write_bytes(b"kept in the cache")
    assert failed.value.errno == errno.EIO
    cache = m.cache_dir
    assert m.unmount() == 0
    assert (cache / "journal.sqlite").exists()
    assert "del_cache: " in m.log() and "holds changes not on the server yet" in m.log()
    fresh_server.clear_faults()
    m.start()
    assert client.get_object("f") == b"kept in the cache"


# -- names inside the mount ------------------------------------------------------------

HOSTILE = ["new\nline", "tab\there", "ctrl\x01char", "del\x7f", "carriage\rreturn",
           "back\\slash", "\\", "star*", 'quo"te', "lt<gt>", "pi|pe", "co:lon", " lead",
           "trail ", "-dash", "~tilde", "sin'gle", "%2e%2e", "%2F", "...", "rtl\u202eexe.txt",
           "zero\u200bwidth", "emoji\U0001f600", "e\u0301combining"]


def test_hostile_names_round_trip(mnt, client) -> None:
    """Names with control characters, backslashes and other odd bytes are stored
    as exactly those bytes, listed, read, renamed and deleted like any other."""
    for name in HOSTILE:
        data = name.encode("utf-8")
        (mnt.path / name).write_bytes(data)
        assert client.get_object(name) == data, repr(name)
    assert sorted(os.listdir(mnt.path)) == sorted(HOSTILE)
    mnt.remount()
    assert sorted(os.listdir(mnt.path)) == sorted(HOSTILE)
    for name in HOSTILE:
        assert (mnt.path / name).read_bytes() == name.encode(), repr(name)
        os.rename(mnt.path / name, mnt.path / (name + ".moved"))
    fsync_dir(mnt.path)  # the old keys' DELETEs may still be running until then
    assert sorted(o.key for o in client.list_objects().contents) == \
        sorted(n + ".moved" for n in HOSTILE)
    for name in HOSTILE:
        os.unlink(mnt.path / (name + ".moved"))
    assert client.list_objects().contents == []
    record("bad_input", {"input": f"{len(HOSTILE)} hostile names (control characters, "
                                  "backslash, quotes, bidi, ...)",
                         "result": "stored byte for byte, listed, renamed, deleted"})


def test_names_the_kernel_refuses_never_reach_cos(mnt, client) -> None:
    """Invalid UTF-8 is EINVAL (COS keys are UTF-8); '/' and NUL cannot be sent."""
    with pytest.raises(OSError) as e:
        os.open(os.path.join(os.fsencode(mnt.path), b"bad\xff\xfe"),
                os.O_WRONLY | os.O_CREAT, 0o644)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(ValueError):
        (mnt.path / "nul\0byte").write_bytes(b"x")
    assert client.list_objects().contents == []
    record("bad_input", {"input": "name that is not UTF-8", "result": "EINVAL"})


ODD_KEYS = ["..", ".", "../escape", "./dot", "/leading", "//double", "a/..", "a/.",
            "a/../../etc/passwd", "b//c", "c/./d", "x" * 256, "ok/" + "y" * 256, "fine"]


def test_odd_keys_are_hidden_and_never_escape(mounter, bucket, cos_server) -> None:
    """Keys other tools wrote whose components a path cannot show ('.', '..', empty,
    over 255 bytes) are left out of listings and cannot be reached; the others
    still work."""
    client = make_client(cos_server, bucket)
    for key in ODD_KEYS:
        client.put_object(key, key.encode())
    m = mounter()
    assert sorted(os.listdir(m.path)) == ["a", "b", "c", "fine", "ok"]
    assert os.listdir(m.path / "a") == []
    assert os.listdir(m.path / "b") == []
    assert os.listdir(m.path / "c") == []
    assert os.listdir(m.path / "ok") == []
    assert (m.path / "fine").read_bytes() == b"fine"
    # '..' inside the mount is the kernel's: it never names an object.
    assert os.path.realpath(m.path / "a" / "..") == str(m.path)
    with pytest.raises(OSError) as e:
        os.stat(m.path / ("x" * 256))
    assert e.value.errno == errno.ENAMETOOLONG
    # Removing the visible tree leaves the hidden keys alone.
    for d in ("a", "b", "c", "ok"):
        with pytest.raises(OSError) as e:
            os.rmdir(m.path / d)
        assert e.value.errno == errno.ENOTEMPTY, d
    record("bad_input", {"input": f"{len(ODD_KEYS) - 1} keys with '.', '..', empty or "
                                  "over-long components", "result": "hidden; ENOTEMPTY "
                                  "for their directories; nothing outside the mount"})


# -- sizes --------------------------------------------------------------------------


def test_key_length_limits(mnt, client) -> None:
    """850 bytes per key (with a directory's slash), 255 per component: exactly at
    the limit works, one byte more is ENAMETOOLONG, for create, mkdir and rename,
    and a directory rename that would push a key below it over the limit moves
    nothing."""
    d = mnt.path
    parts = []
    for _ in range(3):
        parts.append("d" * 250)
        d = d / parts[-1]
        d.mkdir()
    used = len("/".join(parts)) + 1  # 753 bytes of prefix, slash included
    (d / ("f" * (850 - used))).write_bytes(b"at the limit")
    with pytest.raises(OSError) as e:
        (d / ("g" * (851 - used))).write_bytes(b"over")
    assert e.value.errno == errno.ENAMETOOLONG
    (d / ("h" * (849 - used))).mkdir()  # its marker key ends in '/': 850 bytes
    with pytest.raises(OSError) as e:
        (d / ("i" * (850 - used))).mkdir()
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as e:
        os.rename(d / ("f" * (850 - used)), d / ("j" * (851 - used)))
    assert e.value.errno == errno.ENAMETOOLONG
    # Renaming the top directory to a longer name would push the deepest keys over.
    before = sorted(o.key for o in client.list_objects(prefix="d").contents)
    with pytest.raises(OSError) as e:
        os.rename(mnt.path / parts[0], mnt.path / ("e" * 255))
    assert e.value.errno == errno.ENAMETOOLONG
    assert sorted(o.key for o in client.list_objects(prefix="d").contents) == before
    assert not (mnt.path / ("e" * 255)).exists()
    record("bad_input", {"input": "keys of 851 bytes (create, mkdir, rename, directory "
                                  "rename)", "result": "ENAMETOOLONG, nothing moved"})


def test_xattr_limits(mnt, client) -> None:
    """COS keeps 2 KB of user metadata: a value that cannot fit is E2BIG, a set that
    would overflow is ENOSPC, on files (uploaded or not yet) and directories alike;
    what was stored before stays."""
    f = mnt.path / "f"
    f.write_bytes(b"x")
    d = mnt.path / "d"
    d.mkdir()
    fd = os.open(mnt.path / "unsent", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"pending")
        for target in (f, d, mnt.path / "unsent"):
            os.setxattr(target, "user.keep", b"v")
            with pytest.raises(OSError) as e:
                os.setxattr(target, "user.big", b"v" * 2100)
            assert e.value.errno == errno.E2BIG, target
            with pytest.raises(OSError) as e:
                for i in range(8):
                    os.setxattr(target, f"user.fill{i}", b"w" * 300)
            assert e.value.errno == errno.ENOSPC, target
            assert os.getxattr(target, "user.keep") == b"v"
    finally:
        os.close(fd)
    mnt.remount()
    for target in (f, d, mnt.path / "unsent"):
        assert os.getxattr(target, "user.keep") == b"v", target
    record("bad_input", {"input": "xattr value over 2 KB / xattrs overflowing 2 KB",
                         "result": "E2BIG / ENOSPC; earlier attributes kept"})


def test_largest_file(mnt, client) -> None:
    """cosfs's largest file is what 10,000 parts of the configured sizes hold (about
    7.8 TiB with 8 MiB parts): a write or truncate beyond it is EFBIG, and nothing
    is uploaded for it."""
    limit = PartLayout(8 * MiB).max_size
    assert limit > 7 * 2**40
    p = mnt.path / "huge"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x", limit)
        assert e.value.errno == errno.EFBIG
        with pytest.raises(OSError) as e:
            os.ftruncate(fd, limit + 1)
        assert e.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    assert client.get_object("huge") == b""
    record("bad_input", {"input": f"write/truncate past {limit} bytes (10,000 parts)",
                         "result": "EFBIG"})


def test_file_larger_than_the_cache_limit(mounter, client) -> None:
    """``cache_size_mb`` bounds unsent data: a file that outgrows it gets ENOSPC from
    write(); what write() accepted is uploaded at close."""
    m = mounter(["cache_size_mb=2"])
    accepted = 0
    fd = os.open(m.path / "big", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as e:
            for _ in range(4):
                accepted += os.write(fd, b"z" * MiB)
        assert e.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert 0 < accepted <= 2 * MiB
    assert client.get_object("big") == b"z" * accepted
    record("bad_input", {"input": "file larger than cache_size_mb", "result": "ENOSPC"})


# -- archived objects ----------------------------------------------------------------


@pytest.mark.parametrize("klass", ["ARCHIVE", "DEEP_ARCHIVE"])
def test_archived_objects(mounter, sdk, bucket, klass) -> None:
    """Reading, changing in place, copying (rename) or re-tagging (chmod) an archived
    object is EACCES (restore it first); listing, stat, unlink and replacing it
    whole work."""
    for key in ("cold", "cold2", "cold3"):
        sdk.put_object(Bucket=bucket, Key=key, Body=b"frozen", StorageClass=klass)
    m = mounter()
    cold = m.path / "cold"
    assert cold.stat().st_size == 6 and stat.S_ISREG(cold.stat().st_mode)
    outcomes = {}
    for what, op in {  # the last one leaves unsent data behind (kept for a retry)
        "read": lambda: cold.read_bytes(),
        "rename": lambda: os.rename(cold, m.path / "moved"),
        "chmod": lambda: os.chmod(cold, 0o600),
        "write in place": lambda: _write_at(cold, 2, b"X"),
    }.items():
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EACCES, what
        outcomes[what] = "EACCES"
    (m.path / "cold2").write_bytes(b"replaced")
    assert (m.path / "cold2").read_bytes() == b"replaced"
    os.unlink(m.path / "cold3")
    assert sorted(os.listdir(m.path)) == ["cold", "cold2"]
    record("bad_input", {"input": f"{klass} object: read, write in place, rename, chmod",
                         "result": ", ".join(f"{k}: {v}" for k, v in outcomes.items())
                         + "; replace and unlink work"})


def _write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
