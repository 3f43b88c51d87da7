"""Object operations: PUT, GET, HEAD, DELETE, PUT Copy and APPEND."""

from __future__ import annotations

from .errors import CosServerError
from .messages import Context, Request, Response, iso_date, xml_response
from .object_headers import (
    ARCHIVED,
    MAX_OBJECT_SIZE,
    attributes,
    check_conditions,
    check_copy_source,
    copy_source,
    etag_header,
    object_headers,
    receive_body,
    replaced_attributes,
    storage_class,
)
from .ranges import parse_range
from .store import Attributes, ObjectRecord
from .xmlio import render


def _write_headers(req: Request, record: ObjectRecord) -> dict[str, str]:
    headers = {"ETag": etag_header(record.etag)}
    if record.attrs.storage_class != "STANDARD":
        headers[f"{req.prefix}storage-class"] = record.attrs.storage_class
    return headers


def put_object(ctx: Context, req: Request) -> Response:
    attrs = attributes(req)
    ctx.store.require_bucket(req.bucket)
    writer, md5 = receive_body(ctx, req)
    record = ctx.store.put(req.bucket, req.key, writer, md5, attrs)
    return Response(200, _write_headers(req, record))


def _read(ctx: Context, req: Request, head: bool) -> Response:
    if head:
        record, file = ctx.store.head(req.bucket, req.key), None
    else:
        record, file = ctx.store.open(req.bucket, req.key)
    try:
        if record.attrs.storage_class in ARCHIVED and not head:
            raise CosServerError("InvalidObjectState", "The operation is not valid for the "
                                 "object's storage class; restore it first")
        not_modified = check_conditions(req, record)
        if not_modified is not None:
            if file is not None:
                file.close()
            return not_modified
        byte_range = parse_range(req.header("Range"), record.size)
    except BaseException:
        if file is not None:
            file.close()
        raise
    headers = object_headers(req, record)
    response = Response(200, headers, file=file, length=record.size)
    if byte_range is not None:
        response.status = 206
        response.offset, response.length = byte_range.start, byte_range.length
        headers["Content-Range"] = byte_range.content_range(record.size)
    if head:
        headers["Content-Length"] = str(response.length)
    return response


def get_object(ctx: Context, req: Request) -> Response:
    return _read(ctx, req, head=False)


def head_object(ctx: Context, req: Request) -> Response:
    return _read(ctx, req, head=True)


def delete_object(ctx: Context, req: Request) -> Response:
    ctx.store.delete(req.bucket, req.key)
    return Response(204)


def _directive(req: Request) -> str:
    value = (req.cos_header("metadata-directive") or "Copy").strip().lower()
    if value in ("copy", "replaced", "replace"):
        return "Replaced" if value.startswith("replace") else "Copy"
    raise CosServerError("InvalidArgument", "x-cos-metadata-directive must be Copy or "
                         "Replaced")


def put_object_copy(ctx: Context, req: Request) -> Response:
    src_bucket, src_key = copy_source(req, ctx.host_suffix)
    directive = _directive(req)
    if (src_bucket, src_key) == (req.bucket, req.key) and directive != "Replaced":
        raise CosServerError("InvalidRequest", "This copy request is illegal because it "
                             "tries to copy an object to itself without "
                             "x-cos-metadata-directive: Replaced")

    def attrs_of(source: ObjectRecord) -> Attributes:
        check_copy_source(req, source)
        if source.size > MAX_OBJECT_SIZE:
            raise CosServerError("InvalidRequest", "The source is larger than 5 GB; use "
                                 "Upload Part - Copy")
        if directive == "Replaced":
            return replaced_attributes(req, source)
        return Attributes(dict(source.attrs.headers), dict(source.attrs.meta),
                          storage_class(req))

    record = ctx.store.copy(src_bucket, src_key, req.bucket, req.key, attrs_of)
    body = render("CopyObjectResult", [("ETag", etag_header(record.etag)),
                                       ("LastModified", iso_date(record.mtime))])
    response = xml_response(body)
    response.headers.update(_write_headers(req, record))
    return response


def _position(req: Request) -> int:
    value = req.query.get("position", "")
    if not value.isdigit():
        raise CosServerError("InvalidArgument", "APPEND needs position=<non-negative "
                             "integer>")
    return int(value)


def append_object(ctx: Context, req: Request) -> Response:
    position = _position(req)
    attrs = attributes(req)
    req.body.max_size = max(0, MAX_OBJECT_SIZE - position)
    with ctx.store.appending(req.bucket, req.key, position, attrs) as session:
        for chunk in req.body.chunks():
            session.write(chunk)
        md5 = req.body.finish()
        record = session.commit(md5)
    return Response(200, {"ETag": etag_header(md5),
                          "x-cos-next-append-position": str(record.size)})
