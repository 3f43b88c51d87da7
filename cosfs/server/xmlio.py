"""XML documents of the COS API: building answers, parsing request bodies.

Answers are built from plain Python values, not a DOM, so building is cheap and the
output byte-exact: ``render("Root", [("Tag", "text"), ("Group", [("Inner", 1)])])``.
A value of ``None`` omits the element; ``True``/``False`` become ``true``/``false``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from xml.sax.saxutils import escape

from .errors import CosServerError

PROLOG = "<?xml version='1.0' encoding='utf-8' ?>"
# The owner every listing names: this server has one account.
OWNER = [("ID", "qcs::cam::uin/100000000001:uin/100000000001"), ("DisplayName", "100000000001")]

Node = tuple[str, object]


def _text(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return escape(str(value))


def _render_into(out: list[str], nodes: Sequence[Node]) -> None:
    for tag, value in nodes:
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out.append(f"<{tag}>")
            _render_into(out, value)
            out.append(f"</{tag}>")
        else:
            out.append(f"<{tag}>{_text(value)}</{tag}>")


def render(root: str, nodes: Sequence[Node]) -> bytes:
    """The document ``<root>nodes</root>`` with the COS prolog, UTF-8 encoded."""
    out = [PROLOG]
    _render_into(out, [(root, list(nodes))])
    return "".join(out).encode("utf-8")


def error_document(code: str, message: str, resource: str, request_id: str,
                   trace_id: str) -> bytes:
    """The COS error body; every field is filled because the official SDK needs
    Code, Message, Resource and RequestId non-empty."""
    return render("Error", [("Code", code), ("Message", message), ("Resource", resource),
                            ("RequestId", request_id), ("TraceId", trace_id)])


# -- request bodies ------------------------------------------------------------

def _local(tag: str) -> str:
    """The tag without its namespace (S3 SDKs send xmlns="http://s3.amazonaws...")."""
    return tag.rsplit("}", 1)[-1]


def _parse(body: bytes, root: str) -> ET.Element:
    try:
        element = ET.fromstring(body)
    except ET.ParseError as exc:
        raise CosServerError("MalformedXML", f"The XML you provided was not well-formed: "
                             f"{exc}") from None
    if _local(element.tag) != root:
        raise CosServerError("MalformedXML", f"The XML root must be <{root}>")
    return element


def _children(element: ET.Element, tag: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == tag]


def _child_text(element: ET.Element, tag: str) -> str | None:
    found = _children(element, tag)
    return (found[0].text or "") if found else None


def parse_delete(body: bytes) -> tuple[bool, list[str]]:
    """``<Delete><Quiet/><Object><Key/></Object>...`` -> (quiet, keys)."""
    element = _parse(body, "Delete")
    quiet = (_child_text(element, "Quiet") or "false").strip().lower() == "true"
    keys = []
    for obj in _children(element, "Object"):
        key = _child_text(obj, "Key")
        if key is None:
            raise CosServerError("MalformedXML", "Every <Object> needs a <Key>")
        keys.append(key)
    return quiet, keys


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """``<CompleteMultipartUpload><Part><PartNumber/><ETag/>...`` -> [(number, etag)]
    in document order; the ETag is returned without quotes."""
    element = _parse(body, "CompleteMultipartUpload")
    parts = []
    for part in _children(element, "Part"):
        number, etag = _child_text(part, "PartNumber"), _child_text(part, "ETag")
        if number is None or etag is None:
            raise CosServerError("MalformedXML", "Every <Part> needs <PartNumber> and <ETag>")
        try:
            parts.append((int(number.strip()), etag.strip().strip('"')))
        except ValueError:
            raise CosServerError("MalformedXML", f"Bad PartNumber {number!r}") from None
    if not parts:
        raise CosServerError("MalformedXML", "CompleteMultipartUpload lists no part")
    return parts
