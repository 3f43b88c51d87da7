"""Request bodies, streamed: ``Content-Length`` or ``Transfer-Encoding: chunked`` framing,
``aws-chunked`` content (with its chunk signatures), and the integrity checks a body
must pass (Content-MD5, the SigV4 payload hash, the size limits).

Nothing here buffers a whole body: operations pull it in chunks of about 1 MB.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import queue
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

from .errors import CosServerError
from .sigv4 import EMPTY_SHA256, ChunkSignatureChain

CHUNK = 1 << 20
_MAX_LINE = 8192


class ClientGone(Exception):
    """The client closed the connection or sent less than it announced."""


class DropConnection(Exception):
    """An injected fault: abandon the connection now, without an answer."""


def _socket_call(call: Callable[[int], bytes], n: int) -> bytes:
    """A read from the client's socket; a socket error means the client is gone."""
    try:
        return call(n)
    except OSError as exc:
        raise ClientGone(str(exc)) from None


class Source(Protocol):
    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (at least 1), ``b""`` at the end."""


class EmptySource:
    def read(self, n: int) -> bytes:
        return b""


class LengthSource:
    """A body framed by ``Content-Length``."""

    def __init__(self, rfile: BinaryIO, length: int) -> None:
        self._rfile = rfile
        self.remaining = length

    def read(self, n: int) -> bytes:
        if self.remaining == 0:
            return b""
        data = _socket_call(self._rfile.read, min(n, self.remaining))
        if not data:
            raise ClientGone("connection closed mid-body")
        self.remaining -= len(data)
        return data


def _read_line(read: Callable[[int], bytes], what: str) -> bytes:
    """One CRLF-terminated line through a ``readline(limit)``-like ``read``."""
    line = read(_MAX_LINE)
    if not line:
        raise ClientGone(f"connection closed in {what}")
    if not line.endswith(b"\n"):
        raise CosServerError("IncompleteBody", f"{what} line too long")
    return line.rstrip(b"\r\n")


def _chunk_size(line: bytes) -> tuple[int, bytes]:
    """``hex-size[;extensions]`` -> (size, extensions)."""
    size, _, extensions = line.partition(b";")
    try:
        return int(size.strip(), 16), extensions
    except ValueError:
        raise CosServerError("IncompleteBody", f"bad chunk size {size[:20]!r}") from None


class ChunkedSource:
    """A body framed by ``Transfer-Encoding: chunked`` (trailers are read and ignored)."""

    def __init__(self, rfile: BinaryIO) -> None:
        self._rfile = rfile
        self._left = 0
        self._done = False

    def _expect_crlf(self) -> None:
        if _socket_call(self._rfile.read, 2) != b"\r\n":
            raise CosServerError("IncompleteBody", "chunk not followed by CRLF")

    def read(self, n: int) -> bytes:
        if self._done:
            return b""
        if self._left == 0:
            readline = functools.partial(_socket_call, self._rfile.readline)
            self._left, _ = _chunk_size(_read_line(readline, "chunk size"))
            if self._left == 0:
                while _read_line(readline, "trailer"):
                    pass
                self._done = True
                return b""
        data = _socket_call(self._rfile.read, min(n, self._left))
        if not data:
            raise ClientGone("connection closed mid-chunk")
        self._left -= len(data)
        if self._left == 0:
            self._expect_crlf()
        return data


class _Buffered:
    """``read``/``readline`` over a :class:`Source` (which has no lines of its own)."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._buffer = b""

    def read(self, n: int) -> bytes:
        if not self._buffer:
            return self._source.read(n)
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def read_exact(self, n: int) -> bytes:
        parts, wanted = [], n
        while wanted:
            data = self.read(wanted)
            if not data:
                raise ClientGone("body ended early")
            parts.append(data)
            wanted -= len(data)
        return b"".join(parts)

    def readline(self, limit: int) -> bytes:
        while b"\n" not in self._buffer and len(self._buffer) < limit:
            data = self._source.read(limit)
            if not data:
                break
            self._buffer += data
        end = self._buffer.find(b"\n")
        end = end + 1 if end >= 0 else min(limit, len(self._buffer))
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line


