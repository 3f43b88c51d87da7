"""Verification of COS request signatures (``q-sign-algorithm=sha1``), pure functions.

The Authorization (a header, or the same fields in the query string of a presigned URL)
names what the client signed: ``q-header-list`` and ``q-url-param-list``. The verifier
recomputes the signature over exactly those headers and parameters of the request as
received, so headers a client did not sign never matter.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

AUTH_FIELDS = ("q-sign-algorithm", "q-ak", "q-sign-time", "q-key-time", "q-header-list",
               "q-url-param-list", "q-signature")


def cos_quote(value: str | bytes) -> str:
    """UrlEncode of the COS signature: every byte but ``A-Z a-z 0-9 - _ . ~``."""
    return quote(value, safe="-_.~")


@dataclass(frozen=True)
class CosAuthorization:
    """The fields of a COS Authorization; lists hold the encoded, lower-case names."""

    secret_id: str
    sign_time: str
    key_time: str
    header_list: tuple[str, ...]
    param_list: tuple[str, ...]
    signature: str

    @property
    def valid_from(self) -> int:
        return int(self.sign_time.split(";")[0])

    @property
    def valid_until(self) -> int:
        return int(self.sign_time.split(";")[1])


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(name for name in value.split(";") if name)


def parse_authorization(fields: Mapping[str, str]) -> CosAuthorization:
    """Build from the ``q-*`` fields; raises ``ValueError`` when one is missing or bad."""
    missing = [name for name in AUTH_FIELDS if name not in fields]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if fields["q-sign-algorithm"].lower() != "sha1":
        raise ValueError(f"unsupported q-sign-algorithm {fields['q-sign-algorithm']!r}")
    auth = CosAuthorization(
        secret_id=fields["q-ak"], sign_time=fields["q-sign-time"],
        key_time=fields["q-key-time"], header_list=_split_list(fields["q-header-list"]),
        param_list=_split_list(fields["q-url-param-list"]), signature=fields["q-signature"])
    for times in (auth.sign_time, auth.key_time):
        start, sep, end = times.partition(";")
        if not (sep and start.isdigit() and end.isdigit()):
            raise ValueError(f"bad time range {times!r}")
    return auth


def parse_authorization_header(value: str) -> CosAuthorization:
    """``q-sign-algorithm=sha1&q-ak=...&q-signature=...`` (values are not encoded)."""
    fields = dict(part.partition("=")[::2] for part in value.strip().split("&"))
    return parse_authorization(fields)


def sign_key(secret_key: str, key_time: str) -> str:
    return hmac.new(secret_key.encode(), key_time.encode(), hashlib.sha1).hexdigest()


def http_string(method: str, path: str, params: Mapping[str, str],
                headers: Mapping[str, str]) -> str:
    """``method\\npath\\nparams\\nheaders\\n``; params and headers are already encoded
    (name lower-case) and are joined in name order."""
    def join(items: Mapping[str, str]) -> str:
        return "&".join(f"{k}={v}" for k, v in sorted(items.items()))
    return f"{method.lower()}\n{path}\n{join(params)}\n{join(headers)}\n"


def signature(secret_key: str, key_time: str, sign_time: str, http_str: str) -> str:
    digest = hashlib.sha1(http_str.encode("utf-8")).hexdigest()
    to_sign = f"sha1\n{sign_time}\n{digest}\n"
    return hmac.new(sign_key(secret_key, key_time).encode(), to_sign.encode(),
                    hashlib.sha1).hexdigest()


def encode_pairs(pairs: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """Request parameters or headers as the signature sees them: name UrlEncoded and
    lower-cased, value UrlEncoded. The first occurrence of a name wins."""
    encoded: dict[str, str] = {}
    for name, value in pairs:
        encoded.setdefault(cos_quote(name).lower(), cos_quote(value))
    return encoded


def _host_variants(host: str) -> list[str]:
    """A client may sign the host without the port it connects to (the official SDK's
    presigned URLs sign the bare hostname)."""
    variants = [host]
    bare, sep, port = host.rpartition("%3A")
    if sep and port.isdigit() and bare:
        variants.append(bare)
    return variants


def verify(auth: CosAuthorization, secret_key: str, method: str, paths: Iterable[str],
           params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
    """Whether ``auth.signature`` signs this request. ``params``/``headers`` come from
    :func:`encode_pairs`; ``paths`` are the decoded URI paths the client may have signed
    (the request path, and for a path-style request also ``/<key>``)."""
    signed_params = {name: params.get(name, "") for name in auth.param_list}
    signed_headers = {name: headers.get(name, "") for name in auth.header_list}
    hosts = _host_variants(signed_headers["host"]) if "host" in signed_headers else [None]
    for path in paths:
        for host in hosts:
            if host is not None:
                signed_headers["host"] = host
            expected = signature(secret_key, auth.key_time, auth.sign_time,
                                 http_string(method, path, signed_params, signed_headers))
            if hmac.compare_digest(expected, auth.signature.lower()):
                return True
    return False
