"""Path components and COS keys: what a name may be, and how keys are built.

Pure functions, unit-tested. A mount may be rooted at a key prefix
(``bucket:/some/prefix``); ``root`` below is that prefix without slashes ('' for
the whole bucket).
"""

from __future__ import annotations

import errno

from cosfs.meta import MAX_KEY_BYTES, NAME_MAX


class NameError_(OSError):
    """A name the filesystem cannot store (carries the errno to return)."""


def check_component(name: str) -> None:
    """Raise for a name that cannot be one path component of a key."""
    if name in ("", ".", ".."):
        raise NameError_(errno.EINVAL, f"invalid name {name!r}")
    if "/" in name or "\0" in name:
        raise NameError_(errno.EINVAL, f"invalid character in {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:
        raise NameError_(errno.ENAMETOOLONG, "name longer than 255 bytes")


def decode_name(raw: bytes) -> str:
    """A name from the kernel. COS keys are UTF-8: anything else is refused."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NameError_(errno.EINVAL, "name is not valid UTF-8") from exc
    check_component(name)
    return name


def is_listable(name: str) -> bool:
    """Whether a component found in a listing can be shown in the mount.

    Keys such as ``a//b``, ``a/./b`` or ``a/../b`` exist in buckets written by other
    tools; their odd components are hidden rather than shown as names that would
    mean something else (or escape the mount) to the kernel.
    """
    if name in ("", ".", "..") or "\0" in name:
        return False
    return len(name.encode("utf-8", "surrogatepass")) <= NAME_MAX


def listing_order(name: str) -> bytes:
    """The sort key of ``name`` among its siblings: COS lists keys in the order of
    their UTF-8 bytes, and programs walk a listing in that order."""
    return name.encode("utf-8", "surrogateescape")


def child_key(parent_key: str, name: str) -> str:
    """Key of ``name`` inside the directory whose key is ``parent_key``."""
    return f"{parent_key}/{name}" if parent_key else name


def dir_prefix(key: str) -> str:
    """Listing prefix of the directory ``key`` ('' for the bucket root)."""
    return f"{key}/" if key else ""


def check_key(key: str, *, directory: bool = False) -> None:
    """Raise ENAMETOOLONG when the key (with the marker's slash) exceeds COS's limit."""
    size = len(key.encode("utf-8")) + (1 if directory else 0)
    if size > MAX_KEY_BYTES:
        raise NameError_(errno.ENAMETOOLONG, f"key longer than {MAX_KEY_BYTES} bytes")


def normalize_root(prefix: str) -> str:
    """``/a/b/`` -> ``a/b``; refuses empty or dot components."""
    parts = [p for p in prefix.split("/") if p]
    for p in parts:
        if p in (".", ".."):
            raise ValueError(f"invalid prefix component {p!r}")
    return "/".join(parts)