class AwsChunkedSource:
    """``aws-chunked`` content: ``hex-size;chunk-signature=SIG CRLF data CRLF`` ... a
    zero-size chunk, optional trailer lines, an empty line. With a signature chain,
    every chunk's signature is checked once its data has passed through."""

    def __init__(self, inner: Source, chain: ChunkSignatureChain | None) -> None:
        self._in = _Buffered(inner)
        self._chain = chain
        self._left = 0
        self._claimed = ""
        self._sha = hashlib.sha256()
        self._done = False

    def _start_chunk(self) -> None:
        size, extensions = _chunk_size(_read_line(self._in.readline, "aws-chunked size"))
        self._left = size
        self._claimed = ""
        for extension in extensions.split(b";"):
            name, _, value = extension.partition(b"=")
            if name.strip() == b"chunk-signature":
                self._claimed = value.strip().decode("ascii", "replace")
        if self._chain is not None and not self._claimed:
            raise CosServerError("SignatureDoesNotMatch", "aws-chunked chunk without a "
                                 "chunk-signature")
        self._sha = hashlib.sha256()

    def _check_signature(self, digest: str) -> None:
        if self._chain is None:
            return
        expected = self._chain.next(digest)
        if not hmac.compare_digest(expected, self._claimed.lower()):
            raise CosServerError("SignatureDoesNotMatch", "A chunk signature does not "
                                 "match the chunk")

    def read(self, n: int) -> bytes:
        if self._done:
            return b""
        if self._left == 0:
            self._start_chunk()
            if self._left == 0:
                self._check_signature(EMPTY_SHA256)
                while _read_line(self._in.readline, "aws-chunked trailer"):
                    pass  # trailers (checksums, trailer signature) are not checked
                self._done = True
                return b""
        data = self._in.read(min(n, self._left))
        if not data:
            raise ClientGone("connection closed mid-chunk")
        self._left -= len(data)
        if self._chain is not None:
            self._sha.update(data)
        if self._left == 0:
            if self._in.read_exact(2) != b"\r\n":
                raise CosServerError("IncompleteBody", "aws-chunked chunk not followed "
                                     "by CRLF")
            self._check_signature(self._sha.hexdigest())
        return data


