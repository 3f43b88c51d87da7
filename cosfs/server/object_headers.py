"""Object attributes in HTTP headers: what a write stores (content headers, user
metadata, storage class), what a read answers, conditional requests, and the
``x-cos-copy-source`` of copies."""

from __future__ import annotations

import email.utils
from urllib.parse import unquote

from .blobs import BlobWriter
from .errors import CosServerError
from .messages import Context, Request, Response, http_date
from .routing import host_bucket
from .store import Attributes, ObjectRecord

MAX_OBJECT_SIZE = 5 * 1024**3
MAX_METADATA_BYTES = 2048
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Content headers an object keeps and answers with on GET/HEAD.
STORED_HEADERS = ("content-type", "content-encoding", "content-disposition",
                  "content-language", "cache-control", "expires")
STORAGE_CLASSES = frozenset({
    "STANDARD", "STANDARD_IA", "ARCHIVE", "DEEP_ARCHIVE", "INTELLIGENT_TIERING",
    "MAZ_STANDARD", "MAZ_STANDARD_IA", "MAZ_INTELLIGENT_TIERING", "MAZ_ARCHIVE",
})
# Classes whose bytes need a restore before they can be read (or copied).
ARCHIVED = frozenset({"ARCHIVE", "DEEP_ARCHIVE", "MAZ_ARCHIVE"})
_S3_CLASS_NAMES = {"GLACIER": "ARCHIVE"}
# Response-header overrides a GET may ask for in its query string.
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def storage_class(req: Request, default: str = "STANDARD") -> str:
    value = req.cos_header("storage-class")
    if value is None:
        return default
    name = _S3_CLASS_NAMES.get(value.strip().upper(), value.strip().upper())
    if name not in STORAGE_CLASSES:
        raise CosServerError("InvalidArgument", f"Invalid storage class {value!r}")
    return name


def _content_headers(req: Request) -> dict[str, str]:
    headers = {}
    for name in STORED_HEADERS:
        value = req.header(name)
        if name == "content-encoding" and value is not None:
            # aws-chunked describes the request body, not the object.
            tokens = [t.strip() for t in value.split(",") if t.strip() != "aws-chunked"]
            value = ", ".join(t for t in tokens if t) or None
        if value is not None:
            headers[name] = value
    return headers


def user_metadata(req: Request) -> dict[str, str]:
    meta = req.user_metadata()
    size = sum(len(k.encode()) + len(v.encode("latin-1", "replace")) for k, v in meta.items())
    if size > MAX_METADATA_BYTES:
        raise CosServerError("MetadataTooLarge", f"Your metadata headers are {size} bytes; "
                             f"at most {MAX_METADATA_BYTES} are allowed")
    return meta


def attributes(req: Request) -> Attributes:
    """The attributes a PUT, APPEND or Initiate Multipart Upload gives a new object."""
    return Attributes(_content_headers(req), user_metadata(req), storage_class(req))


def replaced_attributes(req: Request, source: ObjectRecord) -> Attributes:
    """Attributes of a copy with directive Replaced: from the request, keeping the
    source's content type when the request names none."""
    headers = _content_headers(req)
    if "content-type" not in headers and "content-type" in source.attrs.headers:
        headers["content-type"] = source.attrs.headers["content-type"]
    return Attributes(headers, user_metadata(req), storage_class(req))


def receive_body(ctx: Context, req: Request) -> tuple[BlobWriter, str]:
    """Stream an upload's body into a new blob; returns the blob and the body's MD5.
    A body that fails (too large, bad digest, dropped) leaves no blob behind."""
    req.body.max_size = MAX_OBJECT_SIZE
    writer = ctx.store.blobs.writer()
    try:
        for chunk in req.body.chunks():
            writer.write(chunk)
        return writer, req.body.finish()
    except BaseException:
        writer.discard()
        raise


def etag_header(etag: str) -> str:
    return f'"{etag}"'


