"""The server every mount talks to: the bundled ``cosfs-server`` or ``moto_server``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .procs import free_port, spawn, stop_process


class Server:
    """A server child process on loopback. ``native_cos`` says whether cosfs can use its
    own COS signature (else it signs SigV4 like the peers)."""

    name = "server"
    native_cos = False

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def stop(self) -> None:
        stop_process(self.proc)

    def stats(self) -> dict[str, int] | None:
        """Request counts per operation since the last reset, or None if unsupported."""
        return None

    def reset_stats(self) -> None:
        """Zero the request counters (no-op where there are none)."""

    def create_bucket(self, store: object) -> None:
        """Make the bench bucket exist (cosfs-server does it from the command line)."""


class CosServer(Server):
    name = "cosfs"
    native_cos = True

    @classmethod
    def start(cls, root: Path, bucket: str, env: dict[str, str], log_path: Path,
              latency_ms: int = 0) -> CosServer:
        root.mkdir(parents=True, exist_ok=True)
        # stdout carries the "listening on" line; the log gets stderr.
        cmd = [sys.executable, "-m", "cosfs.server", "--root", str(root), "--port", "0",
               "--bucket", bucket, "--latency-ms", str(latency_ms)]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        url = _read_listening_line(proc, log_path)
        return cls(proc, url, log_path)

    def _admin(self, method: str, path: str) -> dict:
        data = b"{}" if method == "POST" else None
        req = urllib.request.Request(f"{self.url}/_admin/{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else {}

    def stats(self) -> dict[str, int]:
        ops = self._admin("GET", "stats").get("ops", {})
        return {op: int(v.get("count", 0)) for op, v in ops.items() if v.get("count")}

    def reset_stats(self) -> None:
        self._admin("POST", "stats/reset")


def _read_listening_line(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        if not line:
            raise RuntimeError(f"cosfs-server exited ({proc.wait()}); see {log_path}")
        if line.startswith("listening on "):
            return line.split()[-1].strip()
    stop_process(proc)
    raise RuntimeError("cosfs-server did not report its address in time")


class MotoServer(Server):
    name = "moto"

    @classmethod
    def start(cls, bucket: str, env: dict[str, str], log_path: Path) -> MotoServer:
        port = free_port()
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        proc = spawn(cmd, env, log_path)
        url = f"http://127.0.0.1:{port}"
        _wait_http(url, proc, log_path)
        return cls(proc, url, log_path)

    def create_bucket(self, store: object) -> None:
        store.create_bucket()  # type: ignore[attr-defined]


def _wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited ({proc.returncode}); see {log_path}")
        try:
            urllib.request.urlopen(url + "/", timeout=2).close()
            return
        except OSError as exc:
            # Any HTTP answer (even 4xx/5xx) means it is up.
            if getattr(exc, "code", None):
                return
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError("moto_server did not start in time")
