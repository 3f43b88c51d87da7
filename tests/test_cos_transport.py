"""The client's HTTP transport against the real local server: keep-alive connections
are reused, replaced when the server closed them, and proxies from the environment
are used the way HTTP proxies expect (CONNECT for HTTPS, absolute URIs for HTTP)."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import make_client
from socket_util import pump, shutdown_quietly

from cosfs.cos import CosError
from cosfs.cos.body import FileSlice
from cosfs.cos.transport import Transport, _parse_head


class Relay:
    """A TCP relay on loopback to ``upstream_port`` that counts connections and can
    cut them all. As a proxy (``proxy=True``) it also speaks the client side of an
    HTTP proxy: a ``CONNECT`` opens a tunnel; otherwise each request's
    absolute-URI target is rewritten to a path before it is passed on."""

    def __init__(self, upstream_port: int, proxy: bool = False) -> None:
        self.upstream = upstream_port
        self.proxy = proxy
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.heads: list[list[str]] = []  # request line and headers, as the proxy saw them
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        up = socket.create_connection(("127.0.0.1", self.upstream))
        self._open += [conn, up]
        reader = conn.makefile("rb")
        if self.proxy:
            head = self._head(reader)
            if head and head[0].startswith("CONNECT "):
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            elif head:
                threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()
                self._requests(reader, head, up)
                return
        threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()
        self._pump_file(reader, up)

    def _head(self, reader) -> list[str]:
        lines = []
        while (line := reader.readline()) not in (b"\r\n", b""):
            lines.append(line.decode("latin-1").rstrip("\r\n"))
        self.heads.append(lines)
        return lines

    def _requests(self, reader, head: list[str], up: socket.socket) -> None:
        """Forward absolute-URI requests as origin-form ones, one after the other."""
        while head:
            method, target, version = head[0].split(" ")
            path = "/" + target.split("://", 1)[1].split("/", 1)[1]
            length = next((int(h.split(":", 1)[1]) for h in head[1:]
                           if h.lower().startswith("content-length:")), 0)
            data = "\r\n".join([f"{method} {path} {version}", *head[1:], "", ""]).encode()
            up.sendall(data + reader.read(length))
            head = self._head(reader)
        up.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        pump(src.recv, dst, close=(src, dst))

    def _pump_file(self, reader, dst: socket.socket) -> None:
        pump(reader.read1, dst, close=(dst,))

    def cut_all(self) -> None:
        """Close every connection, as a server does with idle keep-alive ones."""
        shutdown_quietly(*self._open)
        self._open = []

    def close(self) -> None:
        self.sock.close()
        self.cut_all()


@pytest.fixture
def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture
def relay(cos_server) -> Iterator[Relay]:
    r = Relay(cos_server.port)
    yield r
    r.close()


def test_keep_alive_reuses_one_tls_connection(cos_server, bucket, tls, certs,
                                              no_env_proxy) -> None:
    client = make_client(cos_server, bucket, endpoint=tls.url, ca_bundle=str(certs[0]))
    body = bytes(range(256)) * 1024
    for i in range(10):
        client.put_object(f"k{i}", body)
        assert client.head_object(f"k{i}").size == len(body)
        assert client.get_object(f"k{i}", 5, 9) == body[5:10]
        buf = bytearray(1000)
        client.get_object_into(f"k{i}", buf, 100)
        assert buf == body[100:1100]
    with pytest.raises(CosError):
        client.head_object("missing")  # an error answer keeps the connection too
    assert tls.served == 1
    # A stream abandoned halfway cannot be reused: the next request opens another.
    with client.get_object_stream("k0", chunk_size=4096) as (_, chunks):
        assert next(chunks) == body[:4096]
    assert client.head_object("k0").size == len(body)
    assert tls.served == 2


def test_connection_the_server_closed_is_replaced(cos_server, bucket, relay,
                                                  no_env_proxy) -> None:
    client = make_client(cos_server, bucket, endpoint=f"http://127.0.0.1:{relay.port}")
    client.put_object("k", b"data")
    for _ in range(5):
        assert client.head_object("k").size == 4
    assert relay.accepted == 1
    relay.cut_all()
    assert client.get_object("k") == b"data"
    assert relay.accepted == 2
    stats = client.stats()["total"]
    assert stats["retries"] == 0 and stats["errors"] == 0


def test_https_through_an_environment_proxy_uses_connect(cos_server, bucket, tls, certs,
                                                         no_env_proxy) -> None:
    proxy = Relay(tls.port, proxy=True)
    try:
        no_env_proxy.setenv("HTTPS_PROXY", f"http://user:pa%3Ass@127.0.0.1:{proxy.port}")
        client = make_client(cos_server, bucket, endpoint=tls.url, ca_bundle=str(certs[0]))
        client.put_object("k", b"tunnelled")
        assert client.get_object("k") == b"tunnelled"
    finally:
        proxy.close()
    assert proxy.accepted == 1
    line, *headers = proxy.heads[0]
    assert line.startswith(f"CONNECT 127.0.0.1:{tls.port} HTTP/1.")
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'user:pa:ss').decode()}" in headers


def test_http_through_an_environment_proxy_sends_absolute_uris(cos_server, bucket,
                                                               no_env_proxy) -> None:
    proxy = Relay(cos_server.port, proxy=True)
    try:
        no_env_proxy.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        client = make_client(cos_server, bucket)
        client.put_object("a b", b"proxied")
        assert client.get_object("a b") == b"proxied"
        assert [line for line, *_ in proxy.heads] == [
            f"PUT {cos_server.url}/{bucket}/a%20b HTTP/1.1",
            f"GET {cos_server.url}/{bucket}/a%20b HTTP/1.1"]
        # NO_PROXY sends the same endpoint direct.
        no_env_proxy.setenv("no_proxy", "127.0.0.1")
        assert make_client(cos_server, bucket).get_object("a b") == b"proxied"
        assert len(proxy.heads) == 2
    finally:
        proxy.close()


def test_unsupported_proxy_is_refused_plainly(cos_server, bucket, no_env_proxy) -> None:
    no_env_proxy.setenv("all_proxy", "socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match="only http:// proxies"):
        make_client(cos_server, bucket)


def test_headers_are_found_in_any_case() -> None:
    import io

    raw = (b"ETag: \"e\"\r\nx-cos-meta-Mode: 1\r\nX-Dup: a\r\nx-dup: b\r\n b: fold\r\n"
           b"X-Folded: one\r\n two\r\nX-Empty:\r\nno colon here\r\n\r\n")
    headers = _parse_head(http.client._read_headers(io.BytesIO(raw)))
    assert headers.get("etag") == headers["ETAG"] == '"e"'
    assert "X-COS-META-MODE" in headers and headers.get("missing", 0) == 0
    assert headers.get("x-dup") == "a"
    assert dict(headers.items()) == {"etag": '"e"', "x-cos-meta-mode": "1", "x-dup": "a",
                                     "x-folded": "one two", "x-empty": ""}
    # Same answer as the email package's parser, which http.client uses by default.
    reference = http.client.parse_headers(io.BytesIO(raw))
    for name in ("etag", "x-cos-meta-mode", "x-dup", "x-empty"):
        assert headers[name] == reference[name]


class ScriptedPeer:
    """An HTTP peer on loopback that answers each request on a connection with the
    next canned answer: for framing cases the local server never sends (chunked
    bodies, folded headers). Counts the connections it accepted."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.sock.accept()
            self.accepted += 1
            with conn:
                pending = b""
                while self.answers:
                    while b"\r\n\r\n" not in pending:
                        data = conn.recv(65536)
                        if not data:
                            break
                        pending += data
                    if b"\r\n\r\n" not in pending:
                        break  # the client closed this connection
                    pending = pending.split(b"\r\n\r\n", 1)[1]
                    answer = self.answers.pop(0)
                    conn.sendall(answer)
                    if b"Connection: close" in answer:
                        break


