"""S3 clients (boto3, SigV4, path-style) against cosfs-server, including the aws-chunked
streaming uploads some S3 tools send."""

from __future__ import annotations

import hashlib
import io
import os
import time
import xml.etree.ElementTree as ET

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import REGION, SECRET_ID, SECRET_KEY
from server_util import s3_client

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@pytest.fixture
def s3(cos_server):
    return s3_client(cos_server)


def code_of(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    error = info.value.response
    return error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]


def test_put_get_head_list_delete(s3, bucket):
    data = os.urandom(50_000)
    put = s3.put_object(Bucket=bucket, Key="dir/a b.bin", Body=data,
                        Metadata={"mode": "33188"}, ContentType="application/x-test")
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    head = s3.head_object(Bucket=bucket, Key="dir/a b.bin")
    assert head["ContentLength"] == len(data) and head["Metadata"] == {"mode": "33188"}
    assert head["ContentType"] == "application/x-test"
    ranged = s3.get_object(Bucket=bucket, Key="dir/a b.bin", Range="bytes=100-199")
    assert ranged["ContentRange"] == f"bytes 100-199/{len(data)}"
    assert ranged["Body"].read() == data[100:200]
    assert s3.get_object(Bucket=bucket, Key="dir/a b.bin")["Body"].read() == data
    for key in ["dir/b", "dir/sub/c", "top"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    listed = s3.list_objects(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [c["Key"] for c in listed["Contents"]] == ["dir/a b.bin", "dir/b"]
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["dir/sub/"]
    s3.delete_object(Bucket=bucket, Key="top")
    assert code_of(s3.head_object, Bucket=bucket, Key="top")[0] == 404
    assert code_of(s3.get_object, Bucket=bucket, Key="top") == (404, "NoSuchKey")


def test_list_buckets(s3, bucket):
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_list_v2_paging(s3, bucket):
    keys = [f"k{i:02d}+é" for i in range(12)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    paginator = s3.get_paginator("list_objects_v2")
    pages = list(paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 5}))
    assert [len(p["Contents"]) for p in pages] == [5, 5, 2]
    assert [c["Key"] for p in pages for c in p["Contents"]] == keys
    v1 = list(s3.get_paginator("list_objects").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 5}))
    assert [c["Key"] for p in v1 for c in p["Contents"]] == keys


def test_copy_and_delete_objects(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src key", Body=b"copy me", Metadata={"a": "1"})
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src key"})
    assert s3.head_object(Bucket=bucket, Key="dst")["Metadata"] == {"a": "1"}
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src key"},
                   MetadataDirective="REPLACE", Metadata={"b": "2"})
    assert s3.head_object(Bucket=bucket, Key="dst")["Metadata"] == {"b": "2"}
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "src key"},
                                                                  {"Key": "dst"}]})
    assert sorted(d["Key"] for d in answer["Deleted"]) == ["dst", "src key"]
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_multipart_upload(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", Metadata={"x": "y"})
    parts, chunks = [], [os.urandom(70_000), os.urandom(70_000), b"end"]
    for number, chunk in enumerate(chunks, 1):
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload["UploadId"],
                              PartNumber=number, Body=chunk)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload["UploadId"])
    assert [p["Size"] for p in listed["Parts"]] == [70_000, 70_000, 3]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload["UploadId"],
                                        MultipartUpload={"Parts": parts})
    assert done["ETag"].endswith('-3"')
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["Body"].read() == b"".join(chunks) and got["Metadata"] == {"x": "y"}


def test_managed_transfer_uses_multipart(cos_server, s3, bucket):
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(11 * 1024 * 1024)
    cos_server.reset_stats()
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024,
                            multipart_chunksize=5 * 1024 * 1024, max_concurrency=3)
    s3.upload_fileobj(io.BytesIO(data), bucket, "managed", Config=config)
    assert cos_server.count("UploadPart") == 3
    back = io.BytesIO()
    s3.download_fileobj(bucket, "managed", back, Config=config)
    assert back.getvalue() == data


def test_presigned_get(s3, bucket):
    s3.put_object(Bucket=bucket, Key="p q", Body=b"presigned")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p q"},
                                    ExpiresIn=60)
    assert requests.get(url, timeout=10).content == b"presigned"
    tampered = url.replace("p%20q", "p%20r")
    answer = requests.get(tampered, timeout=10)
    assert answer.status_code == 403
    assert ET.fromstring(answer.content).find("Code").text == "SignatureDoesNotMatch"


def test_wrong_secret_and_unknown_id(cos_server, bucket):
    wrong = s3_client(cos_server, secret_key=SECRET_KEY + "x")
    assert code_of(wrong.list_objects, Bucket=bucket) == (403, "SignatureDoesNotMatch")
    assert code_of(wrong.put_object, Bucket=bucket, Key="k", Body=b"x") == \
        (403, "SignatureDoesNotMatch")
    unknown = s3_client(cos_server, secret_id="AKIDnobody")
    assert code_of(unknown.list_objects, Bucket=bucket) == (403, "InvalidAccessKeyId")


