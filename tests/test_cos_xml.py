"""Every XML shape the client reads or writes, in both dialects (COS and S3)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from cosfs.cos.client import continuation_marker
from cosfs.cos.types import PartInfo
from cosfs.cos.xmlcodec import (
    S3_XMLNS,
    XmlError,
    build_complete,
    build_delete,
    parse_delete_result,
    parse_error,
    parse_list_objects,
    parse_list_parts,
    parse_list_uploads,
    parse_result_etag,
    parse_upload_id,
)

T0 = datetime(2019, 5, 16, 6, 45, 51, tzinfo=UTC).timestamp()

COS_LISTING = b"""<?xml version='1.0' encoding='utf-8' ?>
<ListBucketResult>
  <Name>examplebucket-1250000000</Name>
  <EncodingType>url</EncodingType>
  <Prefix>dir%2Fa%20b%2B</Prefix>
  <Marker/>
  <MaxKeys>2</MaxKeys>
  <Delimiter>%2F</Delimiter>
  <IsTruncated>true</IsTruncated>
  <NextMarker>dir%2Fa%20b%2Bz%25%23%3F</NextMarker>
  <Contents>
    <Key>dir%2Fa%20b%2Bz%25%23%3F</Key>
    <LastModified>2019-05-16T06:45:51.000Z</LastModified>
    <ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag>
    <Size>13</Size>
    <Owner><ID>1250000000</ID><DisplayName>1250000000</DisplayName></Owner>
    <StorageClass>STANDARD_IA</StorageClass>
  </Contents>
  <CommonPrefixes><Prefix>dir%2Fa%20b%2B%E8%85%BE%2F</Prefix></CommonPrefixes>
</ListBucketResult>"""


def test_list_objects_url_encoded() -> None:
    page = parse_list_objects(COS_LISTING)
    assert page.prefix == "dir/a b+"
    assert page.is_truncated
    assert page.next_marker == "dir/a b+z%#?"
    [entry] = page.contents
    # unquote, never unquote_plus: "+" stays a plus.
    assert entry.key == "dir/a b+z%#?"
    assert entry.size == 13
    assert entry.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert entry.last_modified == T0
    assert entry.storage_class == "STANDARD_IA"
    assert entry.from_listing and entry.metadata == {}
    assert page.common_prefixes == ["dir/a b+腾/"]


def test_list_objects_s3_namespace_not_encoded() -> None:
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="{S3_XMLNS}"><Name>b</Name><Prefix></Prefix>
<IsTruncated>false</IsTruncated>
<Contents><Key>100%+sure</Key><LastModified>2019-05-16T06:45:51Z</LastModified>
<ETag>"abc-2"</ETag><Size>5</Size></Contents></ListBucketResult>""".encode()
    page = parse_list_objects(body, assume_url_encoded=False)
    assert [c.key for c in page.contents] == ["100%+sure"]
    assert page.contents[0].etag == "abc-2"
    assert page.contents[0].storage_class == "STANDARD"
    assert not page.is_truncated and page.next_marker == "" and page.common_prefixes == []


def test_list_objects_encoding_assumed_when_not_echoed() -> None:
    body = (b"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a%20b</Key>"
            b"<Size>0</Size></Contents></ListBucketResult>")
    assert parse_list_objects(body, assume_url_encoded=True).contents[0].key == "a b"
    assert parse_list_objects(body, assume_url_encoded=False).contents[0].key == "a%20b"


def test_error_body() -> None:
    body = b"""<?xml version='1.0' encoding='utf-8' ?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>
<Resource>examplebucket-1250000000.cos.ap-beijing.myqcloud.com/x</Resource>
<RequestId>NWQ3YjU2YzRfMjRh</RequestId><TraceId>OGVmYzZiMmQ3</TraceId></Error>"""
    err = parse_error(body)
    assert err is not None
    assert (err.code, err.message, err.request_id) == (
        "NoSuchKey", "The specified key does not exist.", "NWQ3YjU2YzRfMjRh")


@pytest.mark.parametrize("body", [b"", b"not xml", b"<CopyObjectResult/>", b"<Error"])
def test_error_body_absent(body: bytes) -> None:
    assert parse_error(body) is None


def test_initiate_multipart() -> None:
    body = (b"<InitiateMultipartUploadResult><Bucket>b-1</Bucket><Key>k</Key>"
            b"<UploadId>1585130821cbb7df1d11846c073ad648</UploadId>"
            b"</InitiateMultipartUploadResult>")
    assert parse_upload_id(body) == "1585130821cbb7df1d11846c073ad648"
    with pytest.raises(XmlError):
        parse_upload_id(b"<InitiateMultipartUploadResult/>")


@pytest.mark.parametrize("tag", ["CopyObjectResult", "CopyPartResult",
                                 "CompleteMultipartUploadResult"])
def test_result_etag(tag: str) -> None:
    body = (f'<{tag} xmlns="{S3_XMLNS}"><ETag>"ba82b57cfdfda8bd17ad4e5879ebb4fe-2"</ETag>'
            f"<LastModified>2019-05-16T06:45:51.000Z</LastModified></{tag}>").encode()
    assert parse_result_etag(body) == "ba82b57cfdfda8bd17ad4e5879ebb4fe-2"


