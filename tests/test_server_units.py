"""Unit tests of the pure parts of cosfs-server: ranges, XML, signatures (the published
COS and AWS test vectors), listing, routing, faults, authentication decisions."""

from __future__ import annotations

import hashlib
import io
import time

import pytest

from cosfs.server import cos_signature, sigv4
from cosfs.server.auth import Credentials, RequestView, authenticate
from cosfs.server.bodies import AwsChunkedSource, ChunkedSource, LengthSource, RequestBody
from cosfs.server.errors import CosServerError
from cosfs.server.faults import FaultTable, Stats, parse_fault
from cosfs.server.listing import list_page, successor
from cosfs.server.ranges import ByteRange, parse_copy_range, parse_range
from cosfs.server.routing import Target, decode_path, operation, route
from cosfs.server.store import chained_etag, multipart_etag
from cosfs.server.xmlio import error_document, parse_complete, parse_delete, render

# -- ranges ---------------------------------------------------------------------


@pytest.mark.parametrize("header, size, expected", [
    (None, 10, None),
    ("bytes=0-0", 10, ByteRange(0, 0)),
    ("bytes=2-5", 10, ByteRange(2, 5)),
    ("bytes=2-", 10, ByteRange(2, 9)),
    ("bytes=-3", 10, ByteRange(7, 9)),
    ("bytes=-30", 10, ByteRange(0, 9)),
    ("bytes=5-100", 10, ByteRange(5, 9)),
    ("bytes=5-2", 10, None),          # invalid: ignored, whole object
    ("bytes=0-1,4-5", 10, None),      # several ranges: ignored
    ("items=0-1", 10, None),
    ("bytes=-", 10, None),
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header, size", [("bytes=10-", 10), ("bytes=10-20", 10),
                                          ("bytes=-0", 10), ("bytes=0-", 0), ("bytes=-5", 0)])
def test_unsatisfiable_range_is_416(header, size):
    with pytest.raises(CosServerError) as info:
        parse_range(header, size)
    assert (info.value.status, info.value.code) == (416, "InvalidRange")
    assert info.value.headers["Content-Range"] == f"bytes */{size}"


def test_content_range_and_copy_range():
    assert ByteRange(2, 5).content_range(10) == "bytes 2-5/10"
    assert ByteRange(2, 5).length == 4
    assert parse_copy_range("bytes=0-4", 5) == ByteRange(0, 4)
    for bad in ("bytes=0-5", "bytes=3-2", "bytes=-2", "bytes=1-", "0-1"):
        with pytest.raises(CosServerError, match="InvalidArgument"):
            parse_copy_range(bad, 5)


# -- XML ------------------------------------------------------------------------

def test_render_escapes_and_skips_none():
    doc = render("R", [("A", "x<&>y"), ("B", None), ("C", True), ("D", [("E", 3)])])
    assert doc == (b"<?xml version='1.0' encoding='utf-8' ?>"
                   b"<R><A>x&lt;&amp;&gt;y</A><C>true</C><D><E>3</E></D></R>")


def test_error_document_shape():
    doc = error_document("NoSuchKey", "gone", "b.cos/k", "rid", "tid")
    assert doc == (b"<?xml version='1.0' encoding='utf-8' ?><Error><Code>NoSuchKey</Code>"
                   b"<Message>gone</Message><Resource>b.cos/k</Resource>"
                   b"<RequestId>rid</RequestId><TraceId>tid</TraceId></Error>")


def test_parse_delete_with_namespace_and_quiet():
    body = (b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>'
            b"<Object><Key>a &amp; b</Key></Object><Object><Key>c/</Key></Object></Delete>")
    assert parse_delete(body) == (True, ["a & b", "c/"])
    assert parse_delete(b"<Delete><Object><Key>x</Key></Object></Delete>") == (False, ["x"])


def test_parse_complete_and_malformed():
    body = (b"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>\"ab\"</ETag>"
            b"</Part><Part><PartNumber>1</PartNumber><ETag>cd</ETag></Part>"
            b"</CompleteMultipartUpload>")
    assert parse_complete(body) == [(2, "ab"), (1, "cd")]
    for bad in (b"<nope", b"<Other/>", b"<CompleteMultipartUpload/>",
                b"<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>"):
        with pytest.raises(CosServerError, match="MalformedXML"):
            parse_complete(bad)


