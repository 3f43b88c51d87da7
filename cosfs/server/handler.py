"""The HTTP side of the server: one handler per connection (HTTP/1.1 keep-alive), one
:class:`Exchange` per request, which routes, injects faults, authenticates, runs the
operation and streams the answer (``sendfile`` for object bytes)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from . import bucket_ops, multipart_ops, object_ops
from .auth import AuthResult, RequestView, authenticate
from .bodies import (
    CHUNK,
    AwsChunkedSource,
    ChunkedSource,
    ClientGone,
    DropConnection,
    EmptySource,
    LengthSource,
    RequestBody,
    Source,
    parse_content_md5,
)
from .errors import CosServerError, injected_error
from .faults import Decision
from .messages import Context, Request, Response
from .routing import Target, check_key, decode_path, operation, route
from .xmlio import error_document

if TYPE_CHECKING:
    from .server import CosHTTPServer

Operation = Callable[[Context, Request], Response]
OPERATIONS: dict[str, Operation] = {
    "ListBuckets": bucket_ops.list_buckets,
    "HeadBucket": bucket_ops.head_bucket,
    "PutBucket": bucket_ops.put_bucket,
    "DeleteBucket": bucket_ops.delete_bucket,
    "ListObjects": bucket_ops.list_objects,
    "DeleteMultipleObjects": bucket_ops.delete_multiple,
    "HeadObject": object_ops.head_object,
    "GetObject": object_ops.get_object,
    "PutObject": object_ops.put_object,
    "AppendObject": object_ops.append_object,
    "PutObjectCopy": object_ops.put_object_copy,
    "DeleteObject": object_ops.delete_object,
    "InitiateMultipartUpload": multipart_ops.initiate,
    "UploadPart": multipart_ops.upload_part,
    "UploadPartCopy": multipart_ops.upload_part_copy,
    "CompleteMultipartUpload": multipart_ops.complete,
    "AbortMultipartUpload": multipart_ops.abort,
    "ListParts": multipart_ops.list_parts,
    "ListMultipartUploads": multipart_ops.list_uploads,
}
# Operations whose request body is object data: they need a framed body, and a
# dropped connection cuts their upload rather than their answer.
UPLOADS = frozenset({"PutObject", "UploadPart", "AppendObject"})
KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
# An error answered before the body was read: read up to this much of it to keep the
# connection (and let the client see the answer); close the connection beyond.
DRAIN_LIMIT = 64 << 20
MAX_ADMIN_BODY = 1 << 20
_ids = itertools.count(1)
_PARSER_ERROR_CODES = {400: "InvalidRequest", 414: "InvalidURI", 431: "InvalidRequest",
                       501: "NotImplemented", 505: "InvalidRequest"}


def new_request_id() -> str:
    raw = f"{time.time_ns():x}_{os.getpid():x}_{next(_ids):08x}"
    return base64.b64encode(raw.encode()).decode().rstrip("=")


def _drain(source: Source, limit: int) -> bool:
    """Read and discard what is left of a body; whether all of it was read."""
    if isinstance(source, LengthSource) and source.remaining > limit:
        return False
    while limit >= 0:
        data = source.read(CHUNK)
        if not data:
            return True
        limit -= len(data)
    return False


class CosRequestHandler(BaseHTTPRequestHandler):
    """Serves the requests of one connection, one after the other. Handlers of different
    connections run in their own (daemon) threads and share the server's store, fault
    table and stats, which are thread-safe."""

    protocol_version = "HTTP/1.1"
    server_version = "tencent-cos"
    sys_version = ""
    timeout = 300  # seconds a connection may sit idle or stalled
    server: CosHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without NODELAY, Nagle and
        # delayed ACKs would add 40 ms to every small answer on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        return self.server_version

    def handle_expect_100(self) -> bool:
        # "100 Continue" goes out when the operation starts reading the body, so a
        # request refused early never makes the client send it.
        return True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.server.config.verbose:  # the path only: query strings may carry signatures
            sys.stderr.write(f"{self.address_string()} {self.command} "
                             f"{self.path.split('?', 1)[0]} {code}\n")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        if self.server.config.verbose:
            super().log_message(format, *args)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Errors the HTTP parser itself raises (a malformed request line, an unknown
        method, headers too large) in the COS shape, with a request id like any other
        answer; the connection closes, as the request may not have been understood."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # unparsed yet: nobody speaks 0.9 today
            self.request_version = self.protocol_version
        request_id = new_request_id()
        body = error_document(_PARSER_ERROR_CODES.get(code, "InvalidRequest"),
                              message or explain or "Bad request",
                              getattr(self, "path", "") or "/", request_id, request_id)
        self.send_response(code, message)
        self.send_header("x-cos-request-id", request_id)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", "") != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        Exchange(self).run()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = _serve


class Exchange:
    """One request and its answer. Lives in the connection's thread."""

    def __init__(self, handler: CosRequestHandler) -> None:
        self.h = handler
        self.server = handler.server
        self.method = handler.command
        self.raw_path, _, self.raw_query = handler.path.partition("?")
        self.host = handler.headers.get("Host", "")
        self.request_id = new_request_id()
        self.op = "Unknown"
        self.scheme = "anonymous"
        self.decision = Decision()
        self.body_cut_planned = False
        self.transport: Source = EmptySource()
        self.framed = False
        self.continue_pending = handler.headers.get("Expect", "").lower() == "100-continue"
        self.is_admin = False
        self.answered = False

    # -- the request -------------------------------------------------------------

    def run(self) -> None:
        try:
            self.transport = self._transport()
            target = route(self.host, decode_path(self.raw_path), self.server.config.host_suffix)
            query_pairs = parse_qsl(self.raw_query, keep_blank_values=True)
        except CosServerError as err:
            self._answer(self._error(err))
            return
        if target.admin:
            self._admin(target)
            return
        query = {}
        for name, value in query_pairs:
            query.setdefault(name, value)
        copy = self.h.headers.get("x-cos-copy-source", self.h.headers.get("x-amz-copy-source"))
        self.op = operation(self.method, target, query, copy is not None)
        self.server.stats.begin(self.op)
        try:
            self._answer(self._process(target, query_pairs, query))
        finally:
            self.server.stats.end(self.op)

    def _transport(self) -> Source:
        headers = self.h.headers
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            self.framed = True
            return ChunkedSource(self.h.rfile)
        length = headers.get("Content-Length")
        if length is None:
            return EmptySource()
        self.framed = True
        if not length.strip().isdigit():
            self.h.close_connection = True  # where this body ends is anybody's guess
            raise CosServerError("InvalidArgument", "Content-Length is not a number")
        return LengthSource(self.h.rfile, int(length))

    def _process(self, target: Target, query_pairs: list[tuple[str, str]],
                 query: dict[str, str]) -> Response | None:
        """The answer, or ``None`` when the connection was abandoned."""
        try:
            return self._run_operation(target, query_pairs, query)
        except CosServerError as err:
            return self._error(err)
        except (DropConnection, ClientGone):
            self._abandon()
        except Exception:  # a bug or a failing disk: answer 500 and keep serving
            traceback.print_exc(file=sys.stderr)
            return self._error(CosServerError("InternalError", "The server failed to "
                                              "process the request"))
        return None

    def _run_operation(self, target: Target, query_pairs: list[tuple[str, str]],
                       query: dict[str, str]) -> Response:
        self.decision = decision = self.server.faults.decide(self.op)
        if decision.latency_s:
            time.sleep(decision.latency_s)
        if decision.error_status is not None:
            self.server.stats.add(self.op, injected=1)
            raise injected_error(decision.error_status)
        if decision.drop:
            self.server.stats.add(self.op, injected=1)
        if self.op == "Unsupported":
            if self.method not in KNOWN_METHODS:
                raise CosServerError("MethodNotAllowed", f"{self.method} is not allowed")
            raise CosServerError("NotImplemented", "This server does not implement the "
                                 "requested operation")
        if target.is_object:
            check_key(target.key)
        auth = authenticate(self._view(target, query_pairs), self.server.config.credentials,
                            self.server.config.anonymous, time.time())
        self.scheme = auth.scheme
        if self.op in UPLOADS and not self.framed:
            raise CosServerError("MissingContentLength", "You must provide the "
                                 "Content-Length HTTP header.")
        body = self._body(auth)
        try:
            req = Request(self.method, target, query, self.h.headers, body, self.host,
                          auth.scheme, self.request_id)
            response = OPERATIONS[self.op](self.server.context, req)
        finally:
            body.close()
        if decision.answer_latency_s:
            time.sleep(decision.answer_latency_s)  # served; the answer is on its way
        return response

    def _view(self, target: Target, query_pairs: list[tuple[str, str]]) -> RequestView:
        paths = [decode_path(self.raw_path)]
        if not target.virtual_host and target.bucket is not None:
            paths.append("/" + target.key)
        has_body = self.framed and self.h.headers.get("Content-Length", "").strip() != "0"
        return RequestView(self.method, self.raw_path, self.raw_query, query_pairs,
                           list(self.h.headers.items()), paths, has_body)

    def _body(self, auth: AuthResult) -> RequestBody:
        headers = self.h.headers
        source = self.transport
        length = source.remaining if isinstance(source, LengthSource) else None
        if not self.framed:
            length = 0
        aws_chunked = auth.aws_chunked or "aws-chunked" in headers.get(
            "Content-Encoding", "").lower()
        if aws_chunked:
            source = AwsChunkedSource(source, auth.chunk_chain)
            decoded = headers.get("x-amz-decoded-content-length", "")
            length = int(decoded) if decoded.strip().isdigit() else None
        cut_at = None
        if self.decision.drop and self.op in UPLOADS:
            cut_at = length // 2 if length else 64 * 1024
            self.body_cut_planned = True
        return RequestBody(
            source, decoded_length=length,
            content_md5=parse_content_md5(headers.get("Content-MD5")),
            sha256=None if aws_chunked else auth.payload_sha256, cut_at=cut_at,
            on_bytes=lambda n: self.server.stats.add(self.op, bytes_in=n),
            before_first_read=self._send_continue)

    def _send_continue(self) -> None:
        if self.continue_pending and not self.answered:
            self.continue_pending = False
            self.h.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- the answer --------------------------------------------------------------

    def _error(self, err: CosServerError) -> Response:
        headers = {"Content-Type": "application/xml", **err.headers}
        if self.method == "HEAD":
            return Response(err.status, headers)
        resource = f"{self.host}{self.raw_path}" or "/"
        trace = base64.b64encode(os.urandom(24)).decode()
        return Response(err.status, headers, error_document(
            err.code, err.message, resource, self.request_id, trace))

    def _answer(self, response: Response | None) -> None:
        """Send ``response``, then settle the request body; abandon the connection on a
        planned drop or when the client went away."""
        if response is None:
            return
        try:
            self._send(response)
        except (DropConnection, OSError):
            self._abandon()
            return
        finally:
            if response.file is not None:
                response.file.close()
        self._settle_body()

    def _send(self, response: Response) -> None:
        status = response.status
        if status >= 400 and not self.is_admin:
            self.server.stats.add(self.op, errors=1)
        no_body = self.method == "HEAD" or status in (204, 304)
        cut = self.decision.drop and not self.body_cut_planned
        if cut and (no_body or response.body_length == 0):
            raise DropConnection()
        self.answered = True  # no "100 Continue" after the final answer
        h = self.h
        if self.continue_pending:  # the client will not send the body: see _settle_body
            h.close_connection = True
        h.send_response(status)
        headers = {"x-cos-request-id": self.request_id, **response.headers}
        if h.close_connection:
            headers["Connection"] = "close"
        if self.scheme == "sigv4":
            headers["x-amz-request-id"] = self.request_id
        if status not in (204, 304) and "Content-Length" not in headers:
            headers["Content-Length"] = str(0 if no_body else response.body_length)
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()
        if no_body:
            return
        length = response.body_length // 2 if cut else response.body_length
        if response.file is not None:
            sent = 0
            for blob, offset, count in response.file.pieces(response.offset, length):
                sent += h.connection.sendfile(blob, offset, count)
        else:
            h.wfile.write(response.body[:length])
            sent = length
        if not self.is_admin:
            self.server.stats.add(self.op, bytes_out=sent)
        if cut:
            raise DropConnection()

    def _settle_body(self) -> None:
        """Read what the operation left of the body, so the connection stays usable;
        close it when that is too much, or when the client, still waiting for
        100 Continue, will not send the body at all."""
        if self.continue_pending:
            self.h.close_connection = True
            return
        try:
            if not _drain(self.transport, DRAIN_LIMIT):
                self.h.close_connection = True
        except (ClientGone, CosServerError, OSError):
            self.h.close_connection = True

    def _abandon(self) -> None:
        """Close the connection now, mid-request: a fault or a vanished client."""
        self.h.close_connection = True
        try:
            self.h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- admin ---------------------------------------------------------------------

    def _admin(self, target: Target) -> None:
        self.is_admin = True
        try:
            body = RequestBody(self.transport, before_first_read=self._send_continue)
            document = body.read_all(MAX_ADMIN_BODY)
            status, answer = self.server.admin.handle(self.method, target.key, document)
        except CosServerError as err:
            status, answer = 400, {"error": err.message}
        except (ClientGone, OSError):
            self._abandon()
            return
        payload = json.dumps(answer).encode()
        self._answer(Response(status, {"Content-Type": "application/json"}, payload))
