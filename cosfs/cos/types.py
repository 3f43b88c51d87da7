"""Plain values exchanged between the COS client and its callers.

Nothing here performs I/O; the filesystem layer builds on these types without
knowing how requests are signed or sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# COS takes user-metadata names of lower-case letters, digits and '-', and values
# of printable ASCII (each header is signed and sent as it is).
_META_NAME = re.compile(r"^[a-z0-9-]+$")


def is_sendable_metadata(name: str, value: str) -> bool:
    """Whether ``x-cos-meta-<name>: <value>`` is a header COS accepts."""
    return bool(_META_NAME.match(name)) and value.isascii() and value.isprintable()


# Headers COS stores with an object besides Content-Type and user metadata; a copy
# that replaces the metadata drops them unless it sends them again.
CONTENT_HEADERS = ("Cache-Control", "Content-Disposition", "Content-Encoding",
                   "Content-Language", "Expires")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What HEAD Object (or one ``<Contents>`` entry of a listing) says of a key.

    ``metadata`` holds user metadata with the ``x-cos-meta-`` (or ``x-amz-meta-``)
    prefix removed and names lower-cased, e.g. ``{"mode": "33188"}``;
    ``content_headers`` those of :data:`CONTENT_HEADERS` the object has. A listing
    entry carries neither, nor a content type: ``from_listing`` is True then.
    """

    key: str
    size: int
    etag: str  # without the surrounding quotes
    last_modified: float  # seconds since the epoch, UTC
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    content_headers: dict[str, str] = field(default_factory=dict)
    appendable: bool = False  # x-cos-object-type: appendable
    storage_class: str = "STANDARD"
    from_listing: bool = False


@dataclass(frozen=True)
class ListPage:
    """One page of List Objects (v1). Keys and prefixes are already URL-decoded."""

    prefix: str
    contents: list[ObjectInfo]
    common_prefixes: list[str]
    is_truncated: bool
    next_marker: str


@dataclass(frozen=True)
class PartInfo:
    part_number: int
    etag: str  # without quotes
    size: int = 0


@dataclass(frozen=True)
class UploadInfo:
    """An in-progress multipart upload, as List Multipart Uploads reports it."""

    key: str
    upload_id: str
    initiated: float  # seconds since the epoch


@dataclass(frozen=True)
class DeleteError:
    key: str
    code: str
    message: str
