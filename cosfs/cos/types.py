"""Plain values exchanged between the COS client and its callers.

Nothing here performs I/O; the filesystem layer builds on these types without
knowing how requests are signed or sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD Object (or one ``<Contents>`` entry of a listing) says of a key.

    ``metadata`` holds user metadata with the ``x-cos-meta-`` (or ``x-amz-meta-``)
    prefix removed and names lower-cased, e.g. ``{"mode": "33188"}``. A listing
    entry carries no metadata and no content type: ``from_listing`` is True then.
    """

    key: str
    size: int
    etag: str  # without the surrounding quotes
    last_modified: float  # seconds since the epoch, UTC
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
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
