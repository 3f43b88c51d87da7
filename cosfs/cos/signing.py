"""Request signatures: COS ``q-sign-algorithm=sha1`` and AWS Signature Version 4.

Pure functions of their arguments (the clock is passed in), so the published test
vectors reproduce exactly. Query parameters are given decoded, as a mapping where
``None`` means a parameter without value (``?uploads``); headers are given as sent.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

Params = Mapping[str, "str | None"]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Headers that proxies or the HTTP stack may add, drop or rewrite; never signed.
UNSIGNED_HEADERS = frozenset(
    {"authorization", "user-agent", "accept", "accept-encoding", "connection", "expect",
     "transfer-encoding", "keep-alive", "proxy-authorization", "te", "upgrade"}
)


def uri_encode(text: str) -> str:
    """Percent-encode UTF-8 bytes except ``A-Z a-z 0-9 - _ . ~`` (``/`` too)."""
    return quote(text, safe="-_.~")


def encode_query(params: Params) -> str:
    """The query string as sent; values encoded the way both signers expect."""
    return "&".join(
        uri_encode(name) if value is None else f"{uri_encode(name)}={uri_encode(value)}"
        for name, value in params.items()
    )


def _hmac(key: bytes, text: str, digest: str) -> bytes:
    return hmac.new(key, text.encode(), digest).digest()


# -- COS q-sign-algorithm=sha1 ----------------------------------------------------


def cos_key_time(now: float, before: int = 60, after: int = 3600) -> str:
    """``"<start>;<end>"``: valid from slightly in the past (clock skew) for an hour."""
    return f"{int(now) - before};{int(now) + after}"


def _cos_canonical(items: Iterable[tuple[str, str | None]]) -> tuple[str, str]:
    """(``k1=v1&k2=v2``, ``k1;k2``) with names encoded then lower-cased, sorted."""
    pairs = sorted((uri_encode(k).lower(), uri_encode(v or "")) for k, v in items)
    return "&".join(f"{k}={v}" for k, v in pairs), ";".join(k for k, _ in pairs)


@dataclass(frozen=True)
class CosSignature:
    """Every intermediate value of one COS signature (the test vectors check them)."""

    key_time: str
    sign_key: str
    http_string: str
    string_to_sign: str
    signature: str
    header_list: str
    param_list: str

    def authorization(self, secret_id: str) -> str:
        return (
            f"q-sign-algorithm=sha1&q-ak={secret_id}&q-sign-time={self.key_time}"
            f"&q-key-time={self.key_time}&q-header-list={self.header_list}"
            f"&q-url-param-list={self.param_list}&q-signature={self.signature}"
        )


def sign_cos(
    secret_key: str,
    method: str,
    path: str,
    params: Params,
    headers: Mapping[str, str],
    key_time: str,
) -> CosSignature:
    """Sign a request the COS way. ``path`` is the decoded path (``/a b``, not
    ``/a%20b``); every header given is signed."""
    sign_key = _hmac(secret_key.encode(), key_time, "sha1").hex()
    http_params, param_list = _cos_canonical(params.items())
    http_headers, header_list = _cos_canonical(headers.items())
    http_string = f"{method.lower()}\n{path}\n{http_params}\n{http_headers}\n"
    string_to_sign = f"sha1\n{key_time}\n{hashlib.sha1(http_string.encode()).hexdigest()}\n"
    signature = _hmac(sign_key.encode(), string_to_sign, "sha1").hex()
    return CosSignature(key_time, sign_key, http_string, string_to_sign, signature,
                        header_list, param_list)


# -- AWS Signature Version 4 --------------------------------------------------------


def amz_date(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class S3Signature:
    """Every intermediate value of one SigV4 signature."""

    canonical_request: str
    string_to_sign: str
    signature: str
    signed_headers: str
    scope: str

    def authorization(self, access_key: str) -> str:
        return (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{self.scope}, "
            f"SignedHeaders={self.signed_headers}, Signature={self.signature}"
        )


_SPACES = re.compile(r"\s+")


def sign_s3(
    secret_key: str,
    region: str,
    method: str,
    encoded_path: str,
    params: Params,
    headers: Mapping[str, str],
    payload_hash: str,
    date: str,
    service: str = "s3",
) -> S3Signature:
    """Sign a request with SigV4. ``encoded_path`` is the path exactly as sent
    (S3 does not encode it twice); ``headers`` must include ``host``,
    ``x-amz-date`` (= ``date``) and ``x-amz-content-sha256`` (= ``payload_hash``)."""
    encoded = sorted((uri_encode(k), uri_encode(v or "")) for k, v in params.items())
    query = "&".join(f"{k}={v}" for k, v in encoded)
    canon = sorted((k.lower(), _SPACES.sub(" ", v.strip())) for k, v in headers.items())
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in canon)
    signed_headers = ";".join(k for k, _ in canon)
    canonical_request = "\n".join(
        [method.upper(), encoded_path, query, canonical_headers, signed_headers, payload_hash]
    )
    scope = f"{date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (date[:8], region, service, "aws4_request"):
        key = _hmac(key, part, "sha256")
    signature = hmac.new(key, string_to_sign.encode(), "sha256").hexdigest()
    return S3Signature(canonical_request, string_to_sign, signature, signed_headers, scope)