def test_etags_of_multipart_and_append():
    part_md5s = [hashlib.md5(b"a").hexdigest(), hashlib.md5(b"b").hexdigest()]
    expected = hashlib.md5(hashlib.md5(b"a").digest() + hashlib.md5(b"b").digest()).hexdigest()
    assert multipart_etag(part_md5s) == f"{expected}-2"
    assert chained_etag("x", "y") != chained_etag("x", "z")


# -- COS signature: the three published vectors -----------------------------------

VECTOR_KEY = "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"
VECTOR_HOST = "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"


def test_cos_vector_1_put():
    headers = cos_signature.encode_pairs([
        ("Date", "Thu, 16 May 2019 06:45:51 GMT"), ("Host", VECTOR_HOST),
        ("Content-Type", "text/plain"), ("Content-Length", "13"),
        ("Content-MD5", "mQ/fVh815F3k6TAUm8m0eg=="), ("x-cos-acl", "private"),
        ("x-cos-grant-read", 'uin="100000000011"')])
    key_time = "1557989151;1557996351"
    assert cos_signature.sign_key(VECTOR_KEY, key_time) == \
        "eb2519b498b02ac213cb1f3d1a3d27a3b3c9bc5f"
    http = cos_signature.http_string("PUT", "/exampleobject(腾讯云)", {}, headers)
    assert hashlib.sha1(http.encode()).hexdigest() == "8b2751e77f43a0995d6e9eb9477f4b685cca4172"
    assert cos_signature.signature(VECTOR_KEY, key_time, key_time, http) == \
        "3b8851a11a569213c17ba8fa7dcf2abec6935172"
    auth = cos_signature.parse_authorization_header(
        "q-sign-algorithm=sha1&q-ak=AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q"
        f"&q-sign-time={key_time}&q-key-time={key_time}"
        "&q-header-list=content-length;content-md5;content-type;date;host;x-cos-acl;"
        "x-cos-grant-read&q-url-param-list=&q-signature=3b8851a11a569213c17ba8fa7dcf2abec6935172")
    assert cos_signature.verify(auth, VECTOR_KEY, "PUT", ["/exampleobject(腾讯云)"], {}, headers)
    assert not cos_signature.verify(auth, VECTOR_KEY + "x", "PUT",
                                    ["/exampleobject(腾讯云)"], {}, headers)


def test_cos_vector_2_get_with_params():
    params = cos_signature.encode_pairs([("response-content-type", "application/octet-stream"),
                                         ("response-cache-control", "max-age=600")])
    headers = cos_signature.encode_pairs([("Date", "Thu, 16 May 2019 06:55:53 GMT"),
                                          ("Host", VECTOR_HOST)])
    key_time = "1557989753;1557996953"
    assert cos_signature.sign_key(VECTOR_KEY, key_time) == \
        "937914bf490e9e8c189836aad2052e4feeb35eaf"
    http = cos_signature.http_string("GET", "/exampleobject(腾讯云)", params, headers)
    assert hashlib.sha1(http.encode()).hexdigest() == "54ecfe22f59d3514fdc764b87a32d8133ea611e6"
    auth = cos_signature.parse_authorization({
        "q-sign-algorithm": "sha1", "q-ak": "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q",
        "q-sign-time": key_time, "q-key-time": key_time, "q-header-list": "date;host",
        "q-url-param-list": "response-cache-control;response-content-type",
        "q-signature": "01681b8c9d798a678e43b685a9f1bba0f6c0e012"})
    assert cos_signature.verify(auth, VECTOR_KEY, "GET", ["/exampleobject(腾讯云)"], params,
                                headers)


def test_cos_vector_3_and_unsigned_headers_do_not_matter():
    headers = cos_signature.encode_pairs([
        ("host", "testbucket-125000000.cos.ap-guangzhou.myqcloud.com"),
        ("x-cos-content-sha1", "db8ac1c259eb89d4a131b253bacfca5f319d54f2"),
        ("x-cos-stroage-class", "nearline"), ("User-Agent", "not signed")])
    key_time = "1480932292;1481012292"
    auth = cos_signature.parse_authorization({
        "q-sign-algorithm": "sha1", "q-ak": "x", "q-sign-time": key_time,
        "q-key-time": key_time, "q-header-list": "host;x-cos-content-sha1;x-cos-stroage-class",
        "q-url-param-list": "", "q-signature": "ce4ac0ecbcdb30538b3fee0a97cc6389694ce53a"})
    assert cos_signature.verify(auth, "AKIDZfbOA78asKUYBcXFrJD0a1ICvR98JM", "PUT",
                                ["/testfile2"], {}, headers)