def test_answers_are_framed_like_http_client() -> None:
    """Chunked, sized, empty and closing answers: the body ends where HTTP says, and
    the connection is reused exactly when it may be."""
    peer = ScriptedPeer([
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Fold: a\r\n b\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nETag: \"x\"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ])
    t = Transport("http", f"127.0.0.1:{peer.port}", connect_timeout=5, read_timeout=5)
    host = {"Host": f"127.0.0.1:{peer.port}"}

    def ask() -> tuple[int, dict[str, str], bytes]:
        resp = t.send("GET", "/", host)
        body = resp.read()
        resp.release()
        return resp.status, dict(resp.headers.items()), body

    status, headers, body = ask()
    assert (status, body, headers["x-fold"]) == (200, b"hello world", "a b")
    status, headers, body = ask()
    assert (status, body, headers["etag"]) == (204, b"", '"x"')
    assert ask()[2] == b"bye"
    assert peer.accepted == 1  # three answers on one connection
    assert ask()[2] == b"ok"
    assert peer.accepted == 2  # "Connection: close" was honoured
    t.close()


class RecordingPeer:
    """An HTTP peer on loopback that keeps the body of each request (framed by its
    Content-Length) and answers 200; one connection at a time."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            with conn, conn.makefile("rb") as reader:
                while reader.readline():
                    length = 0
                    while (header := reader.readline()) not in (b"\r\n", b""):
                        name, _, value = header.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    body = reader.read(length)
                    if len(body) < length:
                        self.bodies.append(b"<short:%d>" % len(body))
                        break
                    self.bodies.append(body)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def _put(transport: Transport, body: FileSlice) -> int:
    headers = {"Host": "peer", "Content-Length": str(len(body))}
    resp = transport.send("PUT", "/k", headers, body)
    status = resp.status
    resp.close()
    return status


def test_file_windows_are_sent_whole_from_any_offset(tmp_path, monkeypatch) -> None:
    """A window of a staging file goes out with sendfile from its offset; one that
    reaches past a file cut short is padded with zeros (zero_fill), else the request
    fails rather than send less than it announced."""
    peer = RecordingPeer()
    kernel_sends: list[int] = []
    original = socket.socket.sendfile

    def sendfile(self, file, offset=0, count=None):  # type: ignore[no-untyped-def]
        kernel_sends.append(count)
        return original(self, file, offset, count)

    monkeypatch.setattr(socket.socket, "sendfile", sendfile)
    data = os.urandom(3 << 20)
    path = tmp_path / "staged"
    path.write_bytes(data)
    transport = Transport("http", f"127.0.0.1:{peer.port}", connect_timeout=5,
                          read_timeout=10, pool_size=1)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _put(transport, FileSlice(fd, 12345, 2 << 20)) == 200
        assert _put(transport, FileSlice(fd, 0, 100)) == 200  # below SENDFILE_FROM
        window = FileSlice(fd, (3 << 20) - 1000, 1 << 20, zero_fill=True)
        assert _put(transport, window) == 200
        strict = FileSlice(fd, 1 << 20, 1 << 20)
        os.truncate(path, (1 << 20) + 5000)
        with pytest.raises(OSError, match="ended"):
            _put(transport, strict)
    finally:
        os.close(fd)
        transport.close()
    deadline = time.monotonic() + 10
    while len(peer.bodies) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peer.bodies[0] == data[12345:12345 + (2 << 20)]
    assert peer.bodies[1] == data[:100]
    assert peer.bodies[2] == data[-1000:] + bytes((1 << 20) - 1000)
    assert peer.bodies[3].startswith(b"<short:")
    assert kernel_sends == [2 << 20, 1 << 20, 1 << 20]  # not the 100-byte body
