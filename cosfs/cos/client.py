"""The blocking, thread-safe COS client the filesystem is built on."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .. import __version__
from .body import BodySource, Payload
from .config import CosConfig, Endpoint, quote_key
from .errors import CosError
from .retry import RetryPolicy, is_unknown_outcome
from .signing import (
    UNSIGNED_HEADERS,
    UNSIGNED_PAYLOAD,
    amz_date,
    cos_key_time,
    encode_query,
    sign_cos,
    sign_s3,
)
from .stats import ClientStats
from .transport import Headers, Response, Transport, environ_proxy
from .types import (
    CONTENT_HEADERS,
    DeleteError,
    ListPage,
    ObjectInfo,
    PartInfo,
    UploadInfo,
    is_sendable_metadata,
)
from .xmlcodec import (
    S3_XMLNS,
    XmlError,
    build_complete,
    build_delete,
    parse_delete_result,
    parse_error,
    parse_list_objects,
    parse_list_parts,
    parse_list_uploads,
    parse_result_etag,
    parse_upload_id,
    strip_etag,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DELETE_BATCH = 1000
# SigV4 signs the real SHA-256 of bodies up to this size; larger ones go
# UNSIGNED-PAYLOAD rather than hashing megabytes twice (TLS protects them in transit).
SHA256_PAYLOAD_LIMIT = 1 << 20
DEFAULT_CHUNK = 1 << 20
# A body read into the caller's buffer goes in slices of this size, so a connection
# lost mid-body still tells how many bytes had arrived (the resume starts there).
READINTO_SLICE = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

# Answers without a body (HEAD, some proxies) still need a COS-like error code.
_STATUS_CODES = {
    304: "NotModified", 400: "BadRequest", 403: "AccessDenied", 404: "NoSuchKey",
    405: "MethodNotAllowed", 409: "Conflict", 411: "MissingContentLength",
    412: "PreconditionFailed", 416: "InvalidRange", 500: "InternalError",
    501: "NotImplemented", 503: "ServiceUnavailable",
}

# What the HTTP stack raises when an exchange fails: socket errors (ConnectionError,
# TimeoutError and ssl.SSLError are OSErrors) and malformed or cut answers.
_TRANSPORT_ERRORS = (http.client.HTTPException, OSError)
# TLS failures that are a connection cut short, not a certificate or protocol problem.
_TLS_CUT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)

_UNRESOLVED: Any = object()  # a recovery hook found nothing: go on with the retry


@dataclass
class _Call:
    """One logical request, independent of attempt (signature and time change)."""

    op: str
    method: str
    key: str  # "" for the bucket itself
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    payload: Payload | None = None
    ok: tuple[int, ...] = (200,)
    not_found: str = "NoSuchKey"  # the code of a bodiless 404


class _Answer:
    """A finished exchange: status, headers and the whole body."""

    __slots__ = ("status", "headers", "content")

    def __init__(self, status: int, headers: Headers, content: bytes) -> None:
        self.status = status
        self.headers = headers
        self.content = content


class CosClient:
    """A client for one bucket of COS (or, with ``signature="s3"``, of S3).

    Thread-safe: any number of threads may call any method at once. The only shared
    mutable state is the :class:`~cosfs.cos.transport.Transport` (a pool of
    keep-alive connections, at most ``pool_size`` of them idle, under its own lock)
    and the counters behind :meth:`stats` (under theirs). Every method either returns its result or
    raises :class:`CosError`; transient failures are retried with backoff first.
    """

    def __init__(self, config: CosConfig) -> None:
        self.config = config
        self._endpoint = Endpoint.from_config(config)
        self._s3 = config.signature == "s3"
        self._x = "x-amz-" if self._s3 else "x-cos-"
        self._policy = RetryPolicy(config.max_retries, config.retry_base_delay,
                                   config.retry_max_delay)
        self._rng = random.Random()
        self._stats = ClientStats()
        # Environment proxies are resolved once here, not on every request.
        endpoint = self._endpoint
        hostname = urlsplit(f"{endpoint.scheme}://{endpoint.host}").hostname or ""
        self._transport = Transport(
            endpoint.scheme, endpoint.host, connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout, verify=config.verify,
            pool_size=config.pool_size,
            proxy=environ_proxy(endpoint.scheme, hostname))
        self._user_agent = f"cosfs/{__version__}"

    def __repr__(self) -> str:
        return f"CosClient({self.config!r})"

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> CosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per operation: calls, requests (attempts), errors, retries, bytes."""
        return self._stats.snapshot()

    # -- bucket ----------------------------------------------------------------------

    def head_bucket(self) -> None:
        self._run(_Call("HeadBucket", "HEAD", "", not_found="NoSuchBucket"))

    def list_objects(self, prefix: str = "", delimiter: str = "", marker: str = "",
                     max_keys: int = 1000) -> ListPage:
        params: dict[str, str | None] = {"encoding-type": "url", "max-keys": str(max_keys)}
        for name, value in (("prefix", prefix), ("delimiter", delimiter), ("marker", marker)):
            if value:
                params[name] = value
        call = _Call("ListObjects", "GET", "", params, not_found="NoSuchBucket")
        # COS encodes keys when asked even if it does not echo <EncodingType>; S3 says so.
        return self._fetch(call, parse_list_objects, not self._s3)

    def iter_list(self, prefix: str = "", delimiter: str = "",
                  max_keys: int = 1000) -> Iterator[ListPage]:
        """Every page of a listing. Follows ``NextMarker``; without one (S3 omits it
        when there is no delimiter) continues after the last key or prefix."""
        marker = ""
        while True:
            page = self.list_objects(prefix, delimiter, marker, max_keys)
            yield page
            if not page.is_truncated:
                return
            following = continuation_marker(page)
            if not following or following == marker:  # would loop forever
                raise CosError(200, "InvalidListing",
                               f"truncated listing did not advance past {marker!r}",
                               operation="ListObjects", key=prefix)
            marker = following

    # -- reading -----------------------------------------------------------------------

    def head_object(self, key: str, if_match: str | None = None) -> ObjectInfo:
        headers = {"If-Match": _quoted(if_match)} if if_match else {}
        resp = self._run(_Call("HeadObject", "HEAD", key, headers=headers))
        return self._info(key, resp.headers, int(resp.headers.get("Content-Length", 0)))

    def head_objects(self, keys: list[str]) -> list[ObjectInfo | CosError]:
        """A HEAD of each key, one after the other: what each found, or the error
        it ended with (404 included). One call for many keys is one trip to and
        from a worker thread for an async caller instead of one per key."""
        found: list[ObjectInfo | CosError] = []
        for key in keys:
            try:
                found.append(self.head_object(key))
            except CosError as exc:
                found.append(exc)
        return found

    def get_object(self, key: str, start: int | None = None, end: int | None = None,
                   if_match: str | None = None) -> bytes:
        """The object's bytes ``[start, end]`` (both inclusive; None: from 0 / to
        the end). A dropped connection resumes where it stopped."""
        with self.get_object_stream(key, start, end, if_match) as (_, chunks):
            return b"".join(chunks)

    @contextlib.contextmanager
    def get_object_stream(
        self, key: str, start: int | None = None, end: int | None = None,
        if_match: str | None = None, chunk_size: int = DEFAULT_CHUNK,
    ) -> Iterator[tuple[ObjectInfo, Iterator[bytes]]]:
        """``with client.get_object_stream(key) as (info, chunks):`` streams the body
        without holding it in memory. A connection lost mid-body is resumed with a
        ranged GET pinned to the first answer's ETag (If-Match), so the bytes never
        mix two versions of the object."""
        stream = _ObjectStream(self, key, start, end, if_match, chunk_size)
        try:
            info = stream.open()
            yield info, iter(stream)
        finally:
            stream.close()

    def get_object_into(self, key: str, buffer: Any, start: int = 0,
                        if_match: str | None = None) -> ObjectInfo:
        """Fill ``buffer`` (any writable buffer, not empty) with the object's bytes
        ``[start, start + len(buffer))``, read from the socket straight into it: no
        piece is allocated or copied on the way. Resumes like
        :meth:`get_object_stream`. Raises CosError ``ShortRead`` if the object
        ends before the buffer is full."""
        with memoryview(buffer) as raw, raw.cast("B") as view:
            size = len(view)
            if not size:
                raise ValueError("empty buffer")
            stream = _ObjectStream(self, key, start, start + size - 1, if_match,
                                   DEFAULT_CHUNK)
            try:
                info = stream.open()
                got = stream.readinto(view)
            finally:
                stream.close()
        if got != size:
            raise CosError(206, "ShortRead", f"got {got} of {size} bytes from {start}",
                           operation="GetObject", key=key)
        return info

    # -- writing -----------------------------------------------------------------------

    def put_object(self, key: str, body: BodySource, content_type: str | None = None,
                   metadata: dict[str, str] | None = None,
                   storage_class: str | None = None) -> str:
        headers = self._object_headers(content_type, metadata)
        headers.update(self._storage_class_header(storage_class))
        resp = self._run(_Call("PutObject", "PUT", key, headers=headers, payload=Payload(body)))
        return strip_etag(resp.headers.get("ETag", ""))

    def append_object(self, key: str, position: int, body: BodySource,
                      content_type: str | None = None,
                      metadata: dict[str, str] | None = None) -> int:
        """Append ``body`` at ``position``; returns the next append position.

        APPEND is not idempotent. After an unknown outcome the object's length tells
        whether the append landed; and a retry cannot land twice anyway, because
        the server refuses a position that is no longer the end (AppendPositionErr),
        which sends us back to checking the length."""
        payload = Payload(body)
        call = _Call("AppendObject", "POST", key, {"append": None, "position": str(position)},
                     self._object_headers(content_type, metadata), payload)

        def recover(err: CosError, retries_done: int) -> Any:
            if is_unknown_outcome(err) or (retries_done and err.code == "AppendPositionErr"):
                expected = position + payload.last_length
                if self._size_or_none(key) == expected:
                    log.info("append to %r at %d had landed before the error", key, position)
                    return expected
            return _UNRESOLVED

        resp = self._run(call, recover=recover)
        if isinstance(resp, int):
            return resp
        following = resp.headers.get(f"{self._x}next-append-position")
        return int(following) if following else position + payload.last_length

    def copy_object(self, src_key: str, dst_key: str, metadata: dict[str, str] | None = None,
                    content_type: str | None = None, if_match: str | None = None,
                    storage_class: str | None = None,
                    content_headers: dict[str, str] | None = None) -> str:
        """Server-side copy. ``metadata=None`` keeps the source's metadata (directive
        Copy; ``content_type`` and ``content_headers`` are then ignored by the
        server); a dict replaces all of it, ``CONTENT_HEADERS`` included: pass the
        source's ``content_headers`` to keep them. The copy is STANDARD unless
        ``storage_class`` says otherwise, whatever the source's class."""
        headers = {f"{self._x}copy-source": self._copy_source(src_key)}
        headers.update(self._storage_class_header(storage_class))
        if metadata is None:
            headers[f"{self._x}metadata-directive"] = "COPY" if self._s3 else "Copy"
        else:
            headers[f"{self._x}metadata-directive"] = "REPLACE" if self._s3 else "Replaced"
            headers.update(self._object_headers(content_type, metadata, content_headers))
        if if_match:
            headers[f"{self._x}copy-source-if-match"] = _quoted(if_match)
        return self._fetch(_Call("PutObjectCopy", "PUT", dst_key, headers=headers),
                           parse_result_etag)

    def delete_object(self, key: str) -> None:
        try:
            self._run(_Call("DeleteObject", "DELETE", key, ok=(200, 204)))
        except CosError as err:
            if err.code != "NoSuchKey":
                raise

    def delete_objects(self, keys: Iterable[str]) -> list[DeleteError]:
        """Delete many keys, 1000 per request; returns the keys that failed. Each
        of those counts as an error of ``DeleteMultipleObjects`` in :meth:`stats`
        (its request succeeded, so nothing else would show it)."""
        keys = list(keys)
        errors: list[DeleteError] = []
        for i in range(0, len(keys), DELETE_BATCH):
            body = build_delete(keys[i:i + DELETE_BATCH], quiet=True, xmlns=self._xmlns)
            call = _Call("DeleteMultipleObjects", "POST", "", {"delete": None},
                         {"Content-Type": "application/xml"}, Payload(body))
            failed = self._fetch(call, parse_delete_result)
            if failed:
                self._stats.add(call.op, errors=len(failed))
            errors.extend(failed)
        return errors

    # -- multipart ---------------------------------------------------------------------

    def create_multipart_upload(self, key: str, content_type: str | None = None,
                                metadata: dict[str, str] | None = None,
                                storage_class: str | None = None,
                                content_headers: dict[str, str] | None = None) -> str:
        """Start an upload; returns its id. If an answer is lost and the retry starts a
        second upload, the first one is orphaned: callers that care sweep
        :meth:`list_multipart_uploads` (nothing tells two uploads of a key apart)."""
        headers = self._object_headers(content_type, metadata, content_headers)
        headers.update(self._storage_class_header(storage_class))
        call = _Call("InitiateMultipartUpload", "POST", key, {"uploads": None}, headers)
        return self._fetch(call, parse_upload_id)

    def upload_part(self, key: str, upload_id: str, part_number: int, body: BodySource) -> str:
        call = _Call("UploadPart", "PUT", key, _part_params(upload_id, part_number),
                     payload=Payload(body), not_found="NoSuchUpload")
        return strip_etag(self._run(call).headers.get("ETag", ""))

    def upload_part_copy(self, key: str, upload_id: str, part_number: int, src_key: str,
                         start: int, end: int) -> str:
        """Copy bytes ``[start, end]`` (inclusive) of ``src_key`` into a part."""
        headers = {f"{self._x}copy-source": self._copy_source(src_key),
                   f"{self._x}copy-source-range": f"bytes={start}-{end}"}
        call = _Call("UploadPartCopy", "PUT", key, _part_params(upload_id, part_number),
                     headers, not_found="NoSuchUpload")
        return self._fetch(call, parse_result_etag)

    def complete_multipart_upload(self, key: str, upload_id: str,
                                  parts: list[PartInfo]) -> str:
        """Assemble the parts; returns the new object's ETag (``...-N``).

        If an attempt's outcome is unknown and the retry finds the upload gone
        (NoSuchUpload), the object carrying an ETag ending in ``-<number of parts>``
        means the first attempt completed it."""
        ordered = sorted(parts, key=lambda p: p.part_number)
        body = build_complete(ordered, xmlns=self._xmlns)
        call = _Call("CompleteMultipartUpload", "POST", key, {"uploadId": upload_id},
                     {"Content-Type": "application/xml"}, Payload(body),
                     not_found="NoSuchUpload")

        def recover(err: CosError, retries_done: int) -> Any:
            if retries_done and err.code == "NoSuchUpload":
                try:
                    info = self.head_object(key)
                except CosError:
                    return _UNRESOLVED
                if info.etag.endswith(f"-{len(ordered)}"):
                    log.info("completion of %r had succeeded before the error", key)
                    return info.etag
            return _UNRESOLVED

        return self._fetch(call, parse_result_etag, recover=recover)

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Abort an upload. NoSuchUpload on a retry means an earlier attempt whose
        answer was lost did abort it; on the first attempt it is an error."""

        def recover(err: CosError, retries_done: int) -> Any:
            return None if retries_done and err.code == "NoSuchUpload" else _UNRESOLVED

        self._run(_Call("AbortMultipartUpload", "DELETE", key, {"uploadId": upload_id},
                        ok=(200, 204), not_found="NoSuchUpload"), recover=recover)

    def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        parts: list[PartInfo] = []
        marker = 0
        while True:
            params: dict[str, str | None] = {"uploadId": upload_id, "max-parts": "1000"}
            if marker:
                params["part-number-marker"] = str(marker)
            page = self._fetch(_Call("ListParts", "GET", key, params, not_found="NoSuchUpload"),
                               parse_list_parts)
            parts.extend(page.parts)
            following = page.next_marker or (page.parts[-1].part_number if page.parts else 0)
            if not page.is_truncated or following <= marker:
                return parts
            marker = following

    def list_multipart_uploads(self, prefix: str = "") -> list[UploadInfo]:
        uploads: list[UploadInfo] = []
        key_marker = upload_id_marker = ""
        while True:
            params: dict[str, str | None] = {"uploads": None, "encoding-type": "url"}
            for name, value in (("prefix", prefix), ("key-marker", key_marker),
                                ("upload-id-marker", upload_id_marker)):
                if value:
                    params[name] = value
            call = _Call("ListMultipartUploads", "GET", "", params, not_found="NoSuchBucket")
            page = self._fetch(call, parse_list_uploads, not self._s3)
            uploads.extend(page.uploads)
            if not page.is_truncated or (page.next_key_marker, page.next_upload_id_marker) == (
                    key_marker, upload_id_marker):
                return uploads
            key_marker, upload_id_marker = page.next_key_marker, page.next_upload_id_marker

    # -- helpers for the operations -------------------------------------------------------

    @property
    def _xmlns(self) -> str | None:
        return S3_XMLNS if self._s3 else None

    def _copy_source(self, src_key: str) -> str:
        if self._s3:
            return f"/{self.config.bucket}/{quote_key(src_key)}"
        cfg = self.config
        return f"{cfg.bucket}.cos.{cfg.region}.myqcloud.com/{quote_key(src_key)}"

    def _object_headers(self, content_type: str | None, metadata: dict[str, str] | None,
                        content_headers: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Content-Type": content_type} if content_type else {}
        for name, value in (content_headers or {}).items():
            if name not in CONTENT_HEADERS:
                raise ValueError(f"{name!r} is not one of {CONTENT_HEADERS}")
            headers[name] = value
        for name, value in (metadata or {}).items():
            if not is_sendable_metadata(name, value):
                raise ValueError(f"metadata {name!r}: names take lower-case letters, digits "
                                 "and -, values printable ASCII")
            headers[f"{self._x}meta-{name}"] = value
        return headers

    def _storage_class_header(self, storage_class: str | None) -> dict[str, str]:
        # STANDARD is what no header means: sent only for another class.
        if not storage_class or storage_class.upper() == "STANDARD":
            return {}
        return {f"{self._x}storage-class": storage_class}

    def _info(self, key: str, headers: Headers, size: int) -> ObjectInfo:
        meta_prefix = f"{self._x}meta-"
        metadata = {
            name.lower()[len(meta_prefix):]: value
            for name, value in headers.items()
            if name.lower().startswith(meta_prefix)
        }
        return ObjectInfo(
            key=key,
            size=size,
            etag=strip_etag(headers.get("ETag", "")),
            last_modified=_http_time(headers.get("Last-Modified", "")),
            content_type=headers.get("Content-Type", ""),
            metadata=metadata,
            content_headers={name: headers[name] for name in CONTENT_HEADERS
                             if name in headers},
            appendable=headers.get("x-cos-object-type", "").lower() == "appendable",
            storage_class=headers.get(f"{self._x}storage-class") or "STANDARD",
        )

    def _size_or_none(self, key: str) -> int | None:
        """The object's size, or None if it is missing or the HEAD failed."""
        try:
            return self.head_object(key).size
        except CosError:
            return None

    def _fetch(self, call: _Call, parser: Callable[..., T], *args: Any,
               recover: Callable[[CosError, int], Any] | None = None) -> T:
        """Run ``call`` and parse its XML answer with ``parser(body, *args)``; a
        value from ``recover`` is returned as it is."""
        resp = self._run(call, recover=recover)
        if not isinstance(resp, _Answer):
            return resp
        try:
            return parser(resp.content, *args)
        except XmlError as e:
            self._stats.add(call.op, errors=1)
            raise CosError(resp.status, "MalformedResponse", str(e),
                           _request_id(resp.headers), operation=call.op, key=call.key) from None

    # -- the request engine -----------------------------------------------------------------

    def _run(self, call: _Call, *, recover: Callable[[CosError, int], Any] | None = None) -> Any:
        """Send ``call`` until it succeeds, fails for good, or retries run out.

        Returns the response (its body read), or what ``recover``
        returned: it is asked after every failure whether the operation in fact
        succeeded (for non-idempotent operations)."""
        self._stats.add(call.op, calls=1)
        retries = 0
        while True:
            try:
                return self._attempt(call, stream=False)
            except CosError as err:
                if recover is not None:
                    outcome = recover(err, retries)
                    if outcome is not _UNRESOLVED:
                        return outcome
                if not self._policy.should_retry(err, retries):
                    self._stats.add(call.op, errors=1)
                    raise
                retries += 1
                self._backoff(call.op, call.key, err, retries)

    def _backoff(self, op: str, key: str, err: CosError, retry: int) -> None:
        delay = self._policy.delay(retry, self._rng)
        self._stats.add(op, retries=1)
        log.warning("%s (retry %d/%d in %.2fs)", err, retry, self._policy.max_retries, delay)
        time.sleep(delay)

    def _attempt(self, call: _Call, stream: bool) -> Any:
        """One HTTP exchange; raises CosError for anything but an expected status.

        Returns an :class:`_Answer` (body read), or with ``stream`` the transport's
        :class:`Response` with the body still to read (the caller releases it).
        A failure on a kept-alive connection is an attempt like any other, never
        resent behind the retry policy's back: a server may act on a request and
        then drop the connection, and only the policy's recovery hooks can tell."""
        self._stats.add(call.op, requests=1)
        started = time.monotonic()
        with _translated(call):
            resp = self._send(call)
            try:
                if resp.status not in call.ok:
                    raise self._error(call, resp)
                if stream:
                    return resp
                body = resp.read()  # read inside the attempt: a drop here is retried
                resp.release()
            except BaseException:
                resp.close()
                raise
        self._stats.add(call.op, bytes_received=len(body))
        answer = _Answer(resp.status, resp.headers, body)
        _raise_error_body(call, answer)
        log.debug("%s %s %r -> %d in %.3fs", call.op, call.method, call.key,
                  resp.status, time.monotonic() - started)
        return answer

    def _send(self, call: _Call) -> Response:
        """Sign and send ``call`` (its body opened anew); the answer's head is read."""
        if call.payload is None:
            target, headers = self._prepare(call, 0)
            return self._transport.send(call.method, target, headers, None)
        with call.payload.open() as (data, length):
            target, headers = self._prepare(call, length)
            resp = self._transport.send(call.method, target, headers,
                                        data if length else b"")
        self._stats.add(call.op, bytes_sent=length)
        return resp

    def _prepare(self, call: _Call, length: int) -> tuple[str, dict[str, str]]:
        """The request target (encoded path and query) and the signed headers."""
        target = quote_key(self._endpoint.path(call.key))
        query = encode_query(call.params)
        if query:
            target = f"{target}?{query}"
        headers = {"Host": self._endpoint.host, **call.headers}
        if call.payload is not None:
            headers["Content-Length"] = str(length)
            md5 = call.payload.content_md5
            if md5:
                headers["Content-MD5"] = md5
        if self.config.token:
            headers[f"{self._x}security-token"] = self.config.token
        self._sign(call, headers)
        if call.payload is None and call.method not in ("GET", "HEAD"):
            # A PUT or POST without a length is refused (411) by S3-like servers; sent
            # unsigned, as the HTTP library this client used before sent it.
            headers["Content-Length"] = "0"
        headers["User-Agent"] = self._user_agent
        # Objects stored with Content-Encoding must come back byte for byte.
        headers["Accept-Encoding"] = "identity"
        return target, headers

    def _sign(self, call: _Call, headers: dict[str, str]) -> None:
        now = time.time()
        if self._s3:
            body = call.payload.in_memory if call.payload is not None else b""
            if body is not None and len(body) <= SHA256_PAYLOAD_LIMIT:
                payload_hash = hashlib.sha256(body).hexdigest()
            else:
                payload_hash = UNSIGNED_PAYLOAD
            headers["x-amz-date"] = amz_date(now)
            headers["x-amz-content-sha256"] = payload_hash
            sig = sign_s3(self.config.secret_key, self.config.region, call.method,
                          quote_key(self._endpoint.path(call.key)), call.params,
                          _signed(headers), payload_hash, headers["x-amz-date"])
        else:
            sig = sign_cos(self.config.secret_key, call.method, self._endpoint.path(call.key),
                           call.params, _signed(headers), cos_key_time(now))
        headers["Authorization"] = sig.authorization(self.config.secret_id)

    def _error(self, call: _Call, resp: Response) -> CosError:
        if call.method == "HEAD":
            body = b""
            resp.release()  # bodiless: the connection serves the next request
        else:
            body = _error_body(resp)
        parsed = parse_error(body)
        if parsed and parsed.code:
            code, message = parsed.code, parsed.message
        else:
            code = call.not_found if resp.status == 404 else _STATUS_CODES.get(
                resp.status, f"HTTP{resp.status}")
            message = ""
        request_id = _request_id(resp.headers) or (parsed.request_id if parsed else "")
        return CosError(resp.status, code, message, request_id,
                        operation=call.op, key=call.key)