def test_cos_host_signed_without_port():
    key_time = "1;9999999999"
    signed = cos_signature.encode_pairs([("host", "127.0.0.1")])
    http = cos_signature.http_string("GET", "/k", {}, signed)
    sig = cos_signature.signature("sk", key_time, key_time, http)
    auth = cos_signature.parse_authorization({
        "q-sign-algorithm": "sha1", "q-ak": "id", "q-sign-time": key_time,
        "q-key-time": key_time, "q-header-list": "host", "q-url-param-list": "",
        "q-signature": sig})
    received = cos_signature.encode_pairs([("Host", "127.0.0.1:8080")])
    assert cos_signature.verify(auth, "sk", "GET", ["/k"], {}, received)


def test_cos_authorization_rejects_malformed():
    with pytest.raises(ValueError):
        cos_signature.parse_authorization_header("q-sign-algorithm=sha1&q-ak=x")
    with pytest.raises(ValueError):
        cos_signature.parse_authorization({
            "q-sign-algorithm": "md5", "q-ak": "", "q-sign-time": "1;2", "q-key-time": "1;2",
            "q-header-list": "", "q-url-param-list": "", "q-signature": ""})


# -- SigV4: AWS's published S3 examples --------------------------------------------

AWS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_CREDENTIAL = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
AWS_HOST = "examplebucket.s3.amazonaws.com"
AWS_DATE = "20130524T000000Z"


def _aws_auth(signed: str, signature: str) -> sigv4.SigV4Authorization:
    return sigv4.parse_authorization_header(
        f"AWS4-HMAC-SHA256 Credential={AWS_CREDENTIAL}, SignedHeaders={signed}, "
        f"Signature={signature}", AWS_DATE)


def test_sigv4_get_object_example():
    auth = _aws_auth("host;range;x-amz-content-sha256;x-amz-date",
                     "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    headers = [("Host", AWS_HOST), ("Range", "bytes=0-9"),
               ("x-amz-content-sha256", sigv4.EMPTY_SHA256), ("x-amz-date", AWS_DATE)]
    assert sigv4.verify(auth, AWS_KEY, "GET", ["/test.txt"], [""], headers, sigv4.EMPTY_SHA256)
    assert not sigv4.verify(auth, AWS_KEY, "GET", ["/test.txt"], [""],
                            headers[:1] + [("Range", "bytes=0-8")] + headers[2:],
                            sigv4.EMPTY_SHA256)


def test_sigv4_put_object_example():
    payload = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    auth = _aws_auth("date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                     "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    headers = [("Host", AWS_HOST), ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
               ("x-amz-date", AWS_DATE), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
               ("x-amz-content-sha256", payload)]
    uri = sigv4.uri_encode("/test$file.text", keep_slash=True)
    assert uri == "/test%24file.text"
    assert sigv4.verify(auth, AWS_KEY, "PUT", [uri], [""], headers, payload)


def test_sigv4_list_and_presigned_examples():
    auth = _aws_auth("host;x-amz-content-sha256;x-amz-date",
                     "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    headers = [("Host", AWS_HOST), ("x-amz-content-sha256", sigv4.EMPTY_SHA256),
               ("x-amz-date", AWS_DATE)]
    query = sigv4.canonical_query([("prefix", "J"), ("max-keys", "2")])
    assert query == "max-keys=2&prefix=J"
    assert sigv4.verify(auth, AWS_KEY, "GET", ["/"], [query], headers, sigv4.EMPTY_SHA256)

    params = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": AWS_CREDENTIAL,
              "X-Amz-Date": AWS_DATE, "X-Amz-Expires": "86400", "X-Amz-SignedHeaders": "host",
              "X-Amz-Signature": "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"}
    presigned = sigv4.parse_presigned(params)
    assert presigned.expires == 86400
    assert sigv4.verify(presigned, AWS_KEY, "GET", ["/test.txt"],
                        [sigv4.canonical_query(params.items())], [("Host", AWS_HOST)],
                        sigv4.UNSIGNED_PAYLOAD)


