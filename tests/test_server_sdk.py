"""The official COS SDK (qcloud_cos) against cosfs-server: every supported operation,
its documented results and its documented errors."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import time
import xml.etree.ElementTree as ET

import pytest
import requests
from conftest import APPID, REGION, SECRET_ID, SECRET_KEY
from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_exception import CosServiceError
from server_util import bucket_host, cos_request, sdk_complete, sdk_upload_parts

ODD_KEYS = ["with space.txt", "per%cent", "plus+sign", "hash#tag", "quest?ion", "amp&er=sand",
            "中文/文件名.txt", "dir/", "a/b/c/", "tilde~star*paren()", "emoji-😀"]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def error_of(call, *args, **kwargs) -> CosServiceError:
    with pytest.raises(CosServiceError) as info:
        call(*args, **kwargs)
    return info.value


def assert_error(err: CosServiceError, status: int, code: str) -> None:
    assert (err.get_status_code(), err.get_error_code()) == (status, code), str(err)


def read_body(response: dict) -> bytes:
    return response["Body"].get_raw_stream().read()


def sdk_with(server, secret_id: str, secret_key: str) -> CosS3Client:
    cfg = CosConfig(Region=REGION, SecretId=secret_id, SecretKey=secret_key, Scheme="http",
                    IP="127.0.0.1", Port=server.port)
    return CosS3Client(cfg, retry=0)


# -- objects ------------------------------------------------------------------------

def test_put_head_get_round_trip(sdk, bucket):
    data = os.urandom(100_000)
    put = sdk.put_object(Bucket=bucket, Key="obj", Body=data, ContentType="text/plain",
                         Metadata={"x-cos-meta-mode": "33188", "x-cos-meta-uid": "0"})
    assert put["ETag"] == f'"{md5_hex(data)}"'
    assert put["x-cos-request-id"]
    head = sdk.head_object(Bucket=bucket, Key="obj")
    assert head["ETag"] == f'"{md5_hex(data)}"'
    assert head["Content-Length"] == str(len(data))
    assert head["Content-Type"] == "text/plain"
    assert (head["x-cos-meta-mode"], head["x-cos-meta-uid"]) == ("33188", "0")
    assert "x-cos-object-type" not in head and "x-cos-storage-class" not in head
    assert time.time() - time.mktime(time.strptime(head["Last-Modified"],
                                                   "%a, %d %b %Y %H:%M:%S GMT")) < 86400 + 60
    got = sdk.get_object(Bucket=bucket, Key="obj")
    assert read_body(got) == data
    assert got["ETag"] == head["ETag"]


def test_overwrite_replaces_content_and_metadata(sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="k", Body=b"one", Metadata={"x-cos-meta-a": "1"})
    sdk.put_object(Bucket=bucket, Key="k", Body=b"two!")
    head = sdk.head_object(Bucket=bucket, Key="k")
    assert head["Content-Length"] == "4" and "x-cos-meta-a" not in head
    assert read_body(sdk.get_object(Bucket=bucket, Key="k")) == b"two!"


def test_ranges(sdk, bucket):
    data = bytes(range(256)) * 4
    sdk.put_object(Bucket=bucket, Key="r", Body=data)
    cases = {"bytes=0-0": (0, 0), "bytes=10-19": (10, 19), "bytes=1000-": (1000, 1023),
             "bytes=-24": (1000, 1023), "bytes=1000-5000": (1000, 1023)}
    for header, (start, end) in cases.items():
        got = sdk.get_object(Bucket=bucket, Key="r", Range=header)
        assert got["Content-Range"] == f"bytes {start}-{end}/1024"
        assert got["Content-Length"] == str(end - start + 1)
        assert read_body(got) == data[start:end + 1]
        assert got["Body"].get_raw_stream().status == 206
    assert_error(error_of(sdk.get_object, Bucket=bucket, Key="r", Range="bytes=1024-"),
                 416, "InvalidRange")
    # Several ranges are not supported: the whole object, 200.
    whole = sdk.get_object(Bucket=bucket, Key="r", Range="bytes=0-1,5-6")
    assert read_body(whole) == data


def test_conditional_requests(sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="c", Body=b"content")
    etag = sdk.head_object(Bucket=bucket, Key="c")["ETag"]
    future = "Fri, 01 Jan 2100 00:00:00 GMT"
    past = "Thu, 01 Jan 1970 00:00:00 GMT"
    assert read_body(sdk.get_object(Bucket=bucket, Key="c", IfMatch=etag)) == b"content"
    assert_error(error_of(sdk.get_object, Bucket=bucket, Key="c", IfMatch='"0000"'),
                 412, "PreconditionFailed")
    assert_error(error_of(sdk.get_object, Bucket=bucket, Key="c", IfUnmodifiedSince=past),
                 412, "PreconditionFailed")
    for kwargs in ({"IfNoneMatch": etag}, {"IfModifiedSince": future}):
        got = sdk.get_object(Bucket=bucket, Key="c", **kwargs)
        assert got["Body"].get_raw_stream().status == 304
        assert got["ETag"] == etag
    got = sdk.get_object(Bucket=bucket, Key="c", IfModifiedSince=past)
    assert read_body(got) == b"content"


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_keys_round_trip_and_list(sdk, bucket, key):
    data = key.encode() * 3
    sdk.put_object(Bucket=bucket, Key=key, Body=data)
    assert sdk.head_object(Bucket=bucket, Key=key)["Content-Length"] == str(len(data))
    assert read_body(sdk.get_object(Bucket=bucket, Key=key)) == data
    listed = sdk.list_objects(Bucket=bucket)
    assert [c["Key"] for c in listed["Contents"]] == [key]
    sdk.delete_object(Bucket=bucket, Key=key)
    assert_error(error_of(sdk.head_object, Bucket=bucket, Key=key), 404, "NoSuchResource")


def test_key_length_limit(sdk, bucket):
    longest = "k" * 850
    sdk.put_object(Bucket=bucket, Key=longest, Body=b"x")
    assert sdk.head_object(Bucket=bucket, Key=longest)["Content-Length"] == "1"
    assert_error(error_of(sdk.put_object, Bucket=bucket, Key="é" * 426, Body=b"x"),
                 400, "KeyTooLong")


def test_bad_digest_stores_nothing(sdk, bucket):
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    assert_error(error_of(sdk.put_object, Bucket=bucket, Key="d", Body=b"data",
                          ContentMD5=wrong), 400, "BadDigest")
    assert_error(error_of(sdk.head_object, Bucket=bucket, Key="d"), 404, "NoSuchResource")
    sdk.put_object(Bucket=bucket, Key="d", Body=b"data", EnableMD5=True)


def test_metadata_size_limit(sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="m", Body=b"", Metadata={"x-cos-meta-big": "v" * 2000})
    assert_error(error_of(sdk.put_object, Bucket=bucket, Key="m", Body=b"",
                          Metadata={"x-cos-meta-big": "v" * 2100}), 400, "MetadataTooLarge")


def test_storage_classes(sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="ia", Body=b"warm", StorageClass="STANDARD_IA")
    assert sdk.head_object(Bucket=bucket, Key="ia")["x-cos-storage-class"] == "STANDARD_IA"
    assert read_body(sdk.get_object(Bucket=bucket, Key="ia")) == b"warm"
    sdk.put_object(Bucket=bucket, Key="cold", Body=b"cold", StorageClass="ARCHIVE")
    assert sdk.head_object(Bucket=bucket, Key="cold")["x-cos-storage-class"] == "ARCHIVE"
    assert_error(error_of(sdk.get_object, Bucket=bucket, Key="cold"), 403,
                 "InvalidObjectState")
    listed = sdk.list_objects(Bucket=bucket)["Contents"]
    assert {c["Key"]: c["StorageClass"] for c in listed} == {"cold": "ARCHIVE",
                                                            "ia": "STANDARD_IA"}
    assert_error(error_of(sdk.put_object, Bucket=bucket, Key="x", Body=b"",
                          StorageClass="NOPE"), 400, "InvalidArgument")


def test_delete_object_is_idempotent(sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="gone", Body=b"x")
    sdk.delete_object(Bucket=bucket, Key="gone")
    sdk.delete_object(Bucket=bucket, Key="gone")  # missing: still 204
    assert_error(error_of(sdk.get_object, Bucket=bucket, Key="gone"), 404, "NoSuchKey")


def test_large_object_streams(sdk, bucket, tmp_path):
    data = os.urandom(12 * 1024 * 1024)
    source = tmp_path / "big"
    source.write_bytes(data)
    with open(source, "rb") as f:
        sdk.put_object(Bucket=bucket, Key="big", Body=f)
    target = tmp_path / "back"
    sdk.get_object(Bucket=bucket, Key="big")["Body"].get_stream_to_file(str(target))
    assert md5_hex(target.read_bytes()) == md5_hex(data)


# -- listing ------------------------------------------------------------------------

def test_list_paging_follows_next_marker(sdk, bucket):
    keys = sorted(f"p/{i:03d}" for i in range(23))
    for key in keys:
        sdk.put_object(Bucket=bucket, Key=key, Body=b"")
    seen, marker, pages = [], "", 0
    while True:
        page = sdk.list_objects(Bucket=bucket, Prefix="p/", Marker=marker, MaxKeys=7)
        pages += 1
        seen += [c["Key"] for c in page.get("Contents", [])]
        if page["IsTruncated"] == "false":
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
        assert marker == seen[-1]
    assert (seen, pages) == (keys, 4)
    assert sdk.list_objects(Bucket=bucket, MaxKeys=5000)["MaxKeys"] == "1000"


def test_list_delimiter_counts_prefixes(sdk, bucket):
    for key in ["a.txt", "d1/x", "d1/y", "d2/z/deep", "d3/", "e.txt", "f/"]:
        sdk.put_object(Bucket=bucket, Key=key, Body=b"")
    top = sdk.list_objects(Bucket=bucket, Delimiter="/")
    assert [c["Key"] for c in top["Contents"]] == ["a.txt", "e.txt"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["d1/", "d2/", "d3/", "f/"]
    first = sdk.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=3)
    entries = [c["Key"] for c in first.get("Contents", [])] + \
        [p["Prefix"] for p in first.get("CommonPrefixes", [])]
    assert sorted(entries) == ["a.txt", "d1/", "d2/"]
    assert first["IsTruncated"] == "true" and first["NextMarker"] == "d2/"
    rest = sdk.list_objects(Bucket=bucket, Delimiter="/", Marker="d2/")
    assert [c["Key"] for c in rest["Contents"]] == ["e.txt"]
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["d3/", "f/"]
    inner = sdk.list_objects(Bucket=bucket, Prefix="d2/", Delimiter="/")
    assert [p["Prefix"] for p in inner["CommonPrefixes"]] == ["d2/z/"]
    assert "Contents" not in inner


def test_list_url_encoding_and_utf8_order(cos_server, sdk, bucket):
    keys = ["a b", "a+b", "a%b", "Zed", "é", "~tilde", "a\tb"]
    for key in keys:
        sdk.put_object(Bucket=bucket, Key=key, Body=b"")
    listed = [c["Key"] for c in sdk.list_objects(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))
    raw = cos_request(cos_server, sdk, "GET", bucket, params={"prefix": "a b",
                                                              "encoding-type": "url"})
    assert b"<Key>a%20b</Key>" in raw.content and b"<Prefix>a%20b</Prefix>" in raw.content
    plain = cos_request(cos_server, sdk, "GET", bucket, params={"prefix": "a+"})
    assert b"<Key>a+b</Key>" in plain.content and b"<EncodingType>" not in plain.content


# -- append -------------------------------------------------------------------------

def test_append_object(sdk, bucket):
    first = sdk.append_object(Bucket=bucket, Key="log", Position=0, Data=b"hello ")
    assert first["x-cos-next-append-position"] == "6"
    second = sdk.append_object(Bucket=bucket, Key="log", Position=6, Data=b"world")
    assert second["x-cos-next-append-position"] == "11"
    head = sdk.head_object(Bucket=bucket, Key="log")
    assert head["x-cos-object-type"] == "appendable" and head["Content-Length"] == "11"
    assert read_body(sdk.get_object(Bucket=bucket, Key="log")) == b"hello world"
    assert_error(error_of(sdk.append_object, Bucket=bucket, Key="log", Position=5, Data=b"x"),
                 409, "AppendPositionErr")
    assert_error(error_of(sdk.append_object, Bucket=bucket, Key="new", Position=3, Data=b"x"),
                 409, "AppendPositionErr")
    # Appendable objects cannot be copied.
    err = error_of(sdk.copy_object, Bucket=bucket, Key="copy",
                   CopySource={"Bucket": bucket, "Key": "log", "Region": REGION})
    assert err.get_status_code() == 400
    # Any other upload makes it a normal object, which cannot be appended to.
    sdk.put_object(Bucket=bucket, Key="log", Body=b"normal")
    assert "x-cos-object-type" not in sdk.head_object(Bucket=bucket, Key="log")
    assert_error(error_of(sdk.append_object, Bucket=bucket, Key="log", Position=6,
                          Data=b"x"), 409, "ObjectNotAppendable")


# -- copy ---------------------------------------------------------------------------

def test_copy_keeps_or_replaces_metadata(sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="src", Body=b"payload", ContentType="text/x-src",
                   Metadata={"x-cos-meta-mode": "33188"})
    source = {"Bucket": bucket, "Key": "src", "Region": REGION}
    copied = sdk.copy_object(Bucket=bucket, Key="dst/copy", CopySource=source)
    assert copied["ETag"] == f'"{md5_hex(b"payload")}"' and copied["LastModified"]
    head = sdk.head_object(Bucket=bucket, Key="dst/copy")
    assert (head["x-cos-meta-mode"], head["Content-Type"]) == ("33188", "text/x-src")
    sdk.copy_object(Bucket=bucket, Key="dst/replaced", CopySource=source, CopyStatus="Replaced",
                    ContentType="text/plain", Metadata={"x-cos-meta-mode": "16877"})
    head = sdk.head_object(Bucket=bucket, Key="dst/replaced")
    assert (head["x-cos-meta-mode"], head["Content-Type"]) == ("16877", "text/plain")
    assert read_body(sdk.get_object(Bucket=bucket, Key="dst/replaced")) == b"payload"
    # Onto itself: only with Replaced (e.g. new metadata, new storage class).
    assert_error(error_of(sdk.copy_object, Bucket=bucket, Key="src", CopySource=source),
                 400, "InvalidRequest")
    sdk.copy_object(Bucket=bucket, Key="src", CopySource=source, CopyStatus="Replaced",
                    Metadata={"x-cos-meta-mtime": "1"}, StorageClass="STANDARD_IA")
    head = sdk.head_object(Bucket=bucket, Key="src")
    assert head["x-cos-meta-mtime"] == "1" and "x-cos-meta-mode" not in head
    assert head["x-cos-storage-class"] == "STANDARD_IA"
    assert read_body(sdk.get_object(Bucket=bucket, Key="src")) == b"payload"
    err = error_of(sdk.copy_object, Bucket=bucket, Key="x",
                   CopySource={"Bucket": bucket, "Key": "missing", "Region": REGION})
    assert err.get_status_code() == 404


def test_copy_source_path_form_and_odd_key(cos_server, sdk, bucket):
    key = "dir with space/50%+#?&中.txt"
    sdk.put_object(Bucket=bucket, Key=key, Body=b"odd")
    sdk.copy_object(Bucket=bucket, Key="via-host",
                    CopySource={"Bucket": bucket, "Key": key, "Region": REGION})
    assert read_body(sdk.get_object(Bucket=bucket, Key="via-host")) == b"odd"
    from urllib.parse import quote
    answer = cos_request(cos_server, sdk, "PUT", bucket, "via-path",
                         headers={"x-cos-copy-source": f"/{bucket}/{quote(key)}"})
    assert answer.status_code == 200, answer.text
    assert ET.fromstring(answer.content).find("ETag").text == f'"{md5_hex(b"odd")}"'
    assert read_body(sdk.get_object(Bucket=bucket, Key="via-path")) == b"odd"


# -- delete multiple ----------------------------------------------------------------

def test_delete_objects(cos_server, sdk, bucket):
    for key in ["a", "b", "c/d"]:
        sdk.put_object(Bucket=bucket, Key=key, Body=b"")
    answer = sdk.delete_objects(Bucket=bucket, Delete={
        "Quiet": "false", "Object": [{"Key": "a"}, {"Key": "c/d"}, {"Key": "never"}]})
    assert sorted(d["Key"] for d in answer["Deleted"]) == ["a", "c/d", "never"]
    quiet = sdk.delete_objects(Bucket=bucket, Delete={"Quiet": "true",
                                                      "Object": [{"Key": "b"}]})
    assert "Deleted" not in quiet and "Error" not in quiet
    assert "Contents" not in sdk.list_objects(Bucket=bucket)
    too_many = sdk.delete_objects
    err = error_of(too_many, Bucket=bucket, Delete={
        "Object": [{"Key": f"k{i}"} for i in range(1001)]})
    assert_error(err, 400, "MalformedXML")
    body = b"<Delete><Object><Key>a</Key></Object></Delete>"
    missing_md5 = cos_request(cos_server, sdk, "POST", bucket, params={"delete": ""}, data=body)
    assert missing_md5.status_code == 400
    wrong = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    bad = cos_request(cos_server, sdk, "POST", bucket, params={"delete": ""}, data=body,
                      headers={"Content-MD5": wrong})
    assert (bad.status_code, ET.fromstring(bad.content).find("Code").text) == \
        (400, "BadDigest")


# -- multipart ----------------------------------------------------------------------

PART = 65536  # the session server's --min-part-size


def test_multipart_upload_with_part_copy(sdk, bucket):
    sdk.put_object(Bucket=bucket, Key="source", Body=b"S" * 100_000)
    upload = sdk.create_multipart_upload(Bucket=bucket, Key="big/file", ContentType="text/a",
                                         Metadata={"x-cos-meta-mode": "33188"})
    upload_id = upload["UploadId"]
    assert (upload["Bucket"], upload["Key"]) == (bucket, "big/file")
    part1 = os.urandom(PART)
    etag1 = sdk.upload_part(Bucket=bucket, Key="big/file", Body=part1, PartNumber=1,
                            UploadId=upload_id)["ETag"]
    assert etag1 == f'"{md5_hex(part1)}"'
    copied = sdk.upload_part_copy(Bucket=bucket, Key="big/file", PartNumber=2,
                                  UploadId=upload_id, CopySourceRange=f"bytes=0-{PART - 1}",
                                  CopySource={"Bucket": bucket, "Key": "source",
                                              "Region": REGION})
    assert copied["ETag"] == f'"{md5_hex(b"S" * PART)}"' and copied["LastModified"]
    etag3 = sdk.upload_part(Bucket=bucket, Key="big/file", Body=b"tail", PartNumber=3,
                            UploadId=upload_id)["ETag"]
    parts = sdk.list_parts(Bucket=bucket, Key="big/file", UploadId=upload_id)
    assert [(p["PartNumber"], p["Size"]) for p in parts["Part"]] == \
        [("1", str(PART)), ("2", str(PART)), ("3", "4")]
    uploads = sdk.list_multipart_uploads(Bucket=bucket, Prefix="big/")
    assert [(u["Key"], u["UploadId"]) for u in uploads["Upload"]] == [("big/file", upload_id)]
    done = sdk.complete_multipart_upload(Bucket=bucket, Key="big/file", UploadId=upload_id,
                                         MultipartUpload={"Part": [
                                             {"PartNumber": 1, "ETag": etag1},
                                             {"PartNumber": 2, "ETag": copied["ETag"]},
                                             {"PartNumber": 3, "ETag": etag3}]})
    digests = b"".join(bytes.fromhex(e.strip('"')) for e in (etag1, copied["ETag"], etag3))
    assert done["ETag"] == f'"{hashlib.md5(digests).hexdigest()}-3"'
    assert done["Location"].endswith("/big/file")
    data = read_body(sdk.get_object(Bucket=bucket, Key="big/file"))
    assert data == part1 + b"S" * PART + b"tail"
    head = sdk.head_object(Bucket=bucket, Key="big/file")
    assert (head["x-cos-meta-mode"], head["Content-Type"], head["ETag"]) == \
        ("33188", "text/a", done["ETag"])
    assert "Upload" not in sdk.list_multipart_uploads(Bucket=bucket)


def test_a_completed_upload_reads_and_copies_across_its_parts(sdk, bucket):
    """The server keeps a completed upload's parts as they are: every range, copy and
    part copy must read across their boundaries as if they were one file."""
    chunks = [os.urandom(PART), os.urandom(PART + 7), os.urandom(1000)]
    upload_id, etags = sdk_upload_parts(sdk, bucket, "parts", chunks)
    sdk.upload_part(Bucket=bucket, Key="parts", Body=b"left out", PartNumber=9,
                    UploadId=upload_id)
    sdk_complete(sdk, bucket, "parts", upload_id, etags)
    whole = b"".join(chunks)
    assert read_body(sdk.get_object(Bucket=bucket, Key="parts")) == whole
    for start, end in [(PART - 10, PART + 10), (0, 2 * PART + 6), (2 * PART + 6, len(whole) - 1),
                       (5, len(whole) - 1), (PART, PART)]:
        got = read_body(sdk.get_object(Bucket=bucket, Key="parts", Range=f"bytes={start}-{end}"))
        assert got == whole[start:end + 1], (start, end)

    sdk.copy_object(Bucket=bucket, Key="parts-copy",
                    CopySource={"Bucket": bucket, "Key": "parts", "Region": REGION})
    other = sdk.create_multipart_upload(Bucket=bucket, Key="from-parts")["UploadId"]
    span = f"bytes={PART - 3}-{2 * PART + 100}"
    copied = sdk.upload_part_copy(Bucket=bucket, Key="from-parts", PartNumber=1,
                                  UploadId=other, CopySourceRange=span,
                                  CopySource={"Bucket": bucket, "Key": "parts",
                                              "Region": REGION})
    assert copied["ETag"] == f'"{md5_hex(whole[PART - 3:2 * PART + 101])}"'
    sdk.delete_object(Bucket=bucket, Key="parts")
    assert read_body(sdk.get_object(Bucket=bucket, Key="parts-copy")) == whole
    sdk_complete(sdk, bucket, "from-parts", other, [copied["ETag"]])
    assert read_body(sdk.get_object(Bucket=bucket, Key="from-parts")) == \
        whole[PART - 3:2 * PART + 101]


def test_multipart_errors(sdk, bucket):
    upload_id = sdk.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    small = sdk.upload_part(Bucket=bucket, Key="m", Body=b"x" * 10, PartNumber=1,
                            UploadId=upload_id)["ETag"]
    full = sdk.upload_part(Bucket=bucket, Key="m", Body=b"y" * PART, PartNumber=2,
                           UploadId=upload_id)["ETag"]

    def complete(parts):
        return error_of(sdk.complete_multipart_upload, Bucket=bucket, Key="m",
                        UploadId=upload_id, MultipartUpload={"Part": [
                            {"PartNumber": n, "ETag": e} for n, e in parts]})

    assert_error(complete([(1, small), (2, full)]), 400, "EntityTooSmall")
    assert_error(complete([(2, full), (1, small)]), 400, "InvalidPartOrder")
    assert_error(complete([(1, '"' + "0" * 32 + '"')]), 400, "InvalidPart")
    assert_error(complete([(7, full)]), 400, "InvalidPart")
    assert_error(error_of(sdk.upload_part, Bucket=bucket, Key="m", Body=b"x", PartNumber=0,
                          UploadId=upload_id), 400, "InvalidArgument")
    assert_error(error_of(sdk.upload_part, Bucket=bucket, Key="m", Body=b"x", PartNumber=10001,
                          UploadId=upload_id), 400, "InvalidArgument")
    # A small last part is fine.
    sdk.upload_part(Bucket=bucket, Key="m", Body=b"z" * PART, PartNumber=1, UploadId=upload_id)
    etag1 = sdk.list_parts(Bucket=bucket, Key="m", UploadId=upload_id)["Part"][0]["ETag"]
    sdk.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=upload_id, MultipartUpload={
        "Part": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": full}]})
    assert_error(complete([(1, etag1)]), 404, "NoSuchUpload")

    other = sdk.create_multipart_upload(Bucket=bucket, Key="n")["UploadId"]
    sdk.abort_multipart_upload(Bucket=bucket, Key="n", UploadId=other)
    assert_error(error_of(sdk.upload_part, Bucket=bucket, Key="n", Body=b"x", PartNumber=1,
                          UploadId=other), 404, "NoSuchUpload")
    assert_error(error_of(sdk.abort_multipart_upload, Bucket=bucket, Key="n", UploadId=other),
                 404, "NoSuchUpload")
    assert_error(error_of(sdk.list_parts, Bucket=bucket, Key="n", UploadId=other),
                 404, "NoSuchUpload")


def test_list_uploads_and_parts_paging(sdk, bucket):
    ids = [sdk.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
           for key in ["a/1", "a/2", "b", "b"]]
    for n in range(1, 6):
        sdk.upload_part(Bucket=bucket, Key="b", Body=b"p", PartNumber=n, UploadId=ids[2])
    grouped = sdk.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["a/"]
    assert [u["UploadId"] for u in grouped["Upload"]] == ids[2:]
    first = sdk.list_multipart_uploads(Bucket=bucket, MaxUploads=3)
    assert first["IsTruncated"] == "true"
    rest = sdk.list_multipart_uploads(Bucket=bucket, KeyMarker=first["NextKeyMarker"],
                                      UploadIdMarker=first["NextUploadIdMarker"])
    assert [u["UploadId"] for u in first["Upload"] + rest["Upload"]] == ids
    page = sdk.list_parts(Bucket=bucket, Key="b", UploadId=ids[2], MaxParts=2)
    assert [p["PartNumber"] for p in page["Part"]] == ["1", "2"]
    assert page["IsTruncated"] == "true" and page["NextPartNumberMarker"] == "2"
    page = sdk.list_parts(Bucket=bucket, Key="b", UploadId=ids[2], PartNumberMarker=2)
    assert [p["PartNumber"] for p in page["Part"]] == ["3", "4", "5"]


# -- buckets ------------------------------------------------------------------------

def test_bucket_create_head_delete(sdk, cos_server):
    name = f"sdk{os.getpid()}-{APPID}"
    sdk.create_bucket(Bucket=name)
    assert sdk.head_bucket(Bucket=name)["x-cos-bucket-region"] == REGION
    assert_error(error_of(sdk.create_bucket, Bucket=name), 409, "BucketAlreadyExists")
    sdk.put_object(Bucket=name, Key="k", Body=b"")
    assert_error(error_of(sdk.delete_bucket, Bucket=name), 409, "BucketNotEmpty")
    sdk.delete_object(Bucket=name, Key="k")
    sdk.delete_bucket(Bucket=name)
    assert error_of(sdk.head_bucket, Bucket=name).get_status_code() == 404
    assert_error(error_of(sdk.put_object, Bucket=name, Key="k", Body=b""), 404,
                 "NoSuchBucket")


# -- authentication and errors ------------------------------------------------------

def test_wrong_secret_and_unknown_id(cos_server, bucket):
    wrong_key = sdk_with(cos_server, SECRET_ID, SECRET_KEY + "x")
    for call in (lambda c: c.get_object(Bucket=bucket, Key="k"),
                 lambda c: c.put_object(Bucket=bucket, Key="k", Body=b"x" * 100_000),
                 lambda c: c.list_objects(Bucket=bucket, Prefix="a b")):
        assert_error(error_of(call, wrong_key), 403, "SignatureDoesNotMatch")
    unknown = sdk_with(cos_server, "AKIDunknown", SECRET_KEY)
    assert_error(error_of(unknown.list_objects, Bucket=bucket), 403, "InvalidAccessKeyId")


def test_presigned_urls(cos_server, bucket, sdk):
    sdk.put_object(Bucket=bucket, Key="shared file+1", Body=b"shared")
    # Presign as for real COS (no IP setting), then send it to the local server with
    # the Host it names.
    plain = CosS3Client(CosConfig(Region=REGION, SecretId=SECRET_ID, SecretKey=SECRET_KEY,
                                  Scheme="http"))
    for expired, status in ((300, 200), (-30, 403)):
        url = plain.get_presigned_url(Bucket=bucket, Key="shared file+1", Method="GET",
                                      Expired=expired)
        local = url.replace(f"http://{bucket_host(bucket)}", cos_server.url)
        answer = requests.get(local, headers={"Host": bucket_host(bucket)}, timeout=10)
        assert answer.status_code == status, answer.text
        if status == 200:
            assert answer.content == b"shared"
        else:
            error = ET.fromstring(answer.content)
            assert (error.find("Code").text, error.find("Message").text) == \
                ("AccessDenied", "Request has expired")
    # Presigned with the IP setting: host 127.0.0.1 signed without the port.
    url = sdk.get_presigned_url(Bucket=bucket, Key="shared file+1", Method="GET")
    path_style = url.replace(f"{cos_server.url}/", f"{cos_server.url}/{bucket}/")
    assert requests.get(path_style, timeout=10).content == b"shared"


def test_unimplemented_subresources_are_501(cos_server, sdk, bucket):
    for params in ({"acl": ""}, {"tagging": ""}, {"versioning": ""}):
        answer = cos_request(cos_server, sdk, "GET", bucket, params=params)
        assert answer.status_code == 501
        assert ET.fromstring(answer.content).find("Code").text == "NotImplemented"


def test_unsigned_request_is_refused(cos_server, sdk, bucket):
    answer = cos_request(cos_server, sdk, "GET", bucket, sign=False)
    assert answer.status_code == 403


def test_error_document_and_request_ids(cos_server, sdk, bucket):
    answer = cos_request(cos_server, sdk, "GET", bucket, "no such key")
    assert answer.status_code == 404
    assert answer.headers["Content-Type"] == "application/xml"
    assert answer.content.startswith(b"<?xml version='1.0' encoding='utf-8' ?><Error><Code>")
    fields = {child.tag: child.text for child in ET.fromstring(answer.content)}
    assert list(fields) == ["Code", "Message", "Resource", "RequestId", "TraceId"]
    assert fields["Code"] == "NoSuchKey" and all(fields.values())
    assert fields["RequestId"] == answer.headers["x-cos-request-id"]
    head = cos_request(cos_server, sdk, "HEAD", bucket, "no such key")
    assert head.status_code == 404 and head.content == b""
    assert head.headers["x-cos-request-id"]
    ok = cos_request(cos_server, sdk, "HEAD", bucket)
    assert ok.status_code == 200 and ok.headers["x-cos-request-id"]


def test_chunked_transfer_encoding_put(cos_server, sdk, bucket):
    pieces = [os.urandom(70_000) for _ in range(5)]
    answer = cos_request(cos_server, sdk, "PUT", bucket, "chunked", data=iter(pieces))
    assert answer.status_code == 200, answer.text
    data = b"".join(pieces)
    assert answer.headers["ETag"] == f'"{md5_hex(data)}"'
    assert read_body(sdk.get_object(Bucket=bucket, Key="chunked")) == data


def test_put_without_length_is_411(cos_server, sdk, bucket):
    conn = http.client.HTTPConnection("127.0.0.1", cos_server.port, timeout=10)
    host = bucket_host(bucket)
    conn.putrequest("PUT", "/nolength", skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host)
    conn.putheader("Authorization", sdk.get_auth(Method="PUT", Bucket=bucket, Key="nolength",
                                                 Headers={"Host": host}))
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 411
    assert ET.fromstring(answer.read()).find("Code").text == "MissingContentLength"