def test_result_without_etag_is_a_failure() -> None:
    with pytest.raises(XmlError):
        parse_result_etag(b"<CopyObjectResult><LastModified/></CopyObjectResult>")
    with pytest.raises(XmlError):
        parse_result_etag(b"<Error><Code>InternalError</Code></Error>")


def test_200_with_error_body_is_detected() -> None:
    body = b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>m</Message></Error>"
    err = parse_error(body)
    assert err is not None and err.code == "InternalError"


def test_delete_result() -> None:
    body = b"""<DeleteResult><Deleted><Key>a</Key></Deleted>
<Error><Key>b&amp;c</Key><Code>AccessDenied</Code><Message>no</Message></Error>
</DeleteResult>"""
    [err] = parse_delete_result(body)
    assert (err.key, err.code, err.message) == ("b&c", "AccessDenied", "no")
    assert parse_delete_result(b"<DeleteResult/>") == []


def test_list_parts() -> None:
    body = b"""<ListPartsResult><Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId>
<PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>2</NextPartNumberMarker>
<MaxParts>2</MaxParts><IsTruncated>true</IsTruncated>
<Part><PartNumber>1</PartNumber><LastModified>2019-05-16T06:45:51.000Z</LastModified>
<ETag>"aa"</ETag><Size>1048576</Size></Part>
<Part><PartNumber>2</PartNumber><ETag>"bb"</ETag><Size>7</Size></Part>
</ListPartsResult>"""
    page = parse_list_parts(body)
    assert page.parts == [PartInfo(1, "aa", 1048576), PartInfo(2, "bb", 7)]
    assert page.is_truncated and page.next_marker == 2


def test_list_uploads() -> None:
    body = b"""<ListMultipartUploadsResult><Bucket>b</Bucket><EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated><NextKeyMarker>a%2Bb%20c</NextKeyMarker>
<NextUploadIdMarker>u2</NextUploadIdMarker>
<Upload><Key>a%2Bb%20c</Key><UploadId>u2</UploadId><StorageClass>STANDARD</StorageClass>
<Initiated>2019-05-16T06:45:51.000Z</Initiated></Upload></ListMultipartUploadsResult>"""
    page = parse_list_uploads(body)
    [upload] = page.uploads
    assert (upload.key, upload.upload_id, upload.initiated) == ("a+b c", "u2", T0)
    assert page.is_truncated
    assert (page.next_key_marker, page.next_upload_id_marker) == ("a+b c", "u2")


@pytest.mark.parametrize("parser", [parse_list_objects, parse_list_parts, parse_list_uploads,
                                    parse_delete_result, parse_upload_id])
def test_malformed_or_unexpected(parser) -> None:
    with pytest.raises(XmlError):
        parser(b"<ListBucketResult><unclosed>")
    with pytest.raises(XmlError):
        parser(b"<SomethingElse/>")


def test_bad_numbers_and_times() -> None:
    with pytest.raises(XmlError):
        parse_list_objects(b"<ListBucketResult><Contents><Key>a</Key><Size>x</Size>"
                           b"</Contents></ListBucketResult>")
    with pytest.raises(XmlError):
        parse_list_objects(b"<ListBucketResult><Contents><Key>a</Key>"
                           b"<LastModified>yesterday</LastModified></Contents></ListBucketResult>")


def test_build_delete_escapes_keys() -> None:
    keys = ["a&b", "<c>", "d e/", "腾讯"]
    root = ET.fromstring(build_delete(keys))
    assert root.tag == "Delete"
    assert root.findtext("Quiet") == "true"
    assert [o.findtext("Key") for o in root.findall("Object")] == keys


def test_build_delete_s3_namespace() -> None:
    root = ET.fromstring(build_delete(["k"], quiet=False, xmlns=S3_XMLNS))
    assert root.tag == f"{{{S3_XMLNS}}}Delete"
    assert root.findtext(f"{{{S3_XMLNS}}}Quiet") == "false"


def test_build_complete() -> None:
    body = build_complete([PartInfo(1, "aa"), PartInfo(2, "bb")])
    assert body.startswith(b"<?xml")
    root = ET.fromstring(body)
    assert root.tag == "CompleteMultipartUpload"
    assert [(p.findtext("PartNumber"), p.findtext("ETag")) for p in root.findall("Part")] == [
        ("1", '"aa"'), ("2", '"bb"')]


def test_continuation_marker() -> None:
    assert continuation_marker(parse_list_objects(COS_LISTING)) == "dir/a b+z%#?"
    body = (b"<ListBucketResult><IsTruncated>true</IsTruncated>"
            b"<Contents><Key>a/1</Key></Contents><Contents><Key>z</Key></Contents>"
            b"<CommonPrefixes><Prefix>b/</Prefix></CommonPrefixes>"
            b"<CommonPrefixes><Prefix>\xc3\xa9/</Prefix></CommonPrefixes></ListBucketResult>")
    # No NextMarker (S3 without a delimiter): continue after the greatest entry, in
    # UTF-8 byte order, which puts "e-acute/" after "z".
    assert continuation_marker(parse_list_objects(body)) == "\u00e9/"
    assert continuation_marker(parse_list_objects(b"<ListBucketResult/>")) == ""
