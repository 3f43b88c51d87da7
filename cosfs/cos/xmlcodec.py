"""XML bodies of the COS (and S3) API: parsing answers, building requests.

Pure functions over bytes. Namespaces are ignored on input (S3 answers carry
``xmlns="http://s3.amazonaws.com/doc/2006-03-01/"``, COS answers none), so one parser
serves both dialects. Malformed input raises :class:`XmlError`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from .types import DeleteError, ListPage, ObjectInfo, PartInfo, UploadInfo

S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


class XmlError(ValueError):
    """A body that is not the XML document the operation answers with."""


def parse(body: bytes) -> ET.Element:
    """The root element, with every namespace removed from tag names."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise XmlError(f"malformed XML: {e}") from None
    for elem in root.iter():
        if isinstance(elem.tag, str) and elem.tag.startswith("{"):
            elem.tag = elem.tag.split("}", 1)[1]
    return root


def _text(elem: ET.Element, name: str, default: str = "") -> str:
    child = elem.find(name)
    if child is None or child.text is None:
        return default
    return child.text


def _int(elem: ET.Element, name: str, default: int = 0) -> int:
    text = _text(elem, name)
    try:
        return int(text) if text else default
    except ValueError:
        raise XmlError(f"<{name}> is not an integer: {text!r}") from None


def _bool(elem: ET.Element, name: str) -> bool:
    return _text(elem, name).strip().lower() == "true"


def strip_etag(etag: str) -> str:
    return etag.strip().strip('"')


def parse_iso_time(text: str) -> float:
    """``2019-05-16T06:45:51.000Z`` -> seconds since the epoch (0.0 when absent)."""
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise XmlError(f"bad timestamp {text!r}") from None


def _expect(root: ET.Element, *tags: str) -> None:
    if root.tag not in tags:
        raise XmlError(f"expected <{'|'.join(tags)}>, got <{root.tag}>")


# -- errors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorBody:
    code: str
    message: str
    request_id: str


def parse_error(body: bytes) -> ErrorBody | None:
    """The ``<Error>`` document in ``body``, or None if ``body`` is not one."""
    if not body or b"<Error" not in body[:512]:
        return None
    try:
        root = parse(body)
    except XmlError:
        return None
    if root.tag != "Error":
        return None
    return ErrorBody(_text(root, "Code"), _text(root, "Message"), _text(root, "RequestId"))


# -- listings ---------------------------------------------------------------------------


def _decoder(root: ET.Element, assume_url_encoded: bool):
    """Keys come percent-encoded when the answer says ``EncodingType=url``, or when
    the caller knows the server encodes without saying so. ``unquote`` (never
    ``unquote_plus``): a ``+`` in a key is a plus."""
    encoding = _text(root, "EncodingType").strip().lower()
    if encoding == "url" or (assume_url_encoded and not encoding):
        return unquote
    return lambda s: s


def parse_list_objects(body: bytes, assume_url_encoded: bool = False) -> ListPage:
    root = parse(body)
    _expect(root, "ListBucketResult")
    decode = _decoder(root, assume_url_encoded)
    contents = [
        ObjectInfo(
            key=decode(_text(c, "Key")),
            size=_int(c, "Size"),
            etag=strip_etag(_text(c, "ETag")),
            last_modified=parse_iso_time(_text(c, "LastModified")),
            storage_class=_text(c, "StorageClass") or "STANDARD",
            from_listing=True,
        )
        for c in root.findall("Contents")
    ]
    prefixes = [decode(_text(p, "Prefix")) for p in root.findall("CommonPrefixes")]
    return ListPage(
        prefix=decode(_text(root, "Prefix")),
        contents=contents,
        common_prefixes=prefixes,
        is_truncated=_bool(root, "IsTruncated"),
        next_marker=decode(_text(root, "NextMarker")),
    )


@dataclass(frozen=True)
class PartsPage:
    parts: list[PartInfo]
    is_truncated: bool
    next_marker: int


def parse_list_parts(body: bytes) -> PartsPage:
    root = parse(body)
    _expect(root, "ListPartsResult", "ListPartsResponse")  # the latter: moto's S3
    parts = [
        PartInfo(_int(p, "PartNumber"), strip_etag(_text(p, "ETag")), _int(p, "Size"))
        for p in root.findall("Part")
    ]
    return PartsPage(parts, _bool(root, "IsTruncated"), _int(root, "NextPartNumberMarker"))


@dataclass(frozen=True)
class UploadsPage:
    uploads: list[UploadInfo]
    is_truncated: bool
    next_key_marker: str
    next_upload_id_marker: str


def parse_list_uploads(body: bytes, assume_url_encoded: bool = False) -> UploadsPage:
    root = parse(body)
    _expect(root, "ListMultipartUploadsResult")
    decode = _decoder(root, assume_url_encoded)
    uploads = [
        UploadInfo(
            key=decode(_text(u, "Key")),
            upload_id=_text(u, "UploadId"),
            initiated=parse_iso_time(_text(u, "Initiated")),
        )
        for u in root.findall("Upload")
    ]
    return UploadsPage(
        uploads,
        _bool(root, "IsTruncated"),
        decode(_text(root, "NextKeyMarker")),
        _text(root, "NextUploadIdMarker"),
    )


# -- single-result answers ------------------------------------------------------------


def parse_upload_id(body: bytes) -> str:
    root = parse(body)
    _expect(root, "InitiateMultipartUploadResult")
    upload_id = _text(root, "UploadId")
    if not upload_id:
        raise XmlError("no <UploadId> in the answer")
    return upload_id


def parse_result_etag(body: bytes) -> str:
    """The ETag of ``<CopyObjectResult>``, ``<CopyPartResult>`` or
    ``<CompleteMultipartUploadResult>``; a result without one is a failure."""
    root = parse(body)
    _expect(root, "CopyObjectResult", "CopyPartResult", "CompleteMultipartUploadResult")
    etag = strip_etag(_text(root, "ETag"))
    if not etag:
        raise XmlError(f"no <ETag> in <{root.tag}>")
    return etag


def parse_delete_result(body: bytes) -> list[DeleteError]:
    root = parse(body)
    _expect(root, "DeleteResult")
    return [
        DeleteError(_text(e, "Key"), _text(e, "Code"), _text(e, "Message"))
        for e in root.findall("Error")
    ]


# -- request bodies -------------------------------------------------------------------


def _document(tag: str, xmlns: str | None) -> ET.Element:
    root = ET.Element(tag)
    if xmlns:
        root.set("xmlns", xmlns)
    return root


def _serialize(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def build_delete(keys: Iterable[str], quiet: bool = True, xmlns: str | None = None) -> bytes:
    root = _document("Delete", xmlns)
    ET.SubElement(root, "Quiet").text = "true" if quiet else "false"
    for key in keys:
        ET.SubElement(ET.SubElement(root, "Object"), "Key").text = key
    return _serialize(root)


def build_complete(parts: Iterable[PartInfo], xmlns: str | None = None) -> bytes:
    root = _document("CompleteMultipartUpload", xmlns)
    for part in parts:
        elem = ET.SubElement(root, "Part")
        ET.SubElement(elem, "PartNumber").text = str(part.part_number)
        ET.SubElement(elem, "ETag").text = f'"{part.etag}"'
    return _serialize(root)
