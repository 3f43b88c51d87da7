"""Where a request goes: bucket and key from ``Host`` and path, and which COS operation
it is. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .errors import CosServerError

ADMIN_PREFIX = "/_admin"
_COS_HOST = re.compile(r"^(?P<bucket>[^.]+)\.cos\.(?P<region>[a-z0-9-]+)\."
                       r"(?:myqcloud\.com|tencentcos\.cn)$")
BUCKET_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?-\d{1,20}$")
MAX_KEY_BYTES = 850

# Sub-resources of COS this server does not implement: answered with 501, never
# mistaken for a listing or a plain object read.
UNSUPPORTED_SUBRESOURCES = frozenset({
    "accelerate", "acl", "cors", "domain", "encryption", "intelligenttiering", "inventory",
    "lifecycle", "location", "logging", "object-lock", "policy", "referer", "replication",
    "restore", "select", "tagging", "torrent", "versioning", "versions", "website",
})


@dataclass(frozen=True)
class Target:
    """What a request addresses. ``bucket`` is ``None`` for the service root (and the
    admin endpoint); ``key`` is ``""`` for bucket-level requests."""

    bucket: str | None
    key: str
    virtual_host: bool
    admin: bool = False

    @property
    def is_object(self) -> bool:
        return bool(self.key)


def decode_path(raw_path: str) -> str:
    """The percent-decoded UTF-8 path of a request target (query removed); the HTTP
    layer hands over the request line decoded as ISO-8859-1."""
    path = raw_path.split("?", 1)[0]
    try:
        return unquote_to_bytes(path.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise CosServerError("InvalidURI", "The request path is not valid UTF-8") from None


def host_bucket(host: str, host_suffix: str | None) -> str | None:
    """The bucket a virtual-hosted ``Host`` names, or ``None`` for a bare host."""
    hostname = host.strip().lower()
    if hostname.startswith("["):  # IPv6 literal, never a bucket
        return None
    hostname = hostname.rsplit(":", 1)[0] if ":" in hostname else hostname
    match = _COS_HOST.match(hostname)
    if match:
        return match.group("bucket")
    if host_suffix:
        suffix = "." + host_suffix.lower().strip(".")
        if hostname.endswith(suffix) and len(hostname) > len(suffix):
            return hostname[: -len(suffix)]
    return None


def host_region(host: str) -> str | None:
    """The region of a ``<bucket>.cos.<region>.myqcloud.com`` host."""
    match = _COS_HOST.match(host.strip().lower().rsplit(":", 1)[0])
    return match.group("region") if match else None


def route(host: str, path: str, host_suffix: str | None = None) -> Target:
    """Bucket and key of a request with decoded ``path``: by ``Host`` first, by the
    first path segment otherwise. ``/_admin/...`` on a bare host is the admin endpoint
    (an underscore is not valid in a bucket name, so it never shadows one)."""
    bucket = host_bucket(host, host_suffix)
    if bucket is not None:
        return Target(bucket, path[1:], virtual_host=True)
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        return Target(None, path[len(ADMIN_PREFIX):].strip("/"), virtual_host=False,
                      admin=True)
    segment, _, key = path[1:].partition("/")
    return Target(segment or None, key, virtual_host=False)


def check_key(key: str) -> None:
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise CosServerError("KeyTooLong", f"Your key is too long: at most {MAX_KEY_BYTES} "
                             "bytes of UTF-8")


def _bucket_operation(method: str, query: Mapping[str, str]) -> str:
    if method == "GET":
        return "ListMultipartUploads" if "uploads" in query else "ListObjects"
    if method == "POST" and "delete" in query:
        return "DeleteMultipleObjects"
    return {"HEAD": "HeadBucket", "PUT": "PutBucket", "DELETE": "DeleteBucket"}.get(
        method, "Unsupported")


def _object_operation(method: str, query: Mapping[str, str], copy_source: bool) -> str:
    if method == "HEAD":
        return "HeadObject"
    if method == "GET":
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "PUT":
        if "partNumber" in query or "uploadId" in query:
            return "UploadPartCopy" if copy_source else "UploadPart"
        return "PutObjectCopy" if copy_source else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "InitiateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        if "append" in query:
            return "AppendObject"
        return "Unsupported"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return "Unsupported"


def operation(method: str, target: Target, query: Mapping[str, str],
              copy_source: bool) -> str:
    """The operation name used in stats and faults (see docs/ARCHITECTURE.md), or
    ``Unsupported``."""
    if UNSUPPORTED_SUBRESOURCES.intersection(query):
        return "Unsupported"
    if target.bucket is None:
        return "ListBuckets" if method == "GET" else "Unsupported"
    if target.is_object:
        return _object_operation(method, query, copy_source)
    return _bucket_operation(method, query)