class Digests:
    """MD5 (and, when asked, SHA-256) of a body as it streams past.

    The first ``INLINE_BYTES`` are hashed in the caller's thread; beyond that a helper
    thread takes over, so that hashing (which releases the GIL) runs on another core
    while the caller reads the socket and writes the disk: MD5 alone is slower than
    both on common machines. The queue between them holds a few chunks at most.
    Owned by one request: ``update`` and ``result``/``close`` from the same thread.
    """

    INLINE_BYTES = 4 << 20
    _DONE = None

    def __init__(self, sha256: bool) -> None:
        self._hashes = [hashlib.md5()] + ([hashlib.sha256()] if sha256 else [])
        self._inline = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def _hash(self, data: bytes) -> None:
        for h in self._hashes:
            h.update(data)

    def _work(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not self._DONE:
            self._hash(data)

    def update(self, data: bytes) -> None:
        if self._queue is not None:
            self._queue.put(data)
            return
        self._hash(data)
        self._inline += len(data)
        if self._inline >= self.INLINE_BYTES:
            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._work, name="digest", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the helper thread (idempotent); the digests are then complete."""
        if self._thread is not None:
            assert self._queue is not None
            self._queue.put(self._DONE)
            self._thread.join()
            self._thread = None

    def result(self) -> tuple[bytes, str | None]:
        """(MD5 digest, SHA-256 hex or ``None``)."""
        self.close()
        sha = self._hashes[1].hexdigest() if len(self._hashes) > 1 else None
        return self._hashes[0].digest(), sha


def parse_content_md5(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise CosServerError("InvalidDigest", "The Content-MD5 you specified is not valid.")
    return digest


class RequestBody:
    """The decoded body of one request, read by the operation in chunks.

    Counts what it reads (``on_bytes``), computes the MD5 (the ETag of a PUT), the
    SHA-256 when a SigV4 payload hash must be checked, enforces ``max_size`` and the
    announced decoded length, sends ``100 Continue`` before the first read when the
    client waits for it, and cuts the connection at ``cut_at`` bytes (fault injection).
    Owned by the request's thread.
    """

    def __init__(self, source: Source, *, decoded_length: int | None = None,
                 content_md5: bytes | None = None, sha256: str | None = None,
                 max_size: int | None = None, cut_at: int | None = None,
                 on_bytes: Callable[[int], None] = lambda n: None,
                 before_first_read: Callable[[], None] = lambda: None) -> None:
        self._source = source
        self.decoded_length = decoded_length
        self._content_md5 = content_md5
        self._sha_expected = sha256
        self._digests = Digests(sha256=sha256 is not None)
        self._md5_digest: bytes | None = None
        self.max_size = max_size
        self._cut_at = cut_at
        self._on_bytes = on_bytes
        self._before_first_read = before_first_read
        self.bytes_read = 0
        self.finished = False
        self._started = False

    def check_announced_size(self) -> None:
        if (self.max_size is not None and self.decoded_length is not None
                and self.decoded_length > self.max_size):
            raise CosServerError("EntityTooLarge", f"Your proposed upload exceeds the "
                                 f"maximum allowed size of {self.max_size} bytes")

    def read(self, n: int = CHUNK) -> bytes:
        if self.finished:
            return b""
        if not self._started:
            self._started = True
            self.check_announced_size()
            self._before_first_read()
        if self._cut_at is not None:
            if self.bytes_read >= self._cut_at:
                raise DropConnection()
            n = min(n, self._cut_at - self.bytes_read)
        data = self._source.read(n)
        if not data:
            self.finished = True
            return b""
        self.bytes_read += len(data)
        if self.max_size is not None and self.bytes_read > self.max_size:
            raise CosServerError("EntityTooLarge", f"Your upload exceeds the maximum "
                                 f"allowed size of {self.max_size} bytes")
        self._digests.update(data)
        self._on_bytes(len(data))
        return data

    def chunks(self) -> Iterator[bytes]:
        while data := self.read():
            yield data

    def read_all(self, limit: int) -> bytes:
        """The whole body, for small XML documents; over ``limit`` -> MalformedXML."""
        parts, total = [], 0
        for data in self.chunks():
            total += len(data)
            if total > limit:
                raise CosServerError("MalformedXML", f"The XML body exceeds {limit} bytes")
            parts.append(data)
        return b"".join(parts)

    def finish(self) -> str:
        """Read to the end (the body must be complete) and check it; the MD5 in hex."""
        for _ in self.chunks():
            pass
        if self.decoded_length is not None and self.bytes_read != self.decoded_length:
            raise CosServerError("IncompleteBody", f"Got {self.bytes_read} bytes, "
                                 f"announced {self.decoded_length}")
        md5, sha256 = self._digests.result()
        if self._content_md5 is not None and md5 != self._content_md5:
            raise CosServerError("BadDigest", "The Content-MD5 you specified did not match "
                                 "what we received.")
        if sha256 is not None and sha256 != self._sha_expected:
            raise CosServerError("XAmzContentSHA256Mismatch", "The provided "
                                 "'x-amz-content-sha256' header does not match what was "
                                 "computed.")
        return md5.hex()

    def close(self) -> None:
        """Release what the body holds (its hashing thread) when a request ends early."""
        self._digests.close()
