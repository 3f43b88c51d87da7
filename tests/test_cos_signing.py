"""Signatures against published test vectors and an independent implementation."""

from __future__ import annotations

import hashlib

import pytest

from cosfs.cos.signing import (
    EMPTY_SHA256,
    amz_date,
    cos_key_time,
    encode_query,
    sign_cos,
    sign_s3,
    uri_encode,
)

COS_SECRET_KEY = "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"
COS_SECRET_ID = "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q"
COS_HOST = "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def test_cos_vector_1_put_with_headers() -> None:
    headers = {
        "Date": "Thu, 16 May 2019 06:45:51 GMT",
        "Host": COS_HOST,
        "Content-Type": "text/plain",
        "Content-Length": "13",
        "Content-MD5": "mQ/fVh815F3k6TAUm8m0eg==",
        "x-cos-acl": "private",
        "x-cos-grant-read": 'uin="100000000011"',
    }
    sig = sign_cos(COS_SECRET_KEY, "PUT", "/exampleobject(腾讯云)", {}, headers,
                   "1557989151;1557996351")
    assert sig.sign_key == "eb2519b498b02ac213cb1f3d1a3d27a3b3c9bc5f"
    assert _sha1(sig.http_string) == "8b2751e77f43a0995d6e9eb9477f4b685cca4172"
    assert sig.signature == "3b8851a11a569213c17ba8fa7dcf2abec6935172"
    assert sig.header_list == (
        "content-length;content-md5;content-type;date;host;x-cos-acl;x-cos-grant-read"
    )
    assert sig.param_list == ""


def test_cos_vector_2_get_with_query() -> None:
    params = {
        "response-content-type": "application/octet-stream",
        "response-cache-control": "max-age=600",
    }
    headers = {"Date": "Thu, 16 May 2019 06:55:53 GMT", "Host": COS_HOST}
    sig = sign_cos(COS_SECRET_KEY, "GET", "/exampleobject(腾讯云)", params, headers,
                   "1557989753;1557996953")
    assert sig.sign_key == "937914bf490e9e8c189836aad2052e4feeb35eaf"
    assert sig.param_list == "response-cache-control;response-content-type"
    assert sig.header_list == "date;host"
    assert _sha1(sig.http_string) == "54ecfe22f59d3514fdc764b87a32d8133ea611e6"
    assert sig.signature == "01681b8c9d798a678e43b685a9f1bba0f6c0e012"
    assert sig.authorization(COS_SECRET_ID) == (
        f"q-sign-algorithm=sha1&q-ak={COS_SECRET_ID}"
        "&q-sign-time=1557989753;1557996953&q-key-time=1557989753;1557996953"
        "&q-header-list=date;host&q-url-param-list=response-cache-control;response-content-type"
        "&q-signature=01681b8c9d798a678e43b685a9f1bba0f6c0e012"
    )


def test_cos_vector_3_lower_case_headers() -> None:
    headers = {
        "host": "testbucket-125000000.cos.ap-guangzhou.myqcloud.com",
        "x-cos-content-sha1": "db8ac1c259eb89d4a131b253bacfca5f319d54f2",
        "x-cos-stroage-class": "nearline",
    }
    sig = sign_cos("AKIDZfbOA78asKUYBcXFrJD0a1ICvR98JM", "PUT", "/testfile2", {}, headers,
                   "1480932292;1481012292")
    assert sig.signature == "ce4ac0ecbcdb30538b3fee0a97cc6389694ce53a"


def test_cos_parameters_without_value_and_upper_case_names() -> None:
    sig = sign_cos("k", "POST", "/a b", {"uploadId": "X/Y", "append": None}, {"Host": "h"},
                   "1;2")
    # Names are encoded then lower-cased and sorted; a bare parameter signs as "name=".
    assert sig.param_list == "append;uploadid"
    assert sig.http_string == "post\n/a b\nappend=&uploadid=X%2FY\nhost=h\n"


def test_cos_key_time_window() -> None:
    assert cos_key_time(1000.7) == "940;4600"
    assert cos_key_time(1000, before=0, after=10) == "1000;1010"


def test_uri_encode_and_query() -> None:
    assert uri_encode("a b+c/%~_-.") == "a%20b%2Bc%2F%25~_-."
    assert uri_encode("腾") == "%E8%85%BE"
    assert encode_query({"uploads": None, "prefix": "a b+", "max-keys": "10"}) == (
        "uploads&prefix=a%20b%2B&max-keys=10"
    )


# -- SigV4 -------------------------------------------------------------------------------

AWS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_HOST = "examplebucket.s3.amazonaws.com"
AWS_DATE = "20130524T000000Z"


def _aws_headers(payload_hash: str, **extra: str) -> dict[str, str]:
    return {"Host": AWS_HOST, "x-amz-date": AWS_DATE, "x-amz-content-sha256": payload_hash,
            **extra}


def test_sigv4_documented_get_object_with_range() -> None:
    """The "GET Object" example of the S3 SigV4 header-authentication documentation."""
    sig = sign_s3(AWS_KEY, "us-east-1", "GET", "/test.txt", {},
                  _aws_headers(EMPTY_SHA256, Range="bytes=0-9"), EMPTY_SHA256, AWS_DATE)
    assert sig.canonical_request == (
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
        f"x-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\n"
        f"host;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
    )
    assert sig.string_to_sign == (
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    )
    assert sig.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    assert sig.authorization("AKIAIOSFODNN7EXAMPLE") == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_sigv4_documented_list_objects() -> None:
    """The "GET Bucket (List Objects)" example: query parameters sorted and encoded."""
    sig = sign_s3(AWS_KEY, "us-east-1", "GET", "/", {"max-keys": "2", "prefix": "J"},
                  _aws_headers(EMPTY_SHA256), EMPTY_SHA256, AWS_DATE)
    assert sig.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_sigv4_documented_bare_subresource() -> None:
    """The "GET Bucket Lifecycle" example: ``?lifecycle`` signs as ``lifecycle=``."""
    sig = sign_s3(AWS_KEY, "us-east-1", "GET", "/", {"lifecycle": None},
                  _aws_headers(EMPTY_SHA256), EMPTY_SHA256, AWS_DATE)
    assert sig.signature == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"


def test_sigv4_matches_botocore() -> None:
    """An independent implementation agrees on an awkward request."""
    botocore_auth = pytest.importorskip("botocore.auth")
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = b"part data"
    payload_hash = hashlib.sha256(body).hexdigest()
    path = "/bucket/" + uri_encode("dir/a b+c%.txt").replace("%2F", "/")
    params = {"partNumber": "3", "uploadId": "abc+/="}
    headers = _aws_headers(payload_hash, **{"x-amz-meta-mode": "33188",
                                            "Content-Type": "text/plain"})
    ours = sign_s3("secret", "ap-guangzhou", "PUT", path, params, headers, payload_hash,
                   AWS_DATE)

    request = AWSRequest("PUT", f"http://{AWS_HOST}{path}?{encode_query(params)}",
                         data=body, headers=dict(headers))
    request.context["timestamp"] = AWS_DATE
    signer = botocore_auth.S3SigV4Auth(Credentials("id", "secret"), "s3", "ap-guangzhou")
    assert signer.canonical_request(request) == ours.canonical_request
    theirs = signer.signature(signer.string_to_sign(request, ours.canonical_request), request)
    assert theirs == ours.signature


def test_amz_date() -> None:
    assert amz_date(1369353600) == "20130524T000000Z"
