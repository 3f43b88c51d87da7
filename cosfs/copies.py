"""Server-side copies of one object that keep what the object carries.

COS copies an object of up to 5 GB in one request (PUT Copy); a larger one is
copied part by part (Upload Part - Copy into a multipart upload); an appendable
object cannot be copied at all, so it is appended again from a download and stays
appendable. A copy that replaces the metadata (a rename carrying a deferred chmod,
a self-copy storing one) must send again everything else the object has, or the
copy drops it: other tools' ``x-cos-meta-*``, Content-Type, Cache-Control and the
like, the storage class (:func:`kept_by_copy`).

A copy in more than one request that fails or is cancelled undoes itself: the
multipart upload is aborted, the half-appended object deleted, so the new key
holds part of the object only if that undo fails too (it is logged) or after a
crash (which :mod:`cosfs.moves` finishes at the next mount).

Used by :mod:`cosfs.namespace` (rename, chmod/chown/utime); talks to COS only
through :class:`cosfs.aio.AsyncClient`. No state: each call stands alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import trio

from cosfs import meta
from cosfs.aio import AsyncClient
from cosfs.background import open_nursery_unwrapped
from cosfs.cos import CosError, PartInfo
from cosfs.meta import Attr

log = logging.getLogger(__name__)

# Server-side copy of one object is limited to 5 GB; larger ones go part by part.
COPY_LIMIT = 5 * 1024**3
COPY_PART = 1024**3
# Storage classes whose objects COS refuses to copy until restored.
UNCOPYABLE = frozenset({"ARCHIVE", "DEEP_ARCHIVE"})
# An appendable object is copied by downloading and appending this much at a time.
_APPEND_CHUNK = 64 * 1024**2


def atomic(attr: Attr) -> bool:
    """Whether :func:`copy_object` copies the object in one request, so that the
    new key holds all of it or nothing, whatever happens midway."""
    return not attr.appendable and attr.size <= COPY_LIMIT


def copyable(attr: Attr) -> bool:
    """Whether a single PUT Copy can copy the object onto itself (a metadata change)."""
    return atomic(attr) and attr.storage_class not in UNCOPYABLE


async def kept_by_copy(aclient: AsyncClient, key: str, attr: Attr) -> Attr:
    """``attr`` with what a copy replacing ``key``'s metadata must send again to
    keep it: other tools' metadata, Content-Type and the like, storage class.
    Known from a HEAD or an upload; for attributes that came from a listing only
    (``-o listing_attrs``) a HEAD asks now."""
    if attr.content_type or not attr.etag:
        return attr
    info = await aclient.head_object(key)
    return replace(attr, **meta.kept_by_copies(info))


async def copy_object(aclient: AsyncClient, src_key: str, dst_key: str, attr: Attr, *,
                      rewrite: bool = False, if_match: str | None = None,
                      default_type: str | None = None, retype: str | None = None) -> str:
    """Copy ``src_key`` (whose attributes are ``attr``) to ``dst_key`` on the server;
    returns the new ETag.

    A plain copy keeps the source's metadata as it is. With ``rewrite`` the copy
    writes ``attr``'s metadata instead (``default_type`` the Content-Type when none
    is known), on condition, with ``if_match``, that the source is still that
    object (else CosError 412); with ``retype`` it gets that Content-Type (a file
    renamed to another extension). Objects over 5 GB and appendable ones always
    write ``attr``'s metadata, as they cannot keep the source's."""
    if not rewrite and retype is None and attr.size <= COPY_LIMIT and not attr.appendable:
        return await aclient.copy_object(src_key, dst_key, storage_class=attr.storage_class)
    attr = await kept_by_copy(aclient, src_key, attr)
    if retype is not None:
        attr = replace(attr, content_type=retype)
    elif not attr.content_type and default_type is not None:
        attr = replace(attr, content_type=default_type)
    if attr.appendable:
        return await _copy_appendable(aclient, src_key, dst_key, attr)
    if attr.size <= COPY_LIMIT:
        return await _copy_writing(aclient, src_key, dst_key, attr, if_match,
                                   meta.DEFAULT_CONTENT_TYPE)
    return await _copy_by_parts(aclient, src_key, dst_key, attr)


async def rewrite_in_place(aclient: AsyncClient, key: str, attr: Attr, *,
                           if_match: str | None = None,
                           default_type: str = meta.DEFAULT_CONTENT_TYPE) -> tuple[str, Attr]:
    """Store ``attr``'s metadata on ``key`` by one copy of the object onto itself
    (up to 5 GB, not appendable: :func:`copyable`), keeping what else it carries;
    with ``if_match``, only if the object is still that one (else CosError 412).
    Returns the new ETag and the attributes as sent (completed by
    :func:`kept_by_copy`)."""
    attr = await kept_by_copy(aclient, key, attr)
    return await _copy_writing(aclient, key, key, attr, if_match, default_type), attr


async def _copy_writing(aclient: AsyncClient, src_key: str, dst_key: str, attr: Attr,
                        if_match: str | None, default_type: str) -> str:
    """One PUT Copy that writes ``attr``'s metadata and what it keeps of the rest."""
    return await aclient.copy_object(
        src_key, dst_key, metadata=meta.metadata_for(attr),
        content_type=attr.content_type or default_type, if_match=if_match,
        storage_class=attr.storage_class, content_headers=attr.content_headers)