# -- aws-chunked streaming uploads, signed with botocore's signer ------------------------

class _StreamingAuth(S3SigV4Auth):
    """botocore's SigV4 with a streaming payload declaration instead of a body hash."""

    def __init__(self, payload: str) -> None:
        super().__init__(Credentials(SECRET_ID, SECRET_KEY), "s3", REGION)
        self._payload = payload

    def payload(self, request):
        return self._payload

    def chunk_signature(self, request, previous: str, data: bytes) -> str:
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", request.context["timestamp"],
                             self.credential_scope(request), previous, EMPTY_SHA256,
                             hashlib.sha256(data).hexdigest()])
        return self.signature(to_sign, request)


def _streaming_put(server, bucket: str, key: str, chunks: list[bytes], signed: bool,
                   corrupt: bool = False) -> requests.Response:
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" if signed else \
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    auth = _StreamingAuth(mode)

    def encode(signatures: list[str]) -> bytes:
        out = b""
        for data, signature in zip([*chunks, b""], signatures, strict=True):
            extension = f";chunk-signature={signature}" if signed else ""
            if corrupt and data:
                data = data[:-1] + bytes([data[-1] ^ 1])
            out += f"{len(data):x}{extension}\r\n".encode() + data + b"\r\n"
        if not signed:  # the final empty chunk is followed by trailers, then CRLF
            out = out[:-2] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n"
        return out

    placeholder = ["0" * 64] * (len(chunks) + 1)
    headers = {"Content-Encoding": "aws-chunked",
               "Content-Length": str(len(encode(placeholder))),
               "x-amz-decoded-content-length": str(sum(map(len, chunks)))}
    request = AWSRequest("PUT", f"{server.url}/{bucket}/{key}", headers=headers)
    auth.add_auth(request)
    signatures, previous = [], request.headers["Authorization"].rsplit("=", 1)[1]
    for data in [*chunks, b""]:
        previous = auth.chunk_signature(request, previous, data)
        signatures.append(previous)
    body = encode(signatures)
    assert len(body) == int(headers["Content-Length"])
    return requests.put(request.url, headers=dict(request.headers.items()), data=body,
                        timeout=30)


@pytest.mark.parametrize("signed", [True, False])
def test_aws_chunked_streaming_put(cos_server, s3, bucket, signed):
    chunks = [os.urandom(65536), os.urandom(1000)]
    answer = _streaming_put(cos_server, bucket, "streamed", chunks, signed)
    assert answer.status_code == 200, answer.text
    got = s3.get_object(Bucket=bucket, Key="streamed")
    assert got["Body"].read() == b"".join(chunks)
    assert "ContentEncoding" not in got  # aws-chunked described the upload only


def test_aws_chunked_bad_chunk_signature_stores_nothing(cos_server, s3, bucket):
    answer = _streaming_put(cos_server, bucket, "forged", [os.urandom(1000)], signed=True,
                            corrupt=True)
    assert answer.status_code == 403
    assert ET.fromstring(answer.content).find("Code").text == "SignatureDoesNotMatch"
    assert code_of(s3.head_object, Bucket=bucket, Key="forged")[0] == 404


def test_payload_hash_is_checked(cos_server, s3, bucket):
    request = AWSRequest("PUT", f"{cos_server.url}/{bucket}/hashed", data=b"signed body")
    S3SigV4Auth(Credentials(SECRET_ID, SECRET_KEY), "s3", REGION).add_auth(request)
    headers = dict(request.headers.items())
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(b"signed body").hexdigest()
    answer = requests.put(request.url, headers=headers, data=b"other body!", timeout=10)
    assert answer.status_code == 400
    assert ET.fromstring(answer.content).find("Code").text == "XAmzContentSHA256Mismatch"
    assert code_of(s3.head_object, Bucket=bucket, Key="hashed")[0] == 404
    assert requests.put(request.url, headers=headers, data=b"signed body",
                        timeout=10).status_code == 200


def test_clock_skew_and_expired_presigned_url(s3, bucket, monkeypatch):
    import datetime

    import botocore.auth

    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"},
                                    ExpiresIn=1)
    time.sleep(2.1)
    answer = requests.get(url, timeout=10)
    error = ET.fromstring(answer.content)
    assert (answer.status_code, error.find("Code").text, error.find("Message").text) == \
        (403, "AccessDenied", "Request has expired")

    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda: real() - datetime.timedelta(minutes=20))
    assert code_of(s3.head_bucket, Bucket=bucket)[0] == 403
    assert code_of(s3.list_objects, Bucket=bucket) == (403, "RequestTimeTooSkewed")
