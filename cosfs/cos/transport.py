"""Keep-alive HTTP(S) connections to one endpoint, on the standard library alone.

``requests`` spent about 0.4 ms of CPU per request preparing it and wrapping the
answer; a HEAD costs a third of that on a bare ``http.client`` connection. This
module keeps what the client needs of an HTTP stack and nothing else: a pool of
keep-alive connections, separate connect and read timeouts, certificate checks
(certifi's bundle, as requests used, or a CA bundle of the user's), proxies from
the environment (``HTTP(S)_PROXY``/``ALL_PROXY``, ``NO_PROXY``) and bodies read
straight into the caller's buffer.
"""

from __future__ import annotations

import base64
import collections
import http.client
import io
import logging
import os
import select
import socket
import ssl
import threading
import urllib.request
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from .body import FileSlice

log = logging.getLogger(__name__)

# Bodies are sent from files in blocks of this size (http.client's default is 8 KiB:
# a 8 MiB part would take a thousand trips through the interpreter).
SEND_BLOCK = 256 << 10
# File bodies from this size go with sendfile (see _send_window); below it a read
# through Python costs less than sendfile's setup.
SENDFILE_FROM = 64 << 10


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """``verify``: False (no checks), True (certifi's bundle, else the system's) or
    the path of a CA bundle file."""
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    try:
        import certifi  # what requests trusted: keep the same roots
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def environ_proxy(scheme: str, hostname: str) -> str | None:
    """The proxy URL the environment asks for to reach ``hostname`` (None: direct)."""
    proxies = urllib.request.getproxies()
    if not proxies or urllib.request.proxy_bypass(hostname):
        return None
    return proxies.get(scheme) or proxies.get("all") or None


class Headers(dict[str, str]):
    """The headers of an answer, looked up by any case of their name.

    Keys are stored lower-case; a repeated header keeps its first value (as
    ``HTTPMessage.get`` does). Built once per answer by :func:`_parse_head`:
    ``HTTPMessage.get`` scans and lower-cases every header on every lookup, which a
    HEAD does a dozen times.
    """

    __slots__ = ()

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


def _parse_head(lines: list[bytes]) -> Headers:
    """The header lines of an answer (as ``http.client._read_headers`` returns
    them, latin-1, CRLF-terminated) as :class:`Headers`; a folded line (one that
    starts with white space) continues the value before it."""
    headers = Headers()
    name = ""
    for raw in lines:
        line = raw.decode("iso-8859-1")
        if line[:1] in (" ", "\t"):
            if name:
                folded = f"{dict.__getitem__(headers, name)} {line.strip()}"
                dict.__setitem__(headers, name, folded)
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue  # not a header: http.client keeps such lines as defects, unused
        name = key.strip().lower()
        if dict.__contains__(headers, name):
            name = ""  # a repeated header keeps its first value (and its folds)
            continue
        dict.__setitem__(headers, name, value.strip())
    return headers


class _Answer(http.client.HTTPResponse):
    """``http.client``'s answer with a lighter head parser.

    ``HTTPResponse.begin`` builds an ``HTTPMessage`` through the ``email`` package:
    a seventh of a mount's CPU when it creates small files. This ``begin`` takes
    the same steps (status line, headers, then the body's framing: chunked, length,
    whether the connection closes) with the headers split by :func:`_parse_head`.
    It uses ``HTTPResponse``'s ``_read_status``, ``_check_close`` and ``_method``,
    which have not changed since Python 3.5.
    """

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)  # the head of a 100 Continue
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        headers = _parse_head(http.client._read_headers(self.fp))
        self.headers = self.msg = headers  # type: ignore[assignment]
        self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        if not self.chunked:
            try:
                length = int(headers.get("content-length", ""))
            except ValueError:
                pass
            else:
                self.length = length if length >= 0 else None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) \
                or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # the body ends when the connection does


