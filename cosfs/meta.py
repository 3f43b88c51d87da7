"""POSIX attributes <-> COS object metadata, in the conventions of Tencent's COSFS.

Pure functions and values only (no I/O), so the mapping can be unit-tested and a
bucket stays usable by either tool:

- ``x-cos-meta-mode``: decimal ``st_mode`` including the file-type bits;
- ``x-cos-meta-uid`` / ``x-cos-meta-gid``: decimal ids;
- ``x-cos-meta-mtime``: seconds since the epoch, written as ``SEC`` or
  ``SEC.NNNNNNNNN`` when there are nanoseconds (readers that parse an integer
  take the seconds);
- ``x-cos-meta-xattr``: URL-encoded JSON ``{"name": "base64(value)"}``;
- directories are ``dir/`` markers with ``Content-Type: application/x-directory``;
- symlinks are objects whose content is the target and whose mode has S_IFLNK.

Other user metadata on an object (another tool's ``x-cos-meta-author``) is not
cosfs's to drop: it is kept in ``Attr.foreign`` and written back with cosfs's own
whenever cosfs rewrites the object's metadata or data.

Metadata dicts here use bare names (``"mode"``); the client adds the header prefix.
"""

from __future__ import annotations

import base64
import binascii
import json
import stat
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cosfs.cos.types import ObjectInfo, is_sendable_metadata

DIR_CONTENT_TYPE = "application/x-directory"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# COS refuses requests whose user metadata (names and values) exceeds 2 KB.
METADATA_LIMIT = 2048
META_PREFIX_LEN = len("x-cos-meta-")
# Keys are at most 850 bytes; each path component at most 255 (NAME_MAX).
MAX_KEY_BYTES = 850
NAME_MAX = 255
# The user-metadata names cosfs reads and writes; any other is carried unchanged.
OWN_METADATA = frozenset({"mode", "uid", "gid", "mtime", "xattr"})


@dataclass(frozen=True)
class Defaults:
    """Attributes for objects that carry no cosfs metadata (mount options).

    ``use_metadata`` False (``-o listing_attrs``) treats every object as carrying
    none: a listing then says all there is to know of a name, so listing a
    directory needs no HEAD per object (as goofys and mountpoint-s3 do).
    """

    uid: int = 0
    gid: int = 0
    file_mode: int = 0o644
    dir_mode: int = 0o755
    use_metadata: bool = True


@dataclass(slots=True)
class Attr:
    """What the filesystem knows of one file, directory or symlink.

    ``mode`` includes the type bits. ``etag``/``appendable`` describe the object as
    last seen on the server ('' for a directory without marker or a new file).
    """

    mode: int
    uid: int
    gid: int
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    etag: str = ""
    last_modified: int = 0  # the object's Last-Modified, whole seconds (0: unknown)
    appendable: bool = False
    storage_class: str = "STANDARD"
    xattrs: dict[str, bytes] = field(default_factory=dict)
    # True when mtime was set explicitly (utimens, or x-cos-meta-mtime on the object).
    # Otherwise mtime is "when the data last changed", which the object's
    # Last-Modified already says: no mtime header is written, so metadata stays the
    # same while a file is written and a multipart upload started early needs no
    # metadata fix-up afterwards.
    mtime_set: bool = False
    # True when the attributes came from a listing only (no HEAD yet): mode, uid,
    # gid and mtime are the defaults and Last-Modified, not the object's metadata.
    partial: bool = False
    # The object's, as a HEAD or cosfs's own upload said; '' when only a listing
    # described it, and then neither foreign nor content_headers are known either.
    content_type: str = ""
    # User metadata of other tools (bare names), written back with cosfs's own.
    foreign: dict[str, str] = field(default_factory=dict)
    # The object's Cache-Control, Content-Disposition... (ObjectInfo.content_headers),
    # sent again by a metadata copy, which would drop them otherwise.
    content_headers: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)

    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


def format_mtime(mtime_ns: int) -> str:
    # Sign, then magnitude: divmod would floor -1.5 s to "-2.500000000", which
    # parse_mtime (and any reader of decimal seconds) takes for -2.5 s.
    sign = "-" if mtime_ns < 0 else ""
    sec, nsec = divmod(abs(mtime_ns), 1_000_000_000)
    return f"{sign}{sec}" if nsec == 0 else f"{sign}{sec}.{nsec:09d}"


def parse_mtime(text: str) -> int | None:
    """``SEC`` or ``SEC.FRACTION`` -> nanoseconds; None when malformed."""
    sec, _, frac = text.strip().partition(".")
    if not sec.lstrip("-").isdigit() or (frac and not frac.isdigit()):
        return None
    nsec = int((frac + "000000000")[:9]) if frac else 0
    return int(sec) * 1_000_000_000 + (nsec if not sec.startswith("-") else -nsec)


def encode_xattrs(xattrs: dict[str, bytes]) -> str:
    doc = {name: base64.b64encode(value).decode("ascii") for name, value in sorted(xattrs.items())}
    return urllib.parse.quote(json.dumps(doc, separators=(",", ":")), safe="")


def decode_xattrs(text: str) -> dict[str, bytes]:
    """Lenient: a malformed value yields no xattrs rather than an unreadable file."""
    try:
        doc = json.loads(urllib.parse.unquote(text))
        return {str(k): base64.b64decode(v) for k, v in doc.items()}
    except (ValueError, TypeError, AttributeError, binascii.Error):
        return {}


def _int_meta(meta: dict[str, str], name: str) -> int | None:
    try:
        return int(meta[name])
    except (KeyError, ValueError):
        return None