def object_headers(req: Request, record: ObjectRecord) -> dict[str, str]:
    """Headers of a GET/HEAD answer (without length and range)."""
    headers = {"ETag": etag_header(record.etag), "Last-Modified": http_date(record.mtime),
               "Content-Type": DEFAULT_CONTENT_TYPE, "Accept-Ranges": "bytes"}
    for name, value in record.attrs.headers.items():
        headers["-".join(part.capitalize() for part in name.split("-"))] = value
    for name, value in record.attrs.meta.items():
        headers[f"{req.prefix}meta-{name}"] = value
    if record.appendable:
        headers["x-cos-object-type"] = "appendable"
        headers["x-cos-next-append-position"] = str(record.size)
    if record.attrs.storage_class != "STANDARD":
        headers[f"{req.prefix}storage-class"] = record.attrs.storage_class
    for param, header in RESPONSE_OVERRIDES.items():
        if param in req.query:
            headers[header] = req.query[param]
    return headers


def _etag_in(header: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/").strip('"') for c in header.split(",")]
    return "*" in candidates or etag in candidates


def _parse_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None  # an unparsable date is ignored, as HTTP says


def _modified_since(record: ObjectRecord, when: float) -> bool:
    return int(record.mtime) > int(when)


def _precondition_failed() -> CosServerError:
    return CosServerError("PreconditionFailed", "At least one of the preconditions you "
                          "specified did not hold.")


def check_conditions(req: Request, record: ObjectRecord) -> Response | None:
    """RFC 7232 for GET/HEAD: 412 (raised) for If-Match / If-Unmodified-Since, a 304
    answer (returned) for If-None-Match / If-Modified-Since, ``None`` to go on."""
    if_match = req.header("If-Match")
    if if_match is not None:
        if not _etag_in(if_match, record.etag):
            raise _precondition_failed()
    else:
        since = _parse_date(req.header("If-Unmodified-Since"))
        if since is not None and _modified_since(record, since):
            raise _precondition_failed()
    if_none_match = req.header("If-None-Match")
    if if_none_match is not None:
        not_modified = _etag_in(if_none_match, record.etag)
    else:
        since = _parse_date(req.header("If-Modified-Since"))
        not_modified = since is not None and not _modified_since(record, since)
    if not_modified:
        # The length of the full answer, as HTTP allows; the official SDK needs one.
        return Response(304, {"ETag": etag_header(record.etag),
                              "Last-Modified": http_date(record.mtime),
                              "Content-Length": str(record.size)})
    return None


def check_copy_source(req: Request, source: ObjectRecord) -> None:
    """What any copy demands of its source: readable, not appendable, and the
    ``x-cos-copy-source-if-*`` conditions (each failure is 412)."""
    if source.appendable:
        raise CosServerError("InvalidRequest", "An appendable object cannot be copied")
    if source.attrs.storage_class in ARCHIVED:
        raise CosServerError("InvalidObjectState", "The source object is archived; "
                             "restore it first")
    if_match = req.cos_header("copy-source-if-match")
    if if_match is not None and not _etag_in(if_match, source.etag):
        raise _precondition_failed()
    if_none_match = req.cos_header("copy-source-if-none-match")
    if if_none_match is not None and _etag_in(if_none_match, source.etag):
        raise _precondition_failed()
    since = _parse_date(req.cos_header("copy-source-if-unmodified-since"))
    if since is not None and _modified_since(source, since):
        raise _precondition_failed()
    since = _parse_date(req.cos_header("copy-source-if-modified-since"))
    if since is not None and not _modified_since(source, since):
        raise _precondition_failed()


def copy_source(req: Request, host_suffix: str | None) -> tuple[str, bytes]:
    """Bucket and key of ``x-cos-copy-source``: ``<bucket>.cos.<region>.myqcloud.com/
    <urlencoded key>`` or ``/<bucket>/<key>`` (``bucket/key`` as boto3 sends it); a
    ``?versionId=`` suffix is ignored (no versioning here)."""
    value = (req.cos_header("copy-source") or "").strip()
    for scheme in ("http://", "https://"):
        value = value.removeprefix(scheme)
    value = value.split("?", 1)[0]
    first, _, rest = value.lstrip("/").partition("/")
    bucket = first if value.startswith("/") else host_bucket(first, host_suffix) or first
    try:
        key = unquote(rest, errors="strict") if rest else ""
    except UnicodeDecodeError:
        raise CosServerError("InvalidArgument", "x-cos-copy-source is not UTF-8") from None
    if not bucket or not key:
        raise CosServerError("InvalidArgument", "x-cos-copy-source must name a bucket and "
                             "a key")
    return bucket, key.encode("utf-8")
