"""The request and response objects operations work with, free of HTTP plumbing."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import quote

from .blobs import BlobReader
from .bodies import RequestBody
from .errors import CosServerError
from .routing import Target, host_region
from .store import Store

DEFAULT_REGION = "ap-guangzhou"


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def iso_date(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))


@dataclass
class Request:
    """One authenticated request, routed. ``query`` holds the first value of each
    parameter (decoded, ``+`` as space); ``scheme`` is how it was signed ("cos",
    "sigv4" or "anonymous") and decides whether answers use ``x-cos-`` or ``x-amz-``
    header names."""

    method: str
    target: Target
    query: dict[str, str]
    headers: Message
    body: RequestBody
    host: str
    scheme: str
    request_id: str

    @property
    def bucket(self) -> str:
        assert self.target.bucket is not None
        return self.target.bucket

    @property
    def key(self) -> bytes:
        return self.target.key.encode("utf-8")

    @property
    def prefix(self) -> str:
        """``x-amz-`` for S3-signed requests, ``x-cos-`` otherwise."""
        return "x-amz-" if self.scheme == "sigv4" else "x-cos-"

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def cos_header(self, suffix: str) -> str | None:
        """``x-cos-<suffix>``, or its S3 twin ``x-amz-<suffix>`` (COS accepts both)."""
        value = self.headers.get("x-cos-" + suffix)
        return value if value is not None else self.headers.get("x-amz-" + suffix)

    def user_metadata(self) -> dict[str, str]:
        """``x-cos-meta-*`` / ``x-amz-meta-*`` headers -> bare lower-case names."""
        meta = {}
        for name, value in self.headers.items():
            lower = name.lower()
            for prefix in ("x-cos-meta-", "x-amz-meta-"):
                if lower.startswith(prefix) and len(lower) > len(prefix):
                    meta[lower[len(prefix):]] = value
        return meta

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        """An integer query parameter: ``default`` when absent, ``InvalidArgument``
        below ``low`` or not a number, capped at ``high``."""
        value = self.query.get(name, "")
        if value == "":
            return default
        if not value.isdigit() or int(value) < low:
            raise CosServerError("InvalidArgument", f"{name} must be an integer >= {low}")
        return min(int(value), high)

    def key_encoder(self) -> Callable[[str], str]:
        """How keys appear in a listing: as they are, or URL-encoded with
        ``encoding-type=url`` (``%20`` for space, never ``+``; ``/`` kept)."""
        kind = self.query.get("encoding-type") or ""
        if kind == "":
            return lambda text: text
        if kind != "url":
            raise CosServerError("InvalidArgument", "encoding-type must be url")
        return lambda text: quote(text, safe="/")

    @property
    def region(self) -> str:
        """The region in a virtual-hosted COS ``Host``, else the default one."""
        return host_region(self.host) or DEFAULT_REGION

    def location(self, key: str) -> str:
        return f"{self.bucket}.cos.{self.region}.myqcloud.com/{key}"

    @property
    def resource(self) -> str:
        """What error documents name as the resource: host and path."""
        path = f"/{self.target.key}" if self.target.virtual_host else \
            f"/{self.target.bucket or ''}/{self.target.key}".rstrip("/")
        return f"{self.host}{path or '/'}"


@dataclass(frozen=True)
class Context:
    """What operations need of the server: the store and its settings."""

    store: Store
    min_part_size: int
    host_suffix: str | None


@dataclass
class Response:
    """An answer. The body is ``body`` bytes, or ``length`` bytes of ``file`` from
    ``offset`` (sent with ``sendfile``; the HTTP layer closes the reader). A HEAD answer
    sets ``Content-Length`` in ``headers`` itself and has no body."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: BlobReader | None = None
    offset: int = 0
    length: int = 0

    @property
    def body_length(self) -> int:
        return self.length if self.file is not None else len(self.body)


def xml_response(body: bytes, status: int = 200) -> Response:
    return Response(status, {"Content-Type": "application/xml"}, body)
