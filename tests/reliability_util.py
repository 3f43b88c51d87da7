"""Helpers shared by the reliability tests (model, faults, bad input, security).

``record`` appends one row of figures to ``$COSFS_REPORT_DIR/<section>.jsonl`` when
that variable is set (``scripts/reliability-report`` sets it and renders the rows
into the tables of docs/RELIABILITY.md); otherwise it does nothing. Tests compute
and assert their figures either way, so a report only ever shows what was checked.

``timed`` runs one filesystem call with a deadline: a call into a FUSE mount that
never returns cannot be interrupted, so it runs in a daemon thread and the test
fails (naming the call) instead of hanging.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from socket_util import pump

T = TypeVar("T")


def record(section: str, row: dict[str, Any]) -> None:
    """Append ``row`` to the report section ``section`` (if a report is being made)."""
    out = os.environ.get("COSFS_REPORT_DIR")
    if not out:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / f"{section}.jsonl", "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


class Hang(AssertionError):
    """A filesystem call did not return within its deadline."""


def timed(fn: Callable[[], T], timeout: float, what: str = "") -> T:
    """``fn()`` with a deadline; raises :class:`Hang` if it does not return in time
    (the thread stays blocked until the mount is killed)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise Hang(f"{what or fn!r} did not return within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass
class Tally:
    """Outcome counts of the operations of one fault scenario."""

    tried: int = 0
    ok: int = 0
    eio: int = 0
    other: dict[str, int] = field(default_factory=dict)
    slowest: float = 0.0

    def run(self, fn: Callable[[], T], timeout: float, what: str = "") -> T | None:
        """Run one operation under ``timeout``; count its outcome. Returns its value,
        or None when it failed with an OSError (EIO or another errno)."""
        self.tried += 1
        start = time.monotonic()
        try:
            value = timed(fn, timeout, what)
        except OSError as exc:
            if exc.errno == errno.EIO:
                self.eio += 1
            else:
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                self.other[name] = self.other.get(name, 0) + 1
            return None
        finally:
            self.slowest = max(self.slowest, time.monotonic() - start)
        self.ok += 1
        return value


# -- a local TLS endpoint ------------------------------------------------------------


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1 it signed, made with the
    ``openssl`` command. Returns (ca.pem, server.pem, server.key)."""
    import subprocess

    d = directory
    d.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.pem", "-days", "2", "-subj", "/CN=cosfs test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
        "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    return d / "ca.pem", d / "server.pem", d / "server.key"


class TlsProxy:
    """HTTPS on 127.0.0.1 in front of a plain-HTTP server: terminates TLS with the
    given certificate and pipes the bytes to ``upstream_port`` unchanged (so
    signatures made for this endpoint still verify)."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        import socket
        import ssl

        self.upstream = upstream_port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.handshake_failures = 0
        self.served = 0  # connections that completed a handshake
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import ssl

        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn = self.ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                self.handshake_failures += 1
                raw.close()
                continue
            self.served += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        import socket

        try:
            up = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            conn.close()
            return

        threading.Thread(target=pump, args=(up.recv, conn, (up, conn)), daemon=True).start()
        pump(conn.recv, up, (conn, up))

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
