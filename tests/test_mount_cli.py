"""The ``cosfs`` command: bad input gives one clear line and a non-zero exit;
the daemon returns once the mount is ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from conftest import SECRET_ID, SECRET_KEY, _env, is_mounted


def cosfs(*args: str, env: dict | None = None, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "cosfs", *args], env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(proc, fragment: str, status: int = 1) -> None:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cosfs: ") and fragment in lines[0], lines[0]
    assert SECRET_KEY not in proc.stderr


@pytest.fixture
def mp(tmp_path):
    p = tmp_path / "mp"
    p.mkdir()
    return p


def test_wrong_secret_key(cos_server, bucket, mp):
    env = _env(COS_SECRET_KEY="wrong" + SECRET_KEY)
    one_line_error(cosfs(bucket, str(mp), "-o", f"url={cos_server.url}", env=env),
                   "SignatureDoesNotMatch")


def test_unknown_secret_id(cos_server, bucket, mp):
    env = _env(COS_SECRET_ID="AKIDunknown")
    one_line_error(cosfs(bucket, str(mp), "-o", f"url={cos_server.url}", env=env),
                   "InvalidAccessKeyId")


def test_missing_bucket(cos_server, mp):
    one_line_error(cosfs("nosuch-1250000000", str(mp), "-o", f"url={cos_server.url}"),
                   "bucket nosuch-1250000000 does not exist")


def test_malformed_bucket_name(mp):
    one_line_error(cosfs("Bad_Bucket", str(mp)), "invalid bucket name", status=2)


def test_unreachable_endpoint(bucket, mp):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    one_line_error(cosfs(bucket, str(mp), "-o", f"url=http://127.0.0.1:{port},retries=0"),
                   "cannot reach")


def test_plain_http_to_remote_refused(bucket, mp):
    one_line_error(cosfs(bucket, str(mp), "-o", "url=http://cos.example.com"),
                   "refusing plain HTTP")


@pytest.mark.parametrize("case", ["missing", "file", "nonempty"])
def test_bad_mountpoints(cos_server, bucket, tmp_path, case):
    p = tmp_path / "x"
    if case == "file":
        p.write_text("")
    elif case == "nonempty":
        p.mkdir()
        (p / "f").write_text("")
    fragment = {"missing": "does not exist", "file": "is not a directory",
                "nonempty": "is not empty"}[case]
    one_line_error(cosfs(bucket, str(p), "-o", f"url={cos_server.url}"), fragment)


def test_already_mounted(mnt, bucket, cos_server):
    one_line_error(cosfs(bucket, str(mnt.path), "-o", f"url={cos_server.url}"),
                   "already a mount point")


@pytest.mark.parametrize("opt,fragment", [("bogus", "unknown option 'bogus'"),
                                           ("uid=x", "option uid: invalid value")])
def test_bad_options(bucket, mp, opt, fragment):
    one_line_error(cosfs(bucket, str(mp), "-o", opt), fragment, status=2)


def test_passwd_file_readable_by_others(cos_server, bucket, mp, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(f"{bucket}:{SECRET_ID}:{SECRET_KEY}\n")
    os.chmod(pw, 0o644)
    env = {k: v for k, v in _env().items() if not k.startswith("COS_SECRET")}
    one_line_error(cosfs(bucket, str(mp), "-o", f"url={cos_server.url},passwd_file={pw}",
                         env=env), "must not be accessible by others")


def test_daemon_returns_when_ready_and_passwd_file_works(cos_server, bucket, mp, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(f"{bucket}:{SECRET_ID}:{SECRET_KEY}\n")
    os.chmod(pw, 0o600)
    env = {k: v for k, v in _env().items() if not k.startswith("COS_SECRET")}
    proc = cosfs(bucket, str(mp), "-o",
                 f"url={cos_server.url},passwd_file={pw},use_cache={tmp_path / 'c'}", env=env)
    try:
        assert proc.returncode == 0, proc.stderr
        assert is_mounted(mp)
        (mp / "hello").write_text("hi")
        assert (mp / "hello").read_text() == "hi"
    finally:
        subprocess.run(["fusermount3", "-u", str(mp)], check=False)
    assert not is_mounted(mp)
    with open(f"/proc/{os.getpid()}/cmdline") as f:
        assert SECRET_KEY not in f.read()