class _ObjectStream:
    """The body of one GET, resumed after a dropped connection.

    Invariant: ``delivered`` bytes of the wanted range have been handed out (as
    chunks or into the caller's buffer); a resume asks for ``[start + delivered,
    end]`` with If-Match on the first answer's ETag. Retries (of the first request
    and of resumes together) are bounded by the client's policy.
    Not thread-safe: one consumer reads it.
    """

    def __init__(self, client: CosClient, key: str, start: int | None, end: int | None,
                 if_match: str | None, chunk_size: int) -> None:
        self._client = client
        self._key = key
        self._start = start or 0
        self._ranged = start is not None or end is not None
        self._end = end
        self._if_match = if_match
        self._chunk_size = chunk_size
        self._resp: Response | None = None
        self._remaining: int | None = None  # bytes still due from the current answer
        self._skip = 0  # leading bytes to drop when a server ignored our Range
        self._retries = 0
        self.delivered = 0

    def open(self) -> ObjectInfo:
        self._client._stats.add("GetObject", calls=1)
        info = self._request_until_answered()
        self._if_match = self._if_match or info.etag
        return info

    def _request_until_answered(self) -> ObjectInfo:
        while True:
            try:
                return self._request()
            except CosError as err:
                self._give_up_or_wait(err)

    def _give_up_or_wait(self, err: CosError) -> None:
        client = self._client
        if not client._policy.should_retry(err, self._retries):
            client._stats.add("GetObject", errors=1)
            raise err
        self._retries += 1
        client._backoff("GetObject", self._key, err, self._retries)

    def _request(self) -> ObjectInfo:
        first = self._start + self.delivered
        headers = {}
        if self._ranged or self.delivered:
            headers["Range"] = f"bytes={first}-{'' if self._end is None else self._end}"
        if self._if_match:
            headers["If-Match"] = _quoted(self._if_match)
        call = _Call("GetObject", "GET", self._key, headers=headers, ok=(200, 206))
        self._resp = resp = self._client._attempt(call, stream=True)
        length = resp.headers.get("Content-Length")
        self._remaining = int(length) if length is not None else None
        self._skip = 0
        total = self._remaining or 0
        if resp.status == 206:
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if match and match.group(3) != "*":
                total = int(match.group(3))
        elif "Range" in headers:  # the whole object came back: cut our range out of it
            self._skip = first
            if self._remaining is not None:
                self._remaining = max(0, self._remaining - first)
            if self._end is not None:
                wanted = self._end - first + 1
                self._remaining = min(self._remaining or wanted, wanted)
        return self._client._info(self._key, resp.headers, total)

    def __iter__(self) -> Iterator[bytes]:
        while self._resp is not None:
            try:
                yield from self._chunks(self._resp)
                return
            except CosError as err:
                self._resume_after(err)

    def _resume_after(self, err: CosError) -> None:
        self.close()
        self._give_up_or_wait(err)
        self._request_until_answered()

    def _chunks(self, resp: Response) -> Iterator[bytes]:
        """Yield the current answer's body; CosError if it ends short."""
        with _translated(_Call("GetObject", "GET", self._key)):
            while self._remaining != 0:
                self._drop_skipped(resp)
                want = self._chunk_size
                if self._remaining is not None:
                    want = min(want, self._remaining)
                chunk = resp.read(want)
                if not chunk:
                    break
                if self._remaining is not None:
                    self._remaining -= len(chunk)
                self.delivered += len(chunk)
                self._client._stats.add("GetObject", bytes_received=len(chunk))
                yield chunk
        self._finish(resp)

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` with the next bytes of the range, straight from the socket
        (no intermediate copies); fewer only at the range's end. Resumes like
        iteration does."""
        filled = 0
        while self._resp is not None and filled < len(buffer):
            try:
                filled += self._fill(self._resp, buffer[filled:])
                if filled < len(buffer):  # the answer ended where the range does
                    break
            except CosError as err:
                self._resume_after(err)
        return filled

    def _fill(self, resp: Response, buffer: memoryview) -> int:
        """Read the current answer into ``buffer``; returns the bytes stored. Less
        than the buffer only when the answer is complete; CosError if it ends short."""
        filled = 0
        with _translated(_Call("GetObject", "GET", self._key)):
            while filled < len(buffer) and self._remaining != 0:
                self._drop_skipped(resp)
                want = min(len(buffer) - filled, READINTO_SLICE)
                if self._remaining is not None:
                    want = min(want, self._remaining)
                n = resp.readinto(buffer[filled:filled + want])
                if not n:
                    break
                if self._remaining is not None:
                    self._remaining -= n
                filled += n
                self.delivered += n
                self._client._stats.add("GetObject", bytes_received=n)
        if filled < len(buffer) or self._remaining == 0:
            self._finish(resp)
        return filled

    def _drop_skipped(self, resp: Response) -> None:
        """Read past what precedes the range when the server ignored it."""
        while self._skip:
            dropped = len(resp.read(min(self._skip, self._chunk_size)))
            if not dropped:
                return  # the body ended: _finish reports it
            self._skip -= dropped

    def _finish(self, resp: Response) -> None:
        """The current answer has no more bytes for us: short is an error; complete
        releases its connection for reuse."""
        if self._remaining or self._skip:
            raise CosError(0, "ConnectionError", f"body ended {self._remaining} bytes short",
                           operation="GetObject", key=self._key)
        resp.release()
        self._resp = None

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None


# -- small pure helpers ------------------------------------------------------------------


def continuation_marker(page: ListPage) -> str:
    """Where the listing after ``page`` starts: its NextMarker, or (S3 omits it when
    there is no delimiter) the greatest key or prefix it returned. Code point order
    of ``str`` is UTF-8 byte order, the order of a listing."""
    if page.next_marker:
        return page.next_marker
    return max([c.key for c in page.contents] + page.common_prefixes, default="")


def _part_params(upload_id: str, part_number: int) -> dict[str, str | None]:
    return {"partNumber": str(part_number), "uploadId": upload_id}


def _signed(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in UNSIGNED_HEADERS}


def _quoted(etag: str) -> str:
    return etag if etag.startswith(('"', "W/")) or etag == "*" else f'"{etag}"'


def _request_id(headers: Headers) -> str:
    return headers.get("x-cos-request-id") or headers.get("x-amz-request-id") or ""


def _http_time(text: str) -> float:
    if not text:
        return 0.0
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _error_body(resp: Response) -> bytes:
    """The body of an error answer; empty if the connection broke while reading it:
    the status line already says what happened, and a 412 cut short is still a 412."""
    try:
        body = resp.read()
    except _TRANSPORT_ERRORS:
        resp.close()
        return b""
    resp.release()
    return body


def _raise_error_body(call: _Call, resp: _Answer) -> None:
    """COS may answer 200 to copy and complete with an ``<Error>`` body."""
    parsed = parse_error(resp.content)
    if parsed is not None:
        raise CosError(resp.status, parsed.code or "InternalError", parsed.message,
                       _request_id(resp.headers) or parsed.request_id,
                       operation=call.op, key=call.key)


@contextlib.contextmanager
def _translated(call: _Call) -> Iterator[None]:
    """Turn the HTTP stack's exceptions into CosError (status 0: no answer)."""
    try:
        yield
    except TimeoutError as e:  # socket.timeout is TimeoutError
        raise _transport(call, "Timeout", e) from None
    except ssl.SSLError as e:
        # A certificate or protocol failure will not pass on retry; a TLS stream
        # cut short is a lost connection like any other.
        code = "ConnectionError" if isinstance(e, _TLS_CUT) else "SSLError"
        raise _transport(call, code, e) from None
    except _TRANSPORT_ERRORS as e:
        raise _transport(call, "ConnectionError", e) from None


def _transport(call: _Call, code: str, exc: BaseException) -> CosError:
    # The exception text names host and path at most, never request headers.
    return CosError(0, code, f"{type(exc).__name__}: {exc}"[:300], operation=call.op,
                    key=call.key)
