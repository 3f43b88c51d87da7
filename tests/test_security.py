"""Security: secrets stay out of logs, argv, environments and messages; TLS is
verified unless told otherwise; plain HTTP only to loopback unless allowed;
other users reach a mount only with allow_other, and then the kernel enforces
modes; the local server binds loopback and wants signatures."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import SECRET_ID, SECRET_KEY, Mount, _env, is_mounted, make_client
from reliability_util import record
from test_mount_cli import cosfs, one_line_error

TOKEN = "cosfsTestSessionToken0000000000000000000000"
USER = "cosfs-test"


# -- secrets ------------------------------------------------------------------------


def secrets_in(text: str) -> list[str]:
    return [s for s in (SECRET_KEY, TOKEN) if s in text]


def test_debug_log_never_shows_secrets(cos_server, bucket, tmp_path) -> None:
    """``-d`` (debug, foreground) through every kind of operation, failures
    included: neither the secret key nor the session token appears in the log."""
    mp = tmp_path / "mp"
    mp.mkdir()
    log_path = tmp_path / "debug.log"
    env = _env(COS_SECURITY_TOKEN=TOKEN)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cosfs", bucket, str(mp), "-d", "-o",
             f"url={cos_server.url},use_cache={tmp_path / 'cache'},retries=1"],
            env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mp):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        exercise(mp, cos_server)
        status = subprocess.run([sys.executable, "-m", "cosfs", "status", str(mp), "--json"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert not secrets_in(status.stdout + status.stderr)
    finally:
        cos_server.clear_faults()
        subprocess.run(["fusermount3", "-u", str(mp)], check=False)
        proc.wait(60)
    text = log_path.read_text(errors="replace")
    assert " DEBUG " in text and "PutObject" in text  # the log really saw the traffic
    assert re.search(r"(WARNING|ERROR) .*40[34]", text), "the failures were logged"
    assert not secrets_in(text)
    record("security", {"check": "secret key and token in a -d log of every operation "
                                 "(incl. 403/500 failures) and in `cosfs status --json`",
                        "result": "absent", "log_bytes": len(text)})


def exercise(mp: Path, server) -> None:
    """One of each operation, then the same under injected failures."""
    (mp / "d").mkdir()
    (mp / "d" / "f").write_bytes(b"data" * 1000)
    assert (mp / "d" / "f").read_bytes() == b"data" * 1000
    os.chmod(mp / "d" / "f", 0o600)
    os.utime(mp / "d" / "f", (1, 1))
    os.setxattr(mp / "d" / "f", "user.k", b"v")
    os.symlink("f", mp / "d" / "link")
    os.rename(mp / "d", mp / "e")
    os.listdir(mp / "e")
    os.unlink(mp / "e" / "link")
    for status in (403, 500, 404):
        server.set_faults("*", error_rate=1.0, error_status=status)
        for op in (lambda: (mp / "new").write_bytes(b"x"), lambda: os.listdir(mp / "e"),
                   lambda: os.stat(mp / "e" / "missing")):
            try:
                op()
            except OSError:
                pass
        server.clear_faults()


def daemon_pid(mp: Path) -> int:
    """The process serving ``mp`` (its command line names the mount point)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(mp).encode() in cmd and b"cosfs" in b" ".join(cmd):
                return int(entry.name)
    raise AssertionError(f"no process serves {mp}")


def test_secrets_not_in_argv_environment_or_ps(cos_server, bucket, tmp_path) -> None:
    """With a passwd file, the daemon's argv and environment (and every thread or
    child of it) hold no secret, and neither does ``ps`` output."""
    mp = tmp_path / "mp"
    mp.mkdir()
    pw = tmp_path / "passwd"
    pw.write_text(f"{bucket}:{SECRET_ID}:{SECRET_KEY}\n")
    os.chmod(pw, 0o600)
    env = {k: v for k, v in _env().items() if not k.startswith("COS_")}
    proc = cosfs(bucket, str(mp), "-o", f"url={cos_server.url},passwd_file={pw},"
                 f"use_cache={tmp_path / 'cache'}", env=env)
    assert proc.returncode == 0, proc.stderr
    try:
        (mp / "f").write_bytes(b"x")
        pid = daemon_pid(mp)
        pids = [pid, *children(pid)]
        for p in pids:
            for what in ("cmdline", "environ"):
                raw = Path(f"/proc/{p}/{what}").read_bytes().decode(errors="replace")
                assert not secrets_in(raw), f"secret in /proc/{p}/{what}"
        ps = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True,
                            text=True, check=True).stdout
        assert not secrets_in(ps)
    finally:
        subprocess.run(["fusermount3", "-u", str(mp)], check=False)
    record("security", {"check": "secret in the daemon's argv, environ, children, ps",
                        "result": "absent", "processes": len(pids)})


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found + [g for c in found for g in children(c)]


# -- TLS and plain HTTP -----------------------------------------------------------------


def test_ca_bundle_makes_a_private_ca_work(mounter, cos_server, bucket, tls, certs) -> None:
    """TLS is verified by default (tests/test_bad_input.py: an untrusted chain is
    refused); ``-o ca_bundle=`` trusts a private CA and the mount works over TLS."""
    m = mounter([f"ca_bundle={certs[0]}"])
    m.remount([f"url={tls.url}"])  # the later url= wins: same bucket, through TLS
    (m.path / "over-tls").write_bytes(b"secret payload")
    assert (m.path / "over-tls").read_bytes() == b"secret payload"
    assert make_client(cos_server, bucket).get_object("over-tls") == b"secret payload"
    assert tls.handshake_failures == 0 and tls.served > 0
    record("security", {"check": "HTTPS to a private CA with -o ca_bundle",
                        "result": "mounts, reads and writes"})


