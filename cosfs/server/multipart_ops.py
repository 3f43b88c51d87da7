"""Multipart upload operations: initiate, upload part (and part copy), complete,
abort, list parts, list uploads."""

from __future__ import annotations

from .errors import CosServerError
from .messages import Context, Request, Response, iso_date, xml_response
from .object_headers import (
    MAX_OBJECT_SIZE,
    attributes,
    check_copy_source,
    copy_source,
    etag_header,
    receive_body,
)
from .ranges import ByteRange, parse_copy_range
from .xmlio import OWNER, parse_complete, render

MAX_PARTS = 10000
MAX_XML_BODY = 4 << 20


def _part_number(req: Request) -> int:
    value = req.query.get("partNumber", "")
    if not value.isdigit() or not 1 <= int(value) <= MAX_PARTS:
        raise CosServerError("InvalidArgument", f"partNumber must be 1..{MAX_PARTS}")
    return int(value)


def initiate(ctx: Context, req: Request) -> Response:
    upload = ctx.store.create_upload(req.bucket, req.key, attributes(req))
    return xml_response(render("InitiateMultipartUploadResult", [
        ("Bucket", req.bucket), ("Key", upload.name), ("UploadId", upload.upload_id)]))


def upload_part(ctx: Context, req: Request) -> Response:
    number = _part_number(req)
    upload_id = req.query.get("uploadId", "")
    ctx.store.get_upload(req.bucket, req.key, upload_id)
    writer, md5 = receive_body(ctx, req)
    part = ctx.store.put_part(req.bucket, req.key, upload_id, number, writer, md5)
    return Response(200, {"ETag": etag_header(part.etag)})


def upload_part_copy(ctx: Context, req: Request) -> Response:
    number = _part_number(req)
    upload_id = req.query.get("uploadId", "")
    ctx.store.get_upload(req.bucket, req.key, upload_id)
    src_bucket, src_key = copy_source(req, ctx.host_suffix)
    source, file = ctx.store.open(src_bucket, src_key)
    writer = ctx.store.blobs.writer(md5=True)
    try:
        check_copy_source(req, source)
        header = req.cos_header("copy-source-range")
        byte_range = parse_copy_range(header, source.size) if header else \
            ByteRange(0, source.size - 1)
        if byte_range.length > MAX_OBJECT_SIZE:
            raise CosServerError("EntityTooLarge", "A part may not exceed 5 GB")
        for blob, offset, count in file.pieces(byte_range.start, byte_range.length):
            writer.copy_from(blob, offset, count)
    except BaseException:
        writer.discard()
        raise
    finally:
        file.close()
    part = ctx.store.put_part(req.bucket, req.key, upload_id, number, writer, writer.md5_hex)
    return xml_response(render("CopyPartResult", [("ETag", etag_header(part.etag)),
                                                  ("LastModified", iso_date(part.mtime))]))


def complete(ctx: Context, req: Request) -> Response:
    upload_id = req.query.get("uploadId", "")
    ctx.store.get_upload(req.bucket, req.key, upload_id)
    document = req.body.read_all(MAX_XML_BODY)
    req.body.finish()
    parts = parse_complete(document)
    record = ctx.store.complete(req.bucket, req.key, upload_id, parts, ctx.min_part_size)
    return xml_response(render("CompleteMultipartUploadResult", [
        ("Location", req.location(record.name)), ("Bucket", req.bucket),
        ("Key", record.name), ("ETag", etag_header(record.etag))]))


def abort(ctx: Context, req: Request) -> Response:
    ctx.store.abort(req.bucket, req.key, req.query.get("uploadId", ""))
    return Response(204)


def list_parts(ctx: Context, req: Request) -> Response:
    encode = req.key_encoder()
    marker = req.int_param("part-number-marker", 0, 0, MAX_PARTS)
    max_parts = req.int_param("max-parts", 1000, 0, 1000)
    upload_id = req.query.get("uploadId", "")
    upload, parts, truncated = ctx.store.list_parts(req.bucket, req.key, upload_id, marker,
                                                    max_parts)
    nodes = [
        ("Bucket", req.bucket), ("EncodingType", req.query.get("encoding-type") or None),
        ("Key", encode(upload.name)), ("UploadId", upload_id), ("Initiator", OWNER),
        ("Owner", OWNER), ("StorageClass", upload.attrs.storage_class),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", parts[-1].number if parts else marker),
        ("MaxParts", max_parts), ("IsTruncated", truncated),
    ]
    nodes += [("Part", [("PartNumber", p.number), ("LastModified", iso_date(p.mtime)),
                        ("ETag", etag_header(p.etag)), ("Size", p.size)]) for p in parts]
    return xml_response(render("ListPartsResult", nodes))


def list_uploads(ctx: Context, req: Request) -> Response:
    encode = req.key_encoder()
    q = req.query
    page = ctx.store.list_uploads(
        req.bucket, q.get("prefix", "").encode(), q.get("delimiter", "").encode(),
        q.get("key-marker", "").encode(), q.get("upload-id-marker", ""),
        req.int_param("max-uploads", 1000, 0, 1000))
    nodes = [
        ("Bucket", req.bucket), ("EncodingType", q.get("encoding-type") or None),
        ("KeyMarker", encode(q.get("key-marker", ""))),
        ("UploadIdMarker", q.get("upload-id-marker", "")),
        ("NextKeyMarker", encode(page.next_key_marker.decode())
         if page.next_key_marker is not None else None),
        ("NextUploadIdMarker", page.next_upload_id_marker),
        ("MaxUploads", req.int_param("max-uploads", 1000, 0, 1000)),
        ("IsTruncated", page.is_truncated),
        ("Prefix", encode(q.get("prefix", ""))),
        ("Delimiter", q.get("delimiter") or None),
    ]
    nodes += [("Upload", [("Key", encode(u.name)), ("UploadId", u.upload_id),
                          ("StorageClass", u.attrs.storage_class), ("Initiator", OWNER),
                          ("Owner", OWNER), ("Initiated", iso_date(u.initiated))])
              for u in page.uploads]
    nodes += [("CommonPrefixes", [("Prefix", encode(p.decode()))])
              for p in page.common_prefixes]
    return xml_response(render("ListMultipartUploadsResult", nodes))
