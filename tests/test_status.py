"""``cosfs status`` and ``cosfs unmount`` against real mounts of the local server:
progress of a slowed upload, the JSON output, the control socket's safety, and an
unmount that waits for pending uploads instead of dropping them."""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
import time

import pytest
from conftest import SECRET_KEY, _env, is_mounted

from cosfs import control

MiB = 1024 * 1024
# Slow multipart uploads: 1 MiB parts, one at a time, each part answered late,
# starting at close.
SLOW = ["writeback", "writeback_delay=0", "multipart_size=1", "parallel_count=1"]


def cosfs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cosfs", *args], env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def status_json(*args: str) -> list[dict]:
    proc = cosfs("status", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def write_file(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def test_status_shows_upload_progress(mounter, cos_server, client):
    m = mounter(SLOW)
    data = os.urandom(12 * MiB + 12345)
    cos_server.set_faults("UploadPart", latency_ms=500)
    try:
        write_file(m.path / "big.bin", data)  # write-back: returns before the upload
        samples: list[tuple[int, int]] = []
        text = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            [st] = status_json(str(m.path))
            ups = [u for u in st["uploads"] if u["key"] == "big.bin"]
            if ups:
                samples.append((ups[0]["bytes_done"], ups[0]["bytes_total"]))
                if "big.bin" not in text:  # the text form, while the upload runs
                    text = cosfs("status", str(m.path)).stdout
            elif samples:
                break
            time.sleep(0.2)
    finally:
        cos_server.clear_faults()
    done = [d for d, _ in samples]
    assert samples and all(t == len(data) for _, t in samples), samples
    assert done == sorted(done), f"progress went backwards: {done}"
    middle = sorted({d for d in done if 0 < d < len(data)})
    assert len(middle) >= 2, f"progress did not advance while uploading: {done}"
    # The text form in a pipe: a bar per upload, percentages, no terminal escapes.
    assert "big.bin" in text and "%" in text and "/s" in text and "ETA" in text, text
    assert "\x1b" not in text
    assert "#" in text or "-]" in text, text
    assert "uploads: 1 running" in text, text
    assert client.get_object("big.bin") == data


def test_status_json_every_mount(mounter, cos_server, client):
    a = mounter(name="a")
    b = mounter(["ro"], name="b")
    # Past the 8 MiB (four times the mount's 2 MiB kernel read-ahead) where the
    # mount's own read-ahead starts.
    client.put_object("seen.txt", b"x" * (24 << 20))
    write_file(a.path / "small.txt", b"hello")
    with open(b.path / "seen.txt", "rb") as f:  # sequential reads: read-ahead at work
        while f.read(4096):
            pass
    proc = cosfs("status", "--json")
    # Other mounts on this machine may not answer (exit 1); ours must.
    assert proc.returncode in (0, 1), proc.stderr
    assert SECRET_KEY not in proc.stdout
    statuses = {st["mountpoint"]: st for st in json.loads(proc.stdout)}
    sa, sb = statuses[str(a.path)], statuses[str(b.path)]
    assert "error" not in sa and "error" not in sb, (sa, sb)
    for st in (sa, sb):
        assert st["mount"]["bucket"] == a.bucket
        assert st["mount"]["endpoint"] == cos_server.url
        assert st["pid"] and st["uptime"] >= 0 and st["mounted"] is True
        assert st["cache"]["limit_bytes"] > 0
    assert sb["mount"]["read_only"] is True
    assert sa["requests"]["PutObject"]["calls"] >= 1
    assert sa["requests"]["total"]["calls"] >= sa["requests"]["PutObject"]["calls"]
    assert sb["readahead"]["hits"] + sb["readahead"]["misses"] > 0
    assert sb["readahead"]["hits"] > 0, sb["readahead"]
    assert sa["recovery"]["uploaded"] == 0


def test_status_text_on_a_terminal_and_errors(mnt, tmp_path):
    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "cosfs", "status", str(mnt.path)],
                          env={k: v for k, v in _env().items() if k != "NO_COLOR"},
                          stdout=follower, stderr=subprocess.PIPE, timeout=60)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.returncode == 0, proc.stderr
    assert b"\x1b[1m" in out and str(mnt.path).encode() in out
    # A directory that is not a cosfs mount: one line, exit 1.
    bad = cosfs("status", str(tmp_path))
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"cosfs: {tmp_path} is not a cosfs mount"


def test_control_socket_is_private(mnt):
    path = control.socket_path(mnt.path)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert control.request(path, "status")["pid"] == mnt.proc.pid
    with pytest.raises(control.ControlError, match="unknown request"):
        control.request(path, "shutdown")
    mnt.unmount()
    assert not path.exists()


def test_unmount_waits_for_pending_uploads(mounter, cos_server, client):
    m = mounter(SLOW)
    data = os.urandom(8 * MiB + 1)
    cos_server.set_faults("UploadPart", latency_ms=500)
    try:
        write_file(m.path / "pending.bin", data)
        refused = cosfs("unmount", "--no-wait", str(m.path))
        assert refused.returncode == 1
        line = refused.stderr.strip()
        assert "not unmounting" in line and "pending.bin" in line, line
        assert is_mounted(m.path) and m.proc.poll() is None
        started = time.monotonic()
        done = cosfs("unmount", str(m.path))
    finally:
        cos_server.clear_faults()
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started > 1.0  # it did wait for the slow parts
    assert "pending.bin" in done.stdout and "unmounted" in done.stdout
    assert "\x1b" not in done.stdout
    assert not is_mounted(m.path)
    assert m.proc.wait(10) == 0
    assert client.get_object("pending.bin") == data


def test_unmount_without_pending_uploads_and_errors(mnt, tmp_path):
    write_file(mnt.path / "f.txt", b"data")
    quick = cosfs("unmount", "--no-wait", str(mnt.path))
    assert quick.returncode == 0, quick.stderr
    assert not is_mounted(mnt.path)
    assert mnt.proc.wait(10) == 0
    again = cosfs("unmount", str(mnt.path))
    assert again.returncode == 1
    assert again.stderr.strip() == f"cosfs: {mnt.path} is not a cosfs mount"

