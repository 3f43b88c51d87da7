"""Verification of AWS Signature Version 4 (S3 flavour), pure functions.

COS accepts requests signed by AWS SDKs on the same endpoint; so does this server.
Covers the Authorization header and presigned (``X-Amz-*`` query) forms, and the chunk
signatures of ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` bodies.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def uri_encode(value: str | bytes, keep_slash: bool = False) -> str:
    """UriEncode of SigV4: every byte but unreserved ones (and ``/`` in paths)."""
    return quote(value, safe="-_.~/" if keep_slash else "-_.~")


@dataclass(frozen=True)
class SigV4Authorization:
    """What a SigV4 request claims: credential scope, signed headers, signature,
    the request time (``X-Amz-Date``) and, for presigned URLs, the validity."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    expires: int | None = None

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"

    @property
    def timestamp(self) -> int:
        return calendar.timegm(time.strptime(self.amz_date, "%Y%m%dT%H%M%SZ"))


def _credential(value: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise ValueError(f"malformed Credential {value!r}")
    return parts[0], parts[1], parts[2], parts[3]


def _check_amz_date(amz_date: str) -> str:
    time.strptime(amz_date, "%Y%m%dT%H%M%SZ")  # ValueError when malformed
    return amz_date


def parse_authorization_header(value: str, amz_date: str) -> SigV4Authorization:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    fields = {}
    for part in rest.split(","):
        name, _, field = part.strip().partition("=")
        fields[name] = field
    try:
        access_key, date, region, service = _credential(fields["Credential"])
        return SigV4Authorization(access_key, date, region, service,
                                  tuple(fields["SignedHeaders"].split(";")),
                                  fields["Signature"], _check_amz_date(amz_date))
    except KeyError as exc:
        raise ValueError(f"missing {exc.args[0]}") from None


def parse_presigned(query: Mapping[str, str]) -> SigV4Authorization:
    """The ``X-Amz-*`` parameters of a presigned URL (already percent-decoded)."""
    try:
        if query["X-Amz-Algorithm"] != ALGORITHM:
            raise ValueError(f"unsupported algorithm {query['X-Amz-Algorithm']!r}")
        access_key, date, region, service = _credential(query["X-Amz-Credential"])
        return SigV4Authorization(access_key, date, region, service,
                                  tuple(query["X-Amz-SignedHeaders"].split(";")),
                                  query["X-Amz-Signature"], _check_amz_date(query["X-Amz-Date"]),
                                  int(query["X-Amz-Expires"]))
    except KeyError as exc:
        raise ValueError(f"missing {exc.args[0]}") from None


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Parameters (decoded) encoded and sorted by name then value; a presigned URL's
    ``X-Amz-Signature`` is left out."""
    encoded = sorted((uri_encode(name), uri_encode(value)) for name, value in pairs
                     if name != "X-Amz-Signature")
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(headers: Sequence[tuple[str, str]], signed: Iterable[str]) -> str:
    """``name:value\\n`` for each signed header; repeated headers join with commas,
    values are trimmed and runs of spaces collapse."""
    lines = []
    for name in signed:
        values = [" ".join(value.split()) for n, value in headers if n.lower() == name]
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def canonical_request(method: str, uri: str, query: str, headers: str,
                      signed: Iterable[str], payload_hash: str) -> str:
    return "\n".join([method.upper(), uri, query, headers, ";".join(signed), payload_hash])


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def sign(key: bytes, to_sign: str) -> str:
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify(auth: SigV4Authorization, secret_key: str, method: str, uris: Iterable[str],
           queries: Iterable[str], headers: Sequence[tuple[str, str]],
           payload_hash: str) -> bool:
    """Whether ``auth.signature`` signs the request. ``uris`` and ``queries`` are the
    canonical forms to try (clients differ in how they encode some characters);
    header values must be ``str`` decoded from UTF-8 with ``surrogateescape``."""
    key = signing_key(secret_key, auth.date, auth.region, auth.service)
    header_block = canonical_headers(headers, auth.signed_headers)
    queries = list(queries)
    for uri in uris:
        for query in queries:
            canonical = canonical_request(method, uri, query, header_block,
                                          auth.signed_headers, payload_hash)
            expected = sign(key, string_to_sign(auth.amz_date, auth.scope, canonical))
            if hmac.compare_digest(expected, auth.signature.lower()):
                return True
    return False


class ChunkSignatureChain:
    """The expected signatures of the chunks of a ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``
    body: each signs the previous one (the first, the request's seed signature).
    Not thread-safe: one chain per request body."""

    def __init__(self, key: bytes, amz_date: str, scope: str, seed_signature: str) -> None:
        self._key = key
        self._prefix = f"{ALGORITHM}-PAYLOAD\n{amz_date}\n{scope}\n"
        self.previous = seed_signature

    def next(self, chunk_sha256: str) -> str:
        """The signature the next chunk, of digest ``chunk_sha256``, must carry; the
        chain advances."""
        to_sign = f"{self._prefix}{self.previous}\n{EMPTY_SHA256}\n{chunk_sha256}"
        self.previous = sign(self._key, to_sign)
        return self.previous
