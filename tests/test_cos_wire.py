"""What the client puts on the wire: a loopback listener records raw requests (no
storage behind it: it answers every request with an empty 200)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from cosfs.cos import CosClient, CosConfig, CosError


class Recorder:
    """Accepts connections on loopback and keeps the head of every request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests: list[tuple[str, dict[str, str]]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in head[1:])
                self.requests.append((head[0], {k.lower(): v for k, v in headers.items()}))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: \"e\"\r\n"
                             b"Connection: close\r\n\r\n")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.sock.close()


def client_for(rec: Recorder, **overrides) -> CosClient:
    settings = dict(secret_id="AKIDwire", secret_key="wire-secret", bucket="wire-1250000000",
                    region="ap-guangzhou", endpoint=f"http://127.0.0.1:{rec.port}")
    settings.update(overrides)
    return CosClient(CosConfig(**settings))


def test_cos_request_line_headers_and_signed_list(recorder: Recorder) -> None:
    client = client_for(recorder, token="session-token")
    client.put_object("dir/a b+c%#?.txt", b"hello", content_type="text/plain",
                      metadata={"mode": "33188"})
    line, headers = recorder.requests[-1]
    assert line == "PUT /wire-1250000000/dir/a%20b%2Bc%25%23%3F.txt HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{recorder.port}"
    assert headers["content-length"] == "5"
    assert headers["content-md5"] == "XUFAKrxLKna5cZ2REBfFkg=="
    assert headers["x-cos-meta-mode"] == "33188"
    assert headers["x-cos-security-token"] == "session-token"
    assert headers["accept-encoding"] == "identity"
    auth = dict(part.split("=", 1) for part in headers["authorization"].split("&"))
    assert auth["q-sign-algorithm"] == "sha1" and auth["q-ak"] == "AKIDwire"
    assert auth["q-header-list"] == (
        "content-length;content-md5;content-type;host;x-cos-meta-mode;x-cos-security-token")
    start, end = (int(t) for t in auth["q-key-time"].split(";"))
    assert 3000 <= end - start <= 7200  # a bounded validity window
    assert "wire-secret" not in str(recorder.requests)


def test_cos_range_and_conditions_are_signed(recorder: Recorder) -> None:
    client = client_for(recorder)
    client.head_object("k", if_match="abc")
    with pytest.raises(CosError, match="MalformedResponse"):  # the recorder sends no XML
        client.list_objects(prefix="a b", delimiter="/")
    (head_line, head), (list_line, listing) = recorder.requests[-2:]
    assert head["if-match"] == '"abc"'
    assert "if-match" in head["authorization"].split("q-header-list=")[1].split("&")[0]
    assert list_line.startswith("GET /wire-1250000000/?")
    query = list_line.split("?", 1)[1].split(" ")[0]
    assert sorted(query.split("&")) == ["delimiter=%2F", "encoding-type=url", "max-keys=1000",
                                        "prefix=a%20b"]
    params = listing["authorization"].split("q-url-param-list=")[1].split("&")[0]
    assert params == "delimiter;encoding-type;max-keys;prefix"


def test_sigv4_headers(recorder: Recorder) -> None:
    client = client_for(recorder, signature="s3", token="session-token")
    with pytest.raises(CosError, match="MalformedResponse"):  # the recorder sends no XML
        client.copy_object("src key", "dst", metadata={"mode": "1"})
    line, headers = recorder.requests[-1]
    assert line == "PUT /wire-1250000000/dst HTTP/1.1"
    assert headers["x-amz-copy-source"] == "/wire-1250000000/src%20key"
    assert headers["x-amz-metadata-directive"] == "REPLACE"
    assert headers["x-amz-meta-mode"] == "1"
    assert headers["x-amz-security-token"] == "session-token"
    assert not any(name.startswith("x-cos-") for name in headers)
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDwire/")
    assert "/ap-guangzhou/s3/aws4_request" in auth
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "x-amz-content-sha256", "x-amz-copy-source",
            "x-amz-metadata-directive", "x-amz-meta-mode", "x-amz-security-token"} <= set(signed)


def test_sigv4_payload_hash(recorder: Recorder) -> None:
    client = client_for(recorder, signature="s3")
    client.put_object("small", b"abc")
    client.put_object("streamed", lambda: b"abc")
    (_, small), (_, streamed) = recorder.requests[-2:]
    assert small["x-amz-content-sha256"] == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert streamed["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"


def test_requests_without_a_body_still_say_their_length(recorder: Recorder) -> None:
    """S3-like servers refuse a PUT or POST without Content-Length (411); GET and
    HEAD send none. The length of an empty body is not part of the signature."""
    client = client_for(recorder)
    with pytest.raises(CosError, match="MalformedResponse"):  # the recorder sends no XML
        client.create_multipart_upload("k")
    with pytest.raises(CosError, match="MalformedResponse"):
        client.copy_object("a", "b")
    client.delete_object("k")
    client.head_object("k")
    sent = {line.split(" ")[0]: headers for line, headers in recorder.requests[-4:]}
    for method in ("POST", "PUT", "DELETE"):
        assert sent[method]["content-length"] == "0", method
        assert "content-length" not in sent[method]["authorization"], method
    assert "content-length" not in sent["HEAD"]