class Response:
    """One answer. The connection goes back to the pool once the body has been read
    to its end (:meth:`release`); an answer abandoned half-read closes it.

    Not thread-safe: one thread reads one answer.
    """

    __slots__ = ("_pool", "_conn", "_resp", "status", "headers")

    def __init__(self, pool: Transport, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse) -> None:
        self._pool = pool
        self._conn: http.client.HTTPConnection | None = conn
        self._resp = resp
        self.status: int = resp.status
        assert isinstance(resp.headers, Headers), "connections parse with _Answer"
        self.headers = resp.headers

    def read(self, amt: int | None = None) -> bytes:
        """Up to ``amt`` bytes of the body (all of it with None); b"" at its end."""
        return self._resp.read(amt)

    def readinto(self, buffer: Any) -> int:
        """Fill as much of ``buffer`` as the body allows; 0 at its end."""
        return self._resp.readinto(buffer)

    def release(self) -> None:
        """Done with this answer: reuse the connection if the body was read to its
        end and the server keeps the connection open, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        resp = self._resp
        if not resp.isclosed() and resp.length == 0 and not resp.chunked:
            resp.read()  # an empty body (HEAD, 204, 304) is finished by reading it
        if resp.isclosed() and not resp.will_close:
            self._pool._checkin(conn)
        else:
            resp.close()
            conn.close()

    def close(self) -> None:
        """Abandon the answer (whatever is left of its body) and its connection."""
        conn, self._conn = self._conn, None
        self._resp.close()
        if conn is not None:
            conn.close()


class Transport:
    """Connections to one ``scheme://netloc``, kept alive and shared by threads.

    Concurrency: any number of threads may call :meth:`send` at once; each request
    has a connection of its own until its :class:`Response` is released. Idle
    connections wait in a LIFO stack (the most recently used is the likeliest to
    be alive), at most ``pool_size`` of them; more may be open while busy (the
    caller bounds concurrency). The stack is guarded by one lock.
    """

    def __init__(self, scheme: str, netloc: str, *, connect_timeout: float,
                 read_timeout: float, verify: bool | str = True, pool_size: int = 32,
                 proxy: str | None = None) -> None:
        self.scheme = scheme
        self.netloc = netloc
        parts = urlsplit(f"{scheme}://{netloc}")
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if scheme == "https" else 80)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool_size = pool_size
        self._idle: collections.deque[http.client.HTTPConnection] = collections.deque()
        self._lock = threading.Lock()
        self._verify = verify
        # Made at the first connection, so a bad CA bundle fails a request (as an
        # SSLError the caller reports) rather than the client's construction.
        self._tls: ssl.SSLContext | None = None
        self._proxy: tuple[str, int] | None = None
        self._proxy_headers: dict[str, str] = {}
        # Through a proxy, plain HTTP goes as absolute-URI requests (every proxy
        # forwards those); HTTPS through a CONNECT tunnel, end to end encrypted.
        self._absolute = False
        if proxy:
            self._use_proxy(proxy)

    def _use_proxy(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"unsupported proxy {parts.scheme}://{parts.hostname or ''}: "
                             "only http:// proxies are supported")
        self._proxy = (parts.hostname, parts.port or 80)
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._proxy_headers["Proxy-Authorization"] = (
                "Basic " + base64.b64encode(pair.encode()).decode())
        self._absolute = self.scheme == "http"

    def close(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle), collections.deque()
        for conn in idle:
            conn.close()

    # -- connections ---------------------------------------------------------------

    def _new_connection(self) -> http.client.HTTPConnection:
        host, port = self._proxy or (self._host, self._port)
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self._connect_timeout,
                                               context=self._tls_context(),
                                               blocksize=SEND_BLOCK)
            if self._proxy:
                conn.set_tunnel(self._host, self._port, headers=self._proxy_headers)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._connect_timeout,
                                              blocksize=SEND_BLOCK)
        conn.response_class = _Answer
        # Connect now, under the connect timeout (TLS handshake and tunnel included);
        # from then on every read and write waits at most the read timeout.
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self._read_timeout)
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            try:
                context = tls_context(self._verify)
            except ssl.SSLError:
                raise
            except OSError as e:  # a CA bundle that cannot be read
                raise ssl.SSLError(f"cannot load CA bundle {self._verify}: {e}") from e
            with self._lock:
                self._tls = self._tls or context
        return self._tls

    def _checkout(self) -> http.client.HTTPConnection:
        """An idle connection that still looks alive, else a new one."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._new_connection()
            if not _dropped(conn):
                return conn
            conn.close()

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._pool_size:
                self._idle.append(conn)
                return
        conn.close()

    # -- requests ---------------------------------------------------------------------

    def send(self, method: str, target: str, headers: dict[str, str],
             body: bytes | BinaryIO | None = None) -> Response:
        """Send one request and read the head of its answer.

        ``target`` is the encoded path and query; ``headers`` must carry Host and,
        with a body, Content-Length. Raises ``OSError`` or
        ``http.client.HTTPException`` on failure; the connection is then closed.
        Idle connections the server closed are noticed before use (they poll
        readable) and replaced; one it closes just as the request goes out fails
        the request like any lost connection (the caller's retry policy decides)."""
        conn = self._checkout()
        try:
            if self._absolute:
                target = f"http://{self.netloc}{target}"
                if self._proxy_headers:
                    headers = {**headers, **self._proxy_headers}
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            if isinstance(body, bytes | bytearray | memoryview):
                conn.endheaders()
                if body:
                    conn.send(body)
            elif (isinstance(body, FileSlice) and self.scheme == "http"
                  and len(body) >= SENDFILE_FROM):
                conn.endheaders()
                assert conn.sock is not None
                _send_window(conn.sock, body)
            else:
                conn.endheaders(body)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        return Response(self, conn, resp)


def _send_window(sock: socket.socket, body: FileSlice) -> None:
    """Send what is left of ``body`` with ``sendfile``: from the page cache to the
    socket, instead of three copies per byte and a trip through the interpreter per
    block when read through Python. Plain sockets only (TLS encrypts in user space).
    """
    fd, offset, count = body.window()
    sent = sock.sendfile(_Descriptor(fd), offset, count) if count else 0  # type: ignore[arg-type]
    body.seek(sent, io.SEEK_CUR)
    # Less was sent only if the file was cut meanwhile: the slice's own reads say
    # what the rest is (zeros with zero_fill, else nothing and the request fails).
    while block := body.read(SEND_BLOCK):
        sock.sendall(block)
    if body.tell() < len(body):
        raise OSError(f"the file ended {len(body) - body.tell()} bytes before the "
                      "announced body")


class _Descriptor:
    """What ``socket.sendfile`` needs of a file: a descriptor the caller owns (never
    closed here), and ``seek``/``read`` for the copying fallback it takes where the
    kernel cannot ``sendfile`` from that file."""

    mode = "rb"

    def __init__(self, fd: int) -> None:
        self._fd, self._pos = fd, 0

    def fileno(self) -> int:
        return self._fd

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self._pos = pos
        return pos

    def read(self, n: int) -> bytes:
        data = os.pread(self._fd, n, self._pos)
        self._pos += len(data)
        return data


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by the server (or has unexpected data:
    either way it cannot carry a new request)."""
    sock = conn.sock
    if sock is None:
        return True
    poller = select.poll()  # not select(): a mount may hold descriptors past 1024
    try:
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


__all__ = ["SEND_BLOCK", "Headers", "Response", "Transport", "environ_proxy", "tls_context"]
