"""What a mount logs: every failed COS request is one line carrying the request id
the server sent (what Tencent support asks for), and a debug log never contains the
secret key."""

from __future__ import annotations

import base64
import os

import pytest
from conftest import SECRET_KEY


def server_pid_of(request_id: str) -> int:
    """The local server's request ids encode its pid (``<time>_<pid>_<n>``, base64)."""
    raw = base64.b64decode(request_id + "=" * (-len(request_id) % 4)).decode()
    return int(raw.split("_")[1], 16)


def failure_lines(log: str, key: str, op: str) -> list[str]:
    return [ln for ln in log.splitlines()
            if f"{op} '{key}'" in ln and ("ERROR" in ln or "WARNING" in ln)]


def request_id_in(line: str) -> str:
    assert "[request id " in line, line
    return line.split("[request id ", 1)[1].split("]", 1)[0]


def test_failures_carry_the_request_id_and_no_secret(mounter, cos_server, client):
    client.put_object("denied.txt", b"secret data")
    m = mounter(["dbglevel=debug", "stat_cache_expire=0"])
    try:
        cos_server.set_faults("GetObject", error_rate=1.0, error_status=403)
        with pytest.raises(OSError):
            (m.path / "denied.txt").read_bytes()
        cos_server.clear_faults()
        cos_server.set_faults("PutObject", error_rate=1.0, error_status=403)
        with pytest.raises(OSError), open(m.path / "upload.txt", "wb") as f:
            f.write(os.urandom(1000))
    finally:
        cos_server.clear_faults()
    (m.path / "fine.txt").write_bytes(b"fine")
    assert m.unmount() == 0
    log = m.log()
    assert " DEBUG " in log  # the debug log is really on, so the next check means something
    assert SECRET_KEY not in log
    for key, op in (("denied.txt", "GetObject"), ("upload.txt", "PutObject")):
        lines = failure_lines(log, key, op)
        assert lines, f"no failure line for {op} {key}:\n{log[-3000:]}"
        for line in lines:
            assert "403 AccessDenied" in line, line
            # the id the server sent, not one made up on our side
            assert server_pid_of(request_id_in(line)) == cos_server.proc.pid, line
