"""Renames that take more than one copy request, journaled so that a crash midway is
finished by the next mount: directories, and files whose copy is not atomic.

A directory on COS is a prefix, so renaming one copies each key below it to the
new prefix (in parallel) and deletes the old keys. A file's rename is one PUT Copy,
which makes the new key whole or not at all, except for two kinds of object: one
over 5 GB is copied part by part into a multipart upload, and an appendable one
is appended again from a download, so a crash midway leaves half of it under the
new name (:mod:`cosfs.copies`). The order and the cache's journal make both safe:

* Before the first copy, the move (old key or prefix, new one) is committed to the
  journal.
* Once every copy is made, one transaction replaces that row by a row per old key
  (:mod:`cosfs.old_keys`), and their DELETEs go out batched like those of renamed
  files. A directory's rename returns when they have ended (a file's need not
  wait: the fence of :class:`cosfs.aio.AsyncClient` keeps the mount's own view
  right). Those that fail are tried again in the background, fenced, and the
  rename is done all the same.
* A copy that fails fails the rename, once the copies already made are deleted
  (a directory's, as old keys: only while they hold the copy; a half-appended
  file's at once), so the file or directory is where it was and the application
  may try again.
* A crash during the copies leaves the row, and the next mount finishes the move:
  it copies what is missing or half-made under the new name (after aborting the
  multipart uploads a copy by parts left there), points the dead mount's staged
  files at their new keys, and turns the old keys whose copy exists into old-key
  rows, which :meth:`cosfs.old_keys.OldKeys.recover` then deletes.

So an old key is deleted only once its whole copy exists: a crash leaves each
file under its old name, its new one or both, never neither and never half, and
the next mount leaves it under the new one.

Invariants: while a move's keys are being copied its row is in the journal (when
the mount gave one). The new prefix of a directory held no key but its marker when
the move began (the namespace checks that under its rename lock), so any other key
under it is a copy of the move, or newer. A file's new name may hold the file it
replaces, so the recovery of a file's move copies it again. Used from the trio
thread only.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable

import trio

from cosfs import copies, meta, names
from cosfs.aio import AsyncClient
from cosfs.background import open_nursery_unwrapped
from cosfs.cos import CosError, ObjectInfo
from cosfs.cos.retry import is_server_fault
from cosfs.journal import Journal, StagedRecord
from cosfs.old_keys import OldKeys

log = logging.getLogger(__name__)


class Moves:
    """Renames directories, and files whose copy is not atomic; finishes them after
    a crash."""

    def __init__(self, aclient: AsyncClient, old_keys: OldKeys, defaults: meta.Defaults,
                 parallel: int) -> None:
        self.aclient = aclient
        self.old_keys = old_keys
        self.defaults = defaults
        self.parallel = parallel  # copies in flight

    @property
    def journal(self) -> Journal | None:
        return self.old_keys.journal  # the mount gives it to both

    async def move_tree(self, old_prefix: str, new_prefix: str, *,
                        keep: str | None = None) -> list[ObjectInfo]:
        """Copy every key under ``old_prefix`` to ``new_prefix``, then delete the old
        keys (a DELETE that fails is retried in the background); returns what the
        old keys were. ``keep`` is a key under ``new_prefix`` that was there before
        (the marker of the directory replaced), which a failed move must leave."""
        keys = await self._list(old_prefix)
        for info in keys:
            names.check_key(_moved(info.key, old_prefix, new_prefix))
        self.old_keys.record(f"the rename of {old_prefix!r}",
                     lambda j: j.put_move(old_prefix, new_prefix, tree=True))
        tried: set[str] = set()
        made: dict[str, str] = {}  # new key -> ETag of its copy

        async def copy_one(info: ObjectInfo) -> None:
            dst = _moved(info.key, old_prefix, new_prefix)
            tried.add(dst)
            made[dst] = await self._copy(info, dst)

        try:
            await self._each(keys, copy_one)
        except BaseException as exc:
            self._undo(old_prefix, tried, made, keep)
            if isinstance(exc, Exception):  # not cancelled: others see it undone too
                await self._settle(new_prefix)
            raise
        self._end(old_prefix, [(i.key, i.etag) for i in keys])
        await self._settle(old_prefix)
        return keys

    async def move_file(self, old_key: str, new_key: str, attr: meta.Attr,
                        copy: Callable[[], Awaitable[str]]) -> str:
        """Run ``copy`` (which copies ``old_key``, whose attributes are ``attr``, to
        ``new_key``; journaled first when that takes more than one request), then
        delete ``old_key`` in the background. Returns the copy's ETag."""
        old_etag = attr.etag
        if copies.atomic(attr):
            etag = await copy()
            self.old_keys.delete_soon(old_key, old_etag)
            return etag
        # What the new name held before (a file this one replaces), so that a
        # failed copy deletes only what it made there.
        before = await self._etag_of(new_key) if attr.appendable else None
        self.old_keys.record(f"the rename of {old_key!r}",
                     lambda j: j.put_move(old_key, new_key, tree=False))
        try:
            etag = await copy()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._drop_half_copy(old_key, new_key, attr, before)
            raise
        self._end(old_key, [(old_key, old_etag)])
        return etag

    async def recover(self) -> int:
        """At mount: finish the renames a crash cut short. Returns how many; one
        that fails for a store that fails stays for the next mount."""
        if self.journal is None:
            return 0
        finished = 0
        for old, new, tree in self.journal.moves():
            try:
                await self._finish(self.journal, old, new, tree)
                finished += 1
            except (CosError, sqlite3.Error, OSError) as exc:
                log.warning("could not finish renaming %r to %r (%s); will try at the "
                            "next mount", old, new, exc)
        return finished

    # -- the copies ----------------------------------------------------------------

    async def _list(self, prefix: str) -> list[ObjectInfo]:
        keys: list[ObjectInfo] = []
        async for page in self.aclient.list_pages(prefix):
            keys.extend(page.contents)
        return keys

    async def _each(self, keys: list[ObjectInfo],
                    fn: Callable[[ObjectInfo], Awaitable[None]]) -> None:
        """``fn`` for every key, ``parallel`` at a time; the first failure cancels
        the others and is raised."""
        limit = trio.CapacityLimiter(self.parallel)

        async def one(info: ObjectInfo) -> None:
            async with limit:
                await fn(info)

        async with open_nursery_unwrapped() as nursery:
            for info in keys:
                nursery.start_soon(one, info)

    async def _copy(self, info: ObjectInfo, dst: str) -> str:
        """Copy one listed object to ``dst``; its ETag there."""
        if info.appendable or info.size > copies.COPY_LIMIT:
            # These cannot keep their metadata by a plain copy: it is rewritten.
            head = info if not info.from_listing else await self.aclient.head_object(info.key)
            return await copies.copy_object(self.aclient, info.key, dst,
                                            meta.attr_from_object(head, self.defaults))
        return await self.aclient.copy_object(info.key, dst, storage_class=info.storage_class)

    async def _drop_half_copy(self, old_key: str, new_key: str, attr: meta.Attr,
                              before: str | None) -> None:
        """A file's copy that is not atomic failed. It undoes itself
        (:mod:`cosfs.copies`); in case an appendable one could not, delete what
        is under the new name unless it still holds what it held before
        (``before``, an ETag), and forget the move. If that fails too, the row
        stays, and the next mount finishes the move rather than leave half a
        file."""
        if attr.appendable:
            try:
                now = await self._etag_of(new_key)
                if now is not None and now != before:
                    await self.aclient.delete_object(new_key)
            except CosError as exc:
                log.warning("could not delete the partial copy %r of %r (%s); the next "
                            "mount will finish the rename", new_key, old_key, exc)
                return
        self.old_keys.record(f"the end of renaming {old_key!r}", lambda j: j.end_move(old_key))

    async def _etag_of(self, key: str) -> str | None:
        return next((h.etag for h in await self._head_if_any(key)), None)

    # -- the journal ---------------------------------------------------------------

    def _end(self, old: str, doomed: list[tuple[str, str]]) -> None:
        """The move's copies are over: ``doomed`` ((key, ETag) pairs) are to go, in
        the background, and replace the move's row in the journal."""
        self.old_keys.record(f"the old keys of {old!r}", lambda j: j.end_move(old, doomed))
        for key, _ in doomed:
            self.aclient.delete_soon(key)

    async def _settle(self, prefix: str) -> None:
        """Wait for the DELETEs under ``prefix``, so that other clients too see the
        rename (or its undoing) once it returns. Those that fail stay pending,
        retried in the background and fenced (see AsyncClient.delete_soon)."""
        with contextlib.suppress(CosError):
            await self.aclient.wait_deletes(prefix)

    def _undo(self, old_prefix: str, tried: set[str], made: dict[str, str],
              keep: str | None) -> None:
        """A copy failed: delete the copies made, and those whose copy may have
        been made (the store did not answer), other than ``keep``."""
        log.warning("renaming %r failed; removing the %d copies made under the new name",
                    old_prefix, len(made))
        self._end(old_prefix, [(k, etag) for k, etag in made.items() if k != keep])
        for key in tried - made.keys() - {keep}:
            self.aclient.delete_soon(key)

    # -- recovery ------------------------------------------------------------------

    async def _finish(self, journal: Journal, old: str, new: str, tree: bool) -> None:
        # A file gone from its old name already: what is under the new one is all.
        keys = await self._list(old) if tree else await self._head_if_any(old)
        copied: dict[str, str] = {}  # old key -> ETag of its whole copy under ``new``

        async def ensure_copy(info: ObjectInfo) -> None:
            dst = _moved(info.key, old, new)
            try:
                copied[info.key] = await (self._whole_copy(info, dst) if tree
                                          else self._copy_again(info, dst))
            except CosError as exc:
                if is_server_fault(exc):
                    raise  # the store is failing: the next mount tries again
                log.error("could not copy %r to %r to finish a rename cut short by a "
                          "crash (%s): the old name stays", info.key, dst, exc)

        await self._each(keys, ensure_copy)
        listed = {i.key: i.etag for i in keys}
        inside = (lambda key: key.startswith(old)) if tree else (lambda key: key == old)
        staged = _repoint(journal.files(), inside, old, new, listed, copied)
        journal.end_move(old, [(k, listed[k]) for k in copied], staged)
        log.info("recovery: finished renaming %r to %r (%d keys)", old, new, len(copied))

    async def _head_if_any(self, key: str) -> list[ObjectInfo]:
        """What a HEAD of ``key`` says, or nothing for a 404."""
        try:
            return [await self.aclient.head_object(key)]
        except CosError as exc:
            if exc.status != 404:
                raise
        return []

    async def _whole_copy(self, info: ObjectInfo, dst: str) -> str:
        """The ETag of a whole copy of ``info`` at ``dst``, made now if missing or
        half-made. One that exists is this move's copy or newer (see the
        invariants), except an appendable copy shorter than its source: half of
        a copy that was being appended."""
        await self._abort_if_big(info, dst)
        for head in await self._head_if_any(dst):
            if not (info.appendable and head.appendable and head.size < info.size):
                return head.etag
        return await self._copy(info, dst)  # an appendable copy deletes the half first

    async def _copy_again(self, info: ObjectInfo, dst: str) -> str:
        """A file's move: whatever its new name holds (the file it replaces, half a
        copy, a whole one) is not known to be the copy, and its old name still
        holds it whole, so it is copied again."""
        await self._abort_if_big(info, dst)
        return await self._copy(info, dst)

    async def _abort_if_big(self, info: ObjectInfo, dst: str) -> None:
        if info.size > copies.COPY_LIMIT and not info.appendable:
            await self._abort_uploads(dst)  # a copy by parts cut short

    async def _abort_uploads(self, key: str) -> None:
        for up in await self.aclient.list_multipart_uploads(prefix=key):
            if up.key == key:
                await self.aclient.abort_multipart_upload(key, up.upload_id)


def _moved(key: str, old: str, new: str) -> str:
    return new + key[len(old):]


def _repoint(records: Iterable[StagedRecord], inside: Callable[[str], bool], old: str,
             new: str, listed: dict[str, str], copied: dict[str, str]) -> list[StagedRecord]:
    """Staged files of the dead mount that were moved go up under their new keys;
    one whose base object was copied unchanged fills from the copy. (A base that
    had changed already stays: the recovery of staged files then keeps the file
    under ``recovered/``, as for any conflict.)"""
    changed = []
    for rec in records:
        moved = False
        if inside(rec.key):
            rec.key = _moved(rec.key, old, new)
            moved = True
        base = rec.base_key
        if base is not None and base in copied and listed.get(base) == rec.base_etag:
            rec.base_key, rec.base_etag = _moved(base, old, new), copied[base]
            moved = True
        if moved:
            changed.append(rec)
    return changed