def attr_from_object(info: ObjectInfo, defaults: Defaults, *, is_dir: bool = False) -> Attr:
    """Attributes of an object (a file, a symlink, or with ``is_dir`` a ``dir/``
    marker). Metadata that is missing or malformed falls back to the defaults, and
    so does all of it unless ``defaults.use_metadata``."""
    meta = info.metadata if defaults.use_metadata else {}
    mtime_ns = int(info.last_modified * 1_000_000_000)
    parsed = parse_mtime(meta["mtime"]) if "mtime" in meta else None
    if parsed is not None:  # 0 (the epoch) is a time like any other
        mtime_ns = parsed
    mode = _int_meta(meta, "mode")
    if is_dir:
        perm = stat.S_IMODE(mode) if mode is not None else defaults.dir_mode
        mode = stat.S_IFDIR | perm
    elif mode is None or stat.S_IFMT(mode) not in (stat.S_IFREG, stat.S_IFLNK, 0):
        mode = stat.S_IFREG | (stat.S_IMODE(mode) if mode is not None else defaults.file_mode)
    elif stat.S_IFMT(mode) == 0:
        mode |= stat.S_IFREG
    uid = _int_meta(meta, "uid")
    gid = _int_meta(meta, "gid")
    return Attr(
        mode=mode,
        uid=defaults.uid if uid is None else uid,
        gid=defaults.gid if gid is None else gid,
        size=0 if is_dir else info.size,
        mtime_ns=mtime_ns,
        ctime_ns=mtime_ns,
        etag=info.etag,
        last_modified=int(info.last_modified),
        appendable=info.appendable,
        xattrs=decode_xattrs(meta["xattr"]) if "xattr" in meta else {},
        mtime_set=parse_mtime(meta.get("mtime", "")) is not None,
        # Without metadata to read, a listing's attributes are the whole truth.
        partial=info.from_listing and defaults.use_metadata,
        **kept_by_copies(info),
    )


def kept_by_copies(info: ObjectInfo) -> dict[str, Any]:
    """The Attr fields (by name) holding what a copy that replaces an object's
    metadata must send again to keep it: other tools' user metadata (carried even
    when cosfs does not read its own: it is not cosfs's to drop), Content-Type,
    Cache-Control and the like, storage class."""
    return {"foreign": foreign_metadata(info.metadata), "content_type": info.content_type,
            "content_headers": dict(info.content_headers),
            "storage_class": info.storage_class}


def foreign_metadata(meta: dict[str, str]) -> dict[str, str]:
    """The entries of an object's user metadata that are not cosfs's, to carry.
    One COS would refuse (it came from elsewhere, e.g. S3) cannot be written back."""
    return {k: v for k, v in meta.items()
            if k not in OWN_METADATA and is_sendable_metadata(k, v)}


# A symlink's object holds its target: 1 to PATH_MAX - 1 bytes.
SYMLINK_MAX = 4095


def may_be_symlink(size: int) -> bool:
    """Whether an object of ``size`` bytes may be a symlink. Listings carry no
    metadata, so only objects outside this range can be typed from a listing."""
    return 0 < size <= SYMLINK_MAX


def same_object(attr: Attr, info: ObjectInfo) -> bool:
    """Whether ``info`` (from a listing or a HEAD) describes the object ``attr`` was
    built from. ETag alone is not enough: a metadata self-copy keeps the ETag (the
    content's MD5) but moves Last-Modified."""
    return bool(attr.etag) and attr.etag == info.etag and \
        attr.last_modified == int(info.last_modified)


def implicit_dir_attr(defaults: Defaults, mtime_ns: int = 0) -> Attr:
    """A directory that exists only because keys live under its prefix."""
    return Attr(mode=stat.S_IFDIR | defaults.dir_mode, uid=defaults.uid, gid=defaults.gid,
                mtime_ns=mtime_ns, ctime_ns=mtime_ns)


def metadata_for(attr: Attr) -> dict[str, str]:
    """The user metadata cosfs writes for ``attr`` (COSFS-compatible), after the
    other tools' it carries."""
    meta = dict(attr.foreign)
    meta.update(mode=str(attr.mode), uid=str(attr.uid), gid=str(attr.gid))
    if attr.mtime_set:
        meta["mtime"] = format_mtime(attr.mtime_ns)
    if attr.xattrs:
        meta["xattr"] = encode_xattrs(attr.xattrs)
    return meta


def retyped(current: str, old_key: str, new_key: str,
            guess: Callable[[str], str]) -> str | None:
    """The Content-Type a file renamed from ``old_key`` to ``new_key`` takes, or None
    to keep ``current``: the new name's, when ``current`` said no more than the old
    name did (what ``guess`` makes of it, or the default), as with rsync's
    temporary names; a type another tool set on purpose stays. '' (unknown) stays."""
    if not current:
        return None
    new = guess(new_key)
    if new != current and current in (guess(old_key), DEFAULT_CONTENT_TYPE):
        return new
    return None


def metadata_size(meta: dict[str, str]) -> int:
    """Bytes counted against COS's user-metadata limit (header names and values)."""
    return sum(META_PREFIX_LEN + len(k.encode()) + len(v.encode()) for k, v in meta.items())


def fits_metadata_limit(attr: Attr) -> bool:
    return metadata_size(metadata_for(attr)) <= METADATA_LIMIT


def content_type_for(attr: Attr) -> str:
    return DIR_CONTENT_TYPE if attr.is_dir() else DEFAULT_CONTENT_TYPE