async def _copy_by_parts(aclient: AsyncClient, src_key: str, dst_key: str,
                         attr: Attr) -> str:
    """A copy above COS's single-copy limit: a multipart upload of ranges copied on
    the server, all at once; aborted if any part fails, so nothing half-made stays,
    and the first failure raised as itself."""
    upload = await aclient.create_multipart_upload(
        dst_key, content_type=attr.content_type or meta.DEFAULT_CONTENT_TYPE,
        metadata=meta.metadata_for(attr), storage_class=attr.storage_class,
        content_headers=attr.content_headers)
    abort = functools.partial(aclient.abort_multipart_upload, dst_key, upload)
    async with _undone_if_cut_short(abort, f"the multipart copy to {dst_key!r}"):
        parts: list[PartInfo] = []
        async with open_nursery_unwrapped() as nursery:  # callers see the CosError
            for n, start in enumerate(range(0, attr.size, COPY_PART), 1):
                end = min(start + COPY_PART, attr.size) - 1

                async def one(n: int = n, start: int = start, end: int = end) -> None:
                    etag = await aclient.upload_part_copy(dst_key, upload, n, src_key,
                                                          start, end)
                    parts.append(PartInfo(n, etag))

                nursery.start_soon(one)
        parts.sort(key=lambda p: p.part_number)
        return await aclient.complete_multipart_upload(dst_key, upload, parts)


async def _copy_appendable(aclient: AsyncClient, src_key: str, dst_key: str,
                           attr: Attr) -> str:
    """An appendable object, which COS cannot copy: appended again from a download,
    so the copy stays appendable. One cut short deletes what it appended, which
    would read as the file cut short, and the source is still whole."""
    position = 0
    drop = functools.partial(aclient.delete_object, dst_key)
    await drop()  # COS appends only to a new object
    async with _undone_if_cut_short(drop, f"the partial copy {dst_key!r}"):
        while position < attr.size or position == 0:
            end = min(position + _APPEND_CHUNK, attr.size) - 1
            data = await aclient.get_object(src_key, position, end) if attr.size else b""
            await aclient.append_object(
                dst_key, position, data,
                content_type=attr.content_type or meta.DEFAULT_CONTENT_TYPE,
                metadata=meta.metadata_for(attr) if position == 0 else None)
            position += len(data)
            if not data:
                break
        return (await aclient.head_object(dst_key)).etag


@contextlib.asynccontextmanager
async def _undone_if_cut_short(undo: Callable[[], Awaitable[object]],
                               what: str) -> AsyncIterator[None]:
    """Run ``undo`` (shielded, so a cancelled copy still cleans up) when the body
    fails or is cancelled, then let the failure go on as itself. An undo that
    fails is logged: the caller's failure is the one that matters."""
    try:
        yield
    except BaseException:
        with trio.CancelScope(shield=True):
            try:
                await undo()
            except CosError:
                log.warning("could not remove %s", what)
        raise
