"""Bucket-level operations: HEAD/PUT/DELETE Bucket, List Objects (v1, and v2 for S3
tools), DELETE Multiple Objects, and the service-level bucket list."""

from __future__ import annotations

import base64
import binascii

from .errors import CosServerError
from .messages import Context, Request, Response, iso_date, xml_response
from .object_headers import etag_header
from .routing import BUCKET_NAME, MAX_KEY_BYTES
from .store import ObjectRecord
from .xmlio import OWNER, parse_delete, render

MAX_DELETE_KEYS = 1000
MAX_XML_BODY = 4 << 20


def head_bucket(ctx: Context, req: Request) -> Response:
    ctx.store.require_bucket(req.bucket)
    return Response(200, {"x-cos-bucket-region": req.region})


def put_bucket(ctx: Context, req: Request) -> Response:
    if not BUCKET_NAME.match(req.bucket):
        raise CosServerError("InvalidBucketName", "A bucket name is <name>-<APPID>: lower-case "
                             "letters, digits and '-'")
    req.body.finish()  # a CreateBucketConfiguration, if any, asks for nothing we offer
    if not ctx.store.create_bucket(req.bucket):
        raise CosServerError("BucketAlreadyExists", "The requested bucket name already exists")
    return Response(200, {"Location": f"/{req.bucket}"})


def delete_bucket(ctx: Context, req: Request) -> Response:
    ctx.store.delete_bucket(req.bucket)
    return Response(204)


def list_buckets(ctx: Context, req: Request) -> Response:
    buckets = [("Bucket", [("Name", name), ("Location", req.region),
                           ("CreationDate", iso_date(created))])
               for name, created in ctx.store.list_buckets()]
    return xml_response(render("ListAllMyBucketsResult", [("Owner", OWNER),
                                                          ("Buckets", buckets)]))


def _contents(req: Request, record: ObjectRecord, encode, owner: bool) -> tuple:
    return ("Contents", [
        ("Key", encode(record.name)), ("LastModified", iso_date(record.mtime)),
        ("ETag", etag_header(record.etag)), ("Size", record.size),
        ("Owner", OWNER if owner else None), ("StorageClass", record.attrs.storage_class)])


def _token(marker: bytes) -> str:
    return base64.urlsafe_b64encode(marker).decode()


def _untoken(token: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(token.encode())
    except (binascii.Error, ValueError):
        raise CosServerError("InvalidArgument", "The continuation token is not valid") \
            from None


def list_objects(ctx: Context, req: Request) -> Response:
    """List Objects v1 (COS); ``list-type=2`` answers the S3 v2 shape over the same
    listing, for S3 tools."""
    q = req.query
    encode = req.key_encoder()
    v2 = q.get("list-type") == "2"
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    if v2:
        token = q.get("continuation-token")
        marker = _untoken(token) if token else q.get("start-after", "").encode()
    else:
        marker = q.get("marker", "").encode()
    max_keys = req.int_param("max-keys", 1000, 0, 1000)
    page = ctx.store.list(req.bucket, prefix.encode(), delimiter.encode(), marker, max_keys)
    owner = not v2 or q.get("fetch-owner") == "true"
    contents = [_contents(req, r, encode, owner) for r in page.contents]
    prefixes = [("CommonPrefixes", [("Prefix", encode(p.decode()))])
                for p in page.common_prefixes]
    head = [("Name", req.bucket), ("EncodingType", q.get("encoding-type") or None),
            ("Prefix", encode(prefix))]
    if v2:
        head += [("StartAfter", encode(q["start-after"]) if "start-after" in q else None),
                 ("ContinuationToken", q.get("continuation-token")),
                 ("NextContinuationToken", _token(page.next_marker)
                  if page.is_truncated else None),
                 ("KeyCount", len(contents) + len(prefixes))]
    else:
        head += [("Marker", encode(marker.decode())),
                 ("NextMarker", encode(page.next_marker.decode())
                  if page.is_truncated else None)]
    head += [("MaxKeys", max_keys), ("Delimiter", delimiter or None),
             ("IsTruncated", page.is_truncated)]
    return xml_response(render("ListBucketResult", head + contents + prefixes))


def _has_integrity_header(req: Request) -> bool:
    """COS demands Content-MD5; S3 SDKs may send a flexible checksum instead."""
    if req.header("Content-MD5") is not None:
        return True
    return any(name.lower().startswith("x-amz-checksum-") for name in req.headers)


def delete_multiple(ctx: Context, req: Request) -> Response:
    if not _has_integrity_header(req):
        raise CosServerError("InvalidRequest", "Missing required header for this request: "
                             "Content-MD5")
    ctx.store.require_bucket(req.bucket)
    document = req.body.read_all(MAX_XML_BODY)
    req.body.finish()
    quiet, keys = parse_delete(document)
    if len(keys) > MAX_DELETE_KEYS:
        raise CosServerError("MalformedXML", f"At most {MAX_DELETE_KEYS} keys per request")
    nodes = []
    for key in keys:
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            nodes.append(("Error", [("Key", key), ("Code", "KeyTooLong"),
                                    ("Message", "Your key is too long")]))
            continue
        ctx.store.delete(req.bucket, key.encode("utf-8"))
        if not quiet:
            nodes.append(("Deleted", [("Key", key)]))
    return xml_response(render("DeleteResult", nodes))