STREAM_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
STREAM_CHUNKS = [(65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
                 (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
                 (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9")]


def _stream_body(corrupt: bool = False) -> bytes:
    out = io.BytesIO()
    for size, signature in STREAM_CHUNKS:
        data = bytearray(b"a" * size)
        if corrupt and size == 1024:
            data[10] = ord("b")
        out.write(f"{size:x};chunk-signature={signature}\r\n".encode() + data + b"\r\n")
    return out.getvalue()


def _stream_chain() -> sigv4.ChunkSignatureChain:
    key = sigv4.signing_key(AWS_KEY, "20130524", "us-east-1", "s3")
    return sigv4.ChunkSignatureChain(key, AWS_DATE, "20130524/us-east-1/s3/aws4_request",
                                     STREAM_SEED)


def test_sigv4_streaming_example_seed_and_chunks():
    auth = _aws_auth("content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                     "x-amz-decoded-content-length;x-amz-storage-class", STREAM_SEED)
    headers = [("Host", "s3.amazonaws.com"), ("Content-Encoding", "aws-chunked"),
               ("Content-Length", "66824"), ("x-amz-date", AWS_DATE),
               ("x-amz-content-sha256", sigv4.STREAMING_SIGNED),
               ("x-amz-decoded-content-length", "66560"),
               ("x-amz-storage-class", "REDUCED_REDUNDANCY")]
    assert sigv4.verify(auth, AWS_KEY, "PUT", ["/examplebucket/chunkObject.txt"], [""],
                        headers, sigv4.STREAMING_SIGNED)
    raw = _stream_body()
    assert len(raw) == 66824
    body = RequestBody(AwsChunkedSource(LengthSource(io.BytesIO(raw), len(raw)),
                                        _stream_chain()), decoded_length=66560)
    data = b"".join(body.chunks())
    assert data == b"a" * 66560
    assert body.finish() == hashlib.md5(data).hexdigest()


def test_sigv4_streaming_rejects_a_corrupt_chunk():
    raw = _stream_body(corrupt=True)
    source = AwsChunkedSource(LengthSource(io.BytesIO(raw), len(raw)), _stream_chain())
    with pytest.raises(CosServerError, match="SignatureDoesNotMatch"):
        while source.read(4096):
            pass


def test_http_chunked_and_unsigned_trailer_bodies():
    framed = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
    body = RequestBody(ChunkedSource(io.BufferedReader(io.BytesIO(framed))))
    assert b"".join(body.chunks()) == b"hello world"
    inner = b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    source = AwsChunkedSource(LengthSource(io.BytesIO(inner), len(inner)), None)
    assert b"".join(iter(lambda: source.read(2), b"")) == b"abc"


def test_request_body_checks_md5_sha256_and_size():
    data = b"payload"
    md5 = hashlib.md5(data).digest()
    body = RequestBody(LengthSource(io.BytesIO(data), len(data)), decoded_length=len(data),
                       content_md5=md5, sha256=hashlib.sha256(data).hexdigest())
    assert body.finish() == md5.hex()
    bad = RequestBody(LengthSource(io.BytesIO(data), len(data)), content_md5=b"x" * 16)
    with pytest.raises(CosServerError, match="BadDigest"):
        bad.finish()
    bad = RequestBody(LengthSource(io.BytesIO(data), len(data)), sha256="0" * 64)
    with pytest.raises(CosServerError, match="XAmzContentSHA256Mismatch"):
        bad.finish()
    big = RequestBody(LengthSource(io.BytesIO(data), len(data)), decoded_length=len(data),
                      max_size=3)
    with pytest.raises(CosServerError, match="EntityTooLarge"):
        big.read()


# -- listing ----------------------------------------------------------------------

class _Entry:
    def __init__(self, key: str) -> None:
        self.key = key.encode()


def _fetcher(keys: list[str]):
    entries = sorted((_Entry(k) for k in keys), key=lambda e: e.key)

    def fetch(start, inclusive, stop, limit):
        found = [e for e in entries if (e.key >= start if inclusive else e.key > start)
                 and (stop is None or e.key < stop)]
        return found[:limit]
    return fetch


def _keys(result) -> list[str]:
    return [e.key.decode() for e in result.contents]


KEYS = ["a", "b/1", "b/2", "b/c/3", "c", "d/4", "e"]


def test_listing_delimiter_groups_prefixes():
    page = list_page(_fetcher(KEYS), delimiter=b"/")
    assert _keys(page) == ["a", "c", "e"]
    assert page.common_prefixes == [b"b/", b"d/"]
    assert not page.is_truncated and page.next_marker is None
    page = list_page(_fetcher(KEYS), prefix=b"b/", delimiter=b"/")
    assert (_keys(page), page.common_prefixes) == (["b/1", "b/2"], [b"b/c/"])


def test_listing_pages_count_prefixes_and_resume_after_next_marker():
    fetch = _fetcher(KEYS)
    seen, marker = [], b""
    while True:
        page = list_page(fetch, delimiter=b"/", marker=marker, max_keys=2)
        seen += _keys(page) + [p.decode() for p in page.common_prefixes]
        assert len(page.contents) + len(page.common_prefixes) <= 2
        if not page.is_truncated:
            break
        marker = page.next_marker
    assert sorted(seen) == ["a", "b/", "c", "d/", "e"]


def test_listing_of_many_folders_reads_few_rows_past_each():
    # 200 folders of 50 keys each and 10 plain keys at the end: the delimiter
    # listing must not read a page of rows after each folder to use one of them.
    keys = [f"d{i:03}/k{j:02}" for i in range(200) for j in range(50)]
    keys += [f"z{j}" for j in range(10)]
    inner = _fetcher(keys)
    rows = 0

    def counting(start, inclusive, stop, limit):
        nonlocal rows
        found = inner(start, inclusive, stop, limit)
        rows += len(found)
        return found
    page = list_page(counting, delimiter=b"/")
    assert len(page.common_prefixes) == 200 and _keys(page) == [f"z{j}" for j in range(10)]
    assert rows <= 200 * 16 + 10 + 16
    # A page that ends inside a run of keys, and resuming it, still see every key.
    page = list_page(_fetcher(keys), prefix=b"d007/", max_keys=30)
    assert len(page.contents) == 30 and page.is_truncated
    rest = list_page(_fetcher(keys), prefix=b"d007/", marker=page.next_marker)
    assert _keys(page) + _keys(rest) == [f"d007/k{j:02}" for j in range(50)]


def test_listing_marker_is_exclusive_and_byte_ordered():
    keys = ["a", "Z", "é", "~", "a/b"]
    page = list_page(_fetcher(keys))
    assert _keys(page) == sorted(keys, key=lambda k: k.encode())
    assert _keys(list_page(_fetcher(keys), marker=b"a")) == ["a/b", "~", "é"]
    assert list_page(_fetcher(keys), max_keys=0).contents == []


def test_successor():
    assert successor(b"ab") == b"ac"
    assert successor(b"a\xff") == b"b"
    assert successor(b"\xff\xff") is None


# -- routing ----------------------------------------------------------------------

def test_routing_by_host_and_path():
    assert route("b-1250000000.cos.ap-guangzhou.myqcloud.com", "/x/y") == \
        Target("b-1250000000", "x/y", virtual_host=True)
    assert route("b-1.cos.ap-beijing.myqcloud.com:8080", "/") == Target("b-1", "", True)
    assert route("127.0.0.1:9000", "/b-1/k/") == Target("b-1", "k/", False)
    assert route("127.0.0.1:9000", "/b-1") == Target("b-1", "", False)
    assert route("127.0.0.1", "/") == Target(None, "", False)
    assert route("b-1.localhost:80", "/k", host_suffix="localhost") == Target("b-1", "k", True)
    assert route("127.0.0.1", "/_admin/stats").admin
    assert not route("b-1.cos.ap-guangzhou.myqcloud.com", "/_admin/stats").admin
    assert decode_path("/a%20b/%E8%85%BE+%2B?x=1") == "/a b/腾++"
    with pytest.raises(CosServerError, match="InvalidURI"):
        decode_path("/%FF")


@pytest.mark.parametrize("method, key, query, copy, expected", [
    ("GET", "", {}, False, "ListObjects"),
    ("GET", "", {"uploads": ""}, False, "ListMultipartUploads"),
    ("POST", "", {"delete": ""}, False, "DeleteMultipleObjects"),
    ("HEAD", "", {}, False, "HeadBucket"),
    ("PUT", "", {}, False, "PutBucket"),
    ("GET", "k", {}, False, "GetObject"),
    ("GET", "k", {"uploadId": "u"}, False, "ListParts"),
    ("PUT", "k", {}, True, "PutObjectCopy"),
    ("PUT", "k", {"partNumber": "1", "uploadId": "u"}, True, "UploadPartCopy"),
    ("PUT", "k", {"partNumber": "1", "uploadId": "u"}, False, "UploadPart"),
    ("POST", "k", {"append": "", "position": "0"}, False, "AppendObject"),
    ("POST", "k", {"uploads": ""}, False, "InitiateMultipartUpload"),
    ("POST", "k", {"uploadId": "u"}, False, "CompleteMultipartUpload"),
    ("DELETE", "k", {"uploadId": "u"}, False, "AbortMultipartUpload"),
    ("DELETE", "k", {}, False, "DeleteObject"),
    ("GET", "k", {"acl": ""}, False, "Unsupported"),
])
def test_operation_names(method, key, query, copy, expected):
    assert operation(method, Target("b-1", key, True), query, copy) == expected


# -- faults and stats -------------------------------------------------------------

def test_fault_fields_fall_back_to_star_and_default_errors_alternate():
    table = FaultTable()
    table.set(*parse_fault({"op": "*", "latency_ms": 5}))
    table.set(*parse_fault({"op": "GetObject", "error_rate": 1.0, "answer_latency_ms": 7}))
    statuses = [table.decide("GetObject").error_status for _ in range(4)]
    assert sorted(set(statuses)) == [500, 503]
    assert table.decide("GetObject").latency_s == pytest.approx(0.005)
    assert table.decide("GetObject").answer_latency_s == pytest.approx(0.007)
    assert table.decide("PutObject").answer_latency_s == 0
    assert table.decide("PutObject").error_status is None
    table.set(*parse_fault({"op": "GetObject", "error_status": 404}))
    assert table.decide("GetObject").error_status == 404
    table.clear()
    assert table.decide("GetObject") == table.decide("HeadObject")
    for bad in ({"op": "Nope"}, {"error_rate": 2}, {"error_status": 200}, {"latency_ms": -1},
                {"answer_latency_ms": True}, {"typo": 1}):
        with pytest.raises(ValueError):
            parse_fault(bad)


def test_stats_count_concurrency():
    stats = Stats()
    stats.begin("GetObject")
    stats.begin("GetObject")
    stats.end("GetObject")
    stats.add("GetObject", bytes_out=10, errors=1)
    snapshot = stats.snapshot()["GetObject"]
    assert snapshot == {"count": 2, "errors": 1, "bytes_in": 0, "bytes_out": 10,
                        "max_concurrent": 2, "injected": 0}
    stats.reset()
    assert stats.snapshot()["GetObject"]["max_concurrent"] == 1  # one still in flight


# -- authentication decisions -----------------------------------------------------

CREDS = Credentials("AKIDid", "secret")


def _cos_view(secret_id: str, secret_key: str, start: int, end: int) -> RequestView:
    key_time = f"{start};{end}"
    headers = [("Host", "b-1.cos.ap-guangzhou.myqcloud.com")]
    http = cos_signature.http_string("GET", "/k", {}, cos_signature.encode_pairs(headers))
    signature = cos_signature.signature(secret_key, key_time, key_time, http)
    authorization = (f"q-sign-algorithm=sha1&q-ak={secret_id}&q-sign-time={key_time}"
                     f"&q-key-time={key_time}&q-header-list=host&q-url-param-list="
                     f"&q-signature={signature}")
    return RequestView("GET", "/k", "", [], headers + [("Authorization", authorization)],
                       ["/k"], False)


@pytest.mark.parametrize("secret_id, secret_key, start, end, code", [
    ("AKIDid", "secret", -60, 600, None),
    ("AKIDid", "wrong", -60, 600, "SignatureDoesNotMatch"),
    ("AKIDother", "secret", -60, 600, "InvalidAccessKeyId"),
    ("AKIDid", "secret", -600, -60, "AccessDenied"),
    ("AKIDid", "secret", 3600, 7200, "RequestTimeTooSkewed"),
])
def test_cos_authentication_outcomes(secret_id, secret_key, start, end, code):
    now = int(time.time())
    view = _cos_view(secret_id, secret_key, now + start, now + end)
    if code is None:
        assert authenticate(view, CREDS, False, now).scheme == "cos"
        return
    with pytest.raises(CosServerError) as info:
        authenticate(view, CREDS, False, now)
    assert (info.value.status, info.value.code) == (403, code)
    if code == "AccessDenied":
        assert info.value.message == "Request has expired"


def test_unsigned_requests_need_anonymous():
    view = RequestView("GET", "/k", "", [], [("Host", "h")], ["/k"], False)
    assert authenticate(view, CREDS, True, time.time()).scheme == "anonymous"
    with pytest.raises(CosServerError, match="AccessDenied"):
        authenticate(view, CREDS, False, time.time())