def test_no_check_certificate_is_explicit(mounter, tls) -> None:
    """Only ``-o no_check_certificate`` accepts an unverifiable chain."""
    m = mounter(["no_check_certificate"])
    m.remount([f"url={tls.url}"])
    (m.path / "f").write_bytes(b"x")
    assert (m.path / "f").read_bytes() == b"x"


def test_allow_http_lets_plain_http_through(bucket, tmp_path) -> None:
    """Plain HTTP to a non-loopback host is refused (tests/test_mount_cli.py) unless
    ``-o allow_http``; with it the mount goes on to talk to the endpoint (which is
    no COS there, so it fails later, for another reason)."""
    mp = tmp_path / "mp"
    mp.mkdir()
    proc = cosfs(bucket, str(mp), "-o", "url=http://10.255.255.1:9,allow_http,"
                 "connect_timeout=1,retries=0")
    one_line_error(proc, "http://10.255.255.1:9")
    assert "refusing plain HTTP" not in proc.stderr
    record("security", {"check": "plain HTTP to a non-loopback host",
                        "result": "refused; -o allow_http lets it through"})


# -- other users ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def other_user() -> pwd.struct_passwd:
    """An unprivileged account for permission checks (created once if missing)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER)


def as_user(user: pwd.struct_passwd, code: str) -> str:
    """Run Python ``code`` as ``user``; returns its output (errno names on failure)."""
    proc = subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
         sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


PROBE = """
import errno, os, sys
def probe(fn, *a):
    try:
        fn(*a)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
p = sys.argv[1] if len(sys.argv) > 1 else {path!r}
print(" ".join([
    probe(os.stat, p),
    probe(lambda: open(os.path.join(p, "secret"), "rb").read()),
    probe(lambda: open(os.path.join(p, "public"), "rb").read()),
    probe(lambda: open(os.path.join(p, "mine"), "wb").write(b"x")),
    probe(os.chmod, os.path.join(p, "secret"), 0o666),
]))
"""


@pytest.fixture
def shared_mountpoint() -> Iterator[Path]:
    """A mount point other users can reach (pytest's own tmp dirs are private)."""
    base = Path(tempfile.mkdtemp(prefix="cosfs-perm-"))
    os.chmod(base, 0o755)
    (base / "mnt").mkdir(mode=0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def mount_at(base: Path, server, bucket: str, options: list[str]) -> Mount:
    return Mount(server, bucket, base / "mnt", base / "cache", options).start()


@pytest.mark.parametrize("allow_other", [False, True], ids=["private", "allow_other"])
def test_other_users(cos_server, bucket, shared_mountpoint, other_user, allow_other) -> None:
    """Without allow_other another user cannot even stat the mount. With it the
    kernel checks modes (default_permissions): a 0600 file of root's is EACCES to
    them, a 0644 one readable, root's directory not writable, root's file not
    theirs to chmod."""
    m = mount_at(shared_mountpoint, cos_server, bucket,
                 ["allow_other"] if allow_other else [])
    try:
        (m.path / "secret").write_bytes(b"root only")
        os.chmod(m.path / "secret", 0o600)
        (m.path / "public").write_bytes(b"everyone")
        os.chmod(m.path / "public", 0o644)
        os.chmod(m.path, 0o755)
        opts = next(line.split()[3] for line in Path("/proc/self/mounts").read_text()
                    .splitlines() if line.split()[1] == str(m.path))
        got = as_user(other_user, PROBE.format(path=str(m.path)))
    finally:
        m.unmount()
    if allow_other:
        assert "allow_other" in opts and "default_permissions" in opts, opts
        assert got == "ok EACCES ok EACCES EPERM", got
    else:
        assert "allow_other" not in opts, opts
        assert got.split()[0] == "EACCES", got
    record("security", {"check": f"another user, {'with' if allow_other else 'without'} "
                                 "allow_other: stat mount, read 0600, read 0644, create, "
                                 "chmod", "result": got})


# -- the local server ----------------------------------------------------------------


def test_server_binds_loopback_and_wants_signatures(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "cosfs.server", "--root", str(root),
                             "--port", "0", "--bucket", "sec-1250000000"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        assert bound_addresses(port) == {"127.0.0.1"}
        r = requests.get(f"http://127.0.0.1:{port}/sec-1250000000/", timeout=10)
        assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
        r = requests.put(f"http://127.0.0.1:{port}/sec-1250000000/x", data=b"x", timeout=10)
        assert r.status_code == 403
    finally:
        proc.terminate()
        proc.wait(10)
    record("security", {"check": "cosfs-server defaults: bind address, unsigned request",
                        "result": "127.0.0.1 only; 403 AccessDenied"})


def bound_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if int(hexport, 16) == port and state == "0A":  # LISTEN
                if width == 8:
                    found.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add(addr)
    return found


def test_wrong_key_message_names_no_secret(cos_server, bucket, tmp_path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    wrong = "Z" * len(SECRET_KEY)
    proc = cosfs(bucket, str(mp), "-o", f"url={cos_server.url}",
                 env=_env(COS_SECRET_KEY=wrong))
    one_line_error(proc, "SignatureDoesNotMatch")
    assert wrong not in proc.stderr  # the key tried is not echoed either
