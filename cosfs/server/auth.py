"""Authentication of requests: COS ``q-sign`` signatures and AWS SigV4, in a header or in
the query string, against the server's one key pair. Pure: time comes as an argument."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote_to_bytes

from . import cos_signature, sigv4
from .errors import CosServerError

MAX_SKEW_SECONDS = 15 * 60
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Credentials:
    secret_id: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class RequestView:
    """What authentication looks at. ``query`` is decoded with ``+`` as space (as COS
    does); header values are the ISO-8859-1 text the HTTP parser made of the bytes;
    ``paths`` are the decoded paths a COS signature may cover: the request path and,
    for a path-style request, ``/<key>`` (what the client signs for virtual hosting)."""

    method: str
    raw_path: str
    raw_query: str
    query: Sequence[tuple[str, str]]
    headers: Sequence[tuple[str, str]]
    paths: Sequence[str]
    has_body: bool

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)

    def param(self, name: str) -> str | None:
        return next((v for n, v in self.query if n == name), None)


@dataclass(frozen=True)
class AuthResult:
    """How the request was signed and what that says about its body: the SHA-256 it
    must have, whether it is ``aws-chunked``, the chain its chunk signatures follow."""

    scheme: str  # "cos", "sigv4" or "anonymous"
    payload_sha256: str | None = None
    aws_chunked: bool = False
    chunk_chain: sigv4.ChunkSignatureChain | None = None


def _denied(code: str, message: str) -> CosServerError:
    return CosServerError(code, message)


def _mismatch() -> CosServerError:
    return _denied("SignatureDoesNotMatch", "The request signature we calculated does not "
                   "match the signature you provided. Check your key and signing method.")


def _expired() -> CosServerError:
    return _denied("AccessDenied", "Request has expired")


def _skewed() -> CosServerError:
    return _denied("RequestTimeTooSkewed", "The difference between the request time and "
                   "the server's time is too large.")


def _check_id(secret_id: str, creds: Credentials) -> None:
    if secret_id != creds.secret_id:
        raise _denied("InvalidAccessKeyId", "The access key Id you provided does not exist "
                      "in our records.")


def authenticate(view: RequestView, creds: Credentials | None, anonymous: bool,
                 now: float) -> AuthResult:
    """Check the signature of a request; raise the COS error when it fails.

    Without configured credentials every request is accepted unverified (the server
    then only runs with ``--anonymous``)."""
    authorization = (view.header("authorization") or "").strip()
    if authorization.startswith("q-sign-algorithm="):
        fields = dict(part.partition("=")[::2] for part in authorization.split("&"))
        return _cos(view, fields, creds, now)
    if view.param("q-sign-algorithm") is not None:
        return _cos(view, dict(view.query), creds, now)
    if authorization.startswith(sigv4.ALGORITHM):
        return _sigv4_header(view, authorization, creds, now)
    if view.param("X-Amz-Algorithm") is not None:
        return _sigv4_presigned(view, creds, now)
    if authorization:
        raise _denied("AccessDenied", "Unsupported Authorization scheme")
    if anonymous or creds is None:
        return AuthResult("anonymous")
    raise _denied("AccessDenied", "Access Denied: the request carries no signature")


def _cos(view: RequestView, fields: dict[str, str], creds: Credentials | None,
         now: float) -> AuthResult:
    try:
        auth = cos_signature.parse_authorization(fields)
    except ValueError as exc:
        raise _denied("AccessDenied", f"Malformed COS authorization: {exc}") from None
    if creds is None:
        return AuthResult("cos")
    _check_id(auth.secret_id, creds)
    if auth.valid_from > now + MAX_SKEW_SECONDS:
        raise _skewed()
    params = cos_signature.encode_pairs(view.query)
    headers = cos_signature.encode_pairs((n, v.encode("latin-1")) for n, v in view.headers)
    if not cos_signature.verify(auth, creds.secret_key, view.method, view.paths, params,
                                headers):
        raise _mismatch()
    if now > auth.valid_until:
        raise _expired()
    return AuthResult("cos")


def _utf8(text: str) -> str:
    """ISO-8859-1 text of raw bytes -> those bytes read as UTF-8 (lossless)."""
    return text.encode("latin-1").decode("utf-8", "surrogateescape")


def _canonical_candidates(view: RequestView) -> tuple[list[str], list[str]]:
    """Canonical URIs and queries to try: clients agree on the SigV4 rules but not on
    how they encode a few characters in the URL they send."""
    uris = [sigv4.uri_encode(unquote_to_bytes(view.raw_path.encode("latin-1")),
                             keep_slash=True)]
    if _utf8(view.raw_path) not in uris:
        uris.append(_utf8(view.raw_path))
    queries = [sigv4.canonical_query(view.query)]
    if "+" in view.raw_query:
        literal = parse_qsl(view.raw_query.replace("+", "%2B"), keep_blank_values=True)
        queries.append(sigv4.canonical_query(literal))
    return uris, queries


def _verify_sigv4(view: RequestView, auth: sigv4.SigV4Authorization, creds: Credentials,
                  payload_hash: str) -> None:
    uris, queries = _canonical_candidates(view)
    headers = [(n, _utf8(v)) for n, v in view.headers]
    if not sigv4.verify(auth, creds.secret_key, view.method, uris, queries, headers,
                        payload_hash):
        raise _mismatch()


def _payload(view: RequestView, claimed: str | None, auth: sigv4.SigV4Authorization,
             creds: Credentials) -> AuthResult:
    if claimed is None or claimed == sigv4.UNSIGNED_PAYLOAD:
        return AuthResult("sigv4")
    if _HEX64.match(claimed):
        return AuthResult("sigv4", payload_sha256=claimed.lower())
    if claimed in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER):
        key = sigv4.signing_key(creds.secret_key, auth.date, auth.region, auth.service)
        chain = sigv4.ChunkSignatureChain(key, auth.amz_date, auth.scope, auth.signature)
        return AuthResult("sigv4", aws_chunked=True, chunk_chain=chain)
    if claimed == sigv4.STREAMING_UNSIGNED_TRAILER:
        return AuthResult("sigv4", aws_chunked=True)
    raise CosServerError("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                         "a STREAMING-* value or a SHA-256 in hex")


def _sigv4_header(view: RequestView, authorization: str, creds: Credentials | None,
                  now: float) -> AuthResult:
    amz_date = view.header("x-amz-date") or ""
    try:
        auth = sigv4.parse_authorization_header(authorization, amz_date)
    except ValueError as exc:
        raise _denied("AccessDenied", f"Malformed AWS authorization: {exc}") from None
    claimed = view.header("x-amz-content-sha256")
    if creds is None:
        return AuthResult("sigv4", aws_chunked=(claimed or "").startswith("STREAMING-"))
    _check_id(auth.access_key, creds)
    if abs(now - auth.timestamp) > MAX_SKEW_SECONDS:
        raise _skewed()
    if claimed is None and view.has_body:
        raise CosServerError("InvalidRequest", "Missing required header for this request: "
                             "x-amz-content-sha256")
    _verify_sigv4(view, auth, creds, claimed or sigv4.EMPTY_SHA256)
    return _payload(view, claimed, auth, creds)


def _sigv4_presigned(view: RequestView, creds: Credentials | None, now: float) -> AuthResult:
    try:
        auth = sigv4.parse_presigned(dict(view.query))
    except ValueError as exc:
        raise _denied("AccessDenied", f"Malformed presigned URL: {exc}") from None
    if creds is None:
        return AuthResult("sigv4")
    _check_id(auth.access_key, creds)
    if auth.timestamp > now + MAX_SKEW_SECONDS:
        raise _skewed()
    claimed = view.header("x-amz-content-sha256")
    _verify_sigv4(view, auth, creds, claimed or sigv4.UNSIGNED_PAYLOAD)
    if now > auth.timestamp + (auth.expires or 0):
        raise _expired()
    return _payload(view, claimed, auth, creds)
