"""Deferred metadata: a chmod, chown, utime or xattr change of a file already on the
server (or of a directory's marker), stored on its object a moment later by one
copy of the object onto itself.

Why: rsync sets a file's times, then its mode, then renames it; stored at once,
each is a copy of the object. Deferred up to ``meta_delay`` seconds, the changes
share one copy, and a rename that comes first carries them in its own copy (the
namespace takes them with :meth:`DeferredMetadata.take`); so does an upload of
the file's data, whose metadata is the inode's, which holds them (the flush
drops them: stored afterwards, they would undo what came after them).

Invariants
    - ``pending`` maps an inode to the last metadata set on it (a snapshot) and the
      ETag of the object it is for; every entry has a journal row (when the mount
      gave a journal) until it is stored, dropped or found obsolete, so a crash of
      the mount loses no acknowledged change (:meth:`recover` at the next mount).
    - A copy stores metadata only on the object it was set on (``If-Match`` its
      ETag): an object replaced on the server meanwhile keeps its own.
    - At most one self-copy per inode is under way (``_applying``); whoever must
      not overtake it (a newer change, a rename's copy, an unlink) waits for it
      with :meth:`settle` first.

Concurrency
    Everything runs on the trio event loop. One background task (started when the
    first change is deferred, ending when none is left) stores the changes as they
    fall due; :meth:`apply` stores one at once (fsync, close), :meth:`apply_all`
    every one (unmount, a directory rename).

This module knows inode numbers and keys, not inodes: the namespace hears of a
stored or refused change through the two callbacks it passes in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import trio

from cosfs import copies, meta
from cosfs.aio import AsyncClient
from cosfs.background import TaskSet
from cosfs.cos import CosError
from cosfs.cos.retry import is_server_fault
from cosfs.journal import Journal, MetadataRecord
from cosfs.meta import Attr

log = logging.getLogger(__name__)


@dataclass
class PendingMeta:
    """New metadata of a clean file, not on its object yet."""

    key: str
    etag: str  # the object it is for: stored only while the object is unchanged
    attr: Attr
    content_type: str
    due: float  # trio clock: stored by then at the latest


class DeferredMetadata:
    """The metadata changes of one mount waiting for their copy. See the module
    docstring.

    ``stored(key, etag, attr)`` is called when a copy stored ``attr`` (the object's
    new ETag ``etag``); ``obsolete(ino)`` when a change was given up because the
    server refused it or the object changed (what the inode shows must be asked
    for again).
    """

    def __init__(self, aclient: AsyncClient, delay: float,
                 stored: Callable[[str, str, Attr], None],
                 obsolete: Callable[[int], None]) -> None:
        self.aclient = aclient
        self.delay = delay
        self.journal: Journal | None = None  # set by the mount: changes survive a crash
        self.pending: dict[int, PendingMeta] = {}
        self._stored = stored
        self._obsolete = obsolete
        self._applying: dict[int, trio.Event] = {}
        self._applier_running = False
        self._tasks = TaskSet("metadata")

    def __contains__(self, ino: int) -> bool:
        return ino in self.pending

    def of(self, ino: int) -> PendingMeta | None:
        """``ino``'s change still pending, if any (to :meth:`drop` it later with
        ``only``, should it still be that one)."""
        return self.pending.get(ino)

    def defer(self, ino: int, key: str, attr: Attr, content_type: str,
              known_type: bool) -> None:
        """Record that ``key`` (of inode ``ino``) must get ``attr``'s metadata, with
        ``content_type`` (``known_type`` False: asked for at recovery, it came
        from a listing only). Journaled before this returns; stored within
        ``delay`` seconds of the first change still pending. Call :meth:`settle`
        first."""
        if self.journal is not None:
            self.journal.put_metadata(MetadataRecord(
                key, attr.etag, meta.metadata_for(attr), content_type if known_type else None))
        old = self.pending.get(ino)
        due = old.due if old is not None else trio.current_time() + self.delay
        # A snapshot: what is stored is what was set, as with an immediate copy
        # (a directory's in-memory mtime moves on with changes inside it).
        self.pending[ino] = PendingMeta(key, attr.etag, replace(attr), content_type, due)
        if not self._applier_running:
            self._applier_running = True
            self._tasks.spawn(self._apply_due)

    async def _apply_due(self) -> None:
        """Background: store pending metadata as it falls due, until none is left."""
        try:
            while self.pending:
                now = trio.current_time()
                due = [ino for ino, p in self.pending.items() if p.due <= now]
                if not due:
                    await trio.sleep(min(p.due for p in self.pending.values()) - now)
                    continue
                async with trio.open_nursery() as nursery:
                    for ino in due:
                        nursery.start_soon(self._apply_logged, ino)
        finally:
            self._applier_running = False

    async def _apply_logged(self, ino: int) -> None:
        try:
            await self.apply(ino)
        except (CosError, OSError) as exc:
            log.warning("cannot store new metadata yet (%s); will try again", exc)

    async def apply(self, ino: int) -> None:
        """Store ``ino``'s deferred metadata now (nothing if it has none): one copy
        of the object onto itself, on condition that it is unchanged. A failure
        without an answer, or a server fault, keeps it pending (retried later) and
        raises; a refusal or a changed object drops it."""
        await self.settle(ino)
        p = self.pending.pop(ino, None)
        if p is None:
            return
        done = self._applying[ino] = trio.Event()
        try:
            etag, attr = await copies.rewrite_in_place(
                self.aclient, p.key, p.attr, if_match=p.etag, default_type=p.content_type)
        except CosError as exc:
            if is_server_fault(exc):
                retry = trio.current_time() + 5 * self.delay
                self.pending.setdefault(ino, replace(p, due=retry))
                raise
            if exc.status in (404, 412):
                log.warning("%r changed on the server before its new metadata was "
                            "stored; it keeps the server's", p.key)
            else:  # refused (e.g. 403): asking again would not change the answer
                log.warning("new metadata of %r refused, dropped: %s", p.key, exc)
            self.forget(p.key)
            self._obsolete(ino)
        else:
            self.forget(p.key)
            self._stored(p.key, etag, attr)
        finally:
            del self._applying[ino]
            done.set()

    async def apply_all(self, *, strict: bool = False) -> None:
        """Store every deferred change now, and wait for the copies the background
        already started. ``strict`` (a directory rename, whose copies must find
        every change stored) raises the first failure; otherwise (unmount) a
        failure is logged and the change stays in the journal for the next mount."""
        apply = self.apply if strict else self._apply_logged
        async with trio.open_nursery() as nursery:
            for ino in list(self.pending):
                nursery.start_soon(apply, ino)
            for event in list(self._applying.values()):
                nursery.start_soon(event.wait)

    async def settle(self, ino: int) -> None:
        """Wait for a self-copy of ``ino``'s object under way (it must not land
        after a rename's copy, or carry values older than a newer change)."""
        while (running := self._applying.get(ino)) is not None:
            await running.wait()

    def take(self, ino: int) -> PendingMeta | None:
        """The deferred metadata of ``ino`` for a caller whose request carries it
        (call :meth:`settle` first); its journal row stays until that succeeded
        (then :meth:`forget`; if it failed, :meth:`give_back`)."""
        return self.pending.pop(ino, None)

    def give_back(self, ino: int, p: PendingMeta) -> None:
        """A change :meth:`take` handed out whose request failed: pending again,
        unless a newer one came meanwhile."""
        self.pending.setdefault(ino, p)

    def rebase(self, ino: int, etag: str, carried: dict[str, str] | None) -> None:
        """An upload replaced ``ino``'s object: deferred metadata it carried is done;
        metadata it did not (a change deferred once the upload had taken its
        metadata; one deferred before, the flush drops, as the upload carries it)
        is now for the new object."""
        p = self.pending.get(ino)
        if p is None:
            return
        if carried == meta.metadata_for(p.attr):
            self.drop(ino)
            return
        p.etag = etag
        if self.journal is not None:
            try:
                self.journal.put_metadata(MetadataRecord(
                    p.key, etag, meta.metadata_for(p.attr), p.content_type))
            except OSError as exc:  # the change is stored within a second anyway
                log.warning("the cache journal cannot record metadata of %r: %s", p.key, exc)

    def drop(self, ino: int, only: PendingMeta | None = None) -> None:
        """Give up ``ino``'s deferred change (its object goes or is replaced, or
        an upload carries it); with ``only``, only if that is still the change
        pending (not a newer one)."""
        p = self.pending.get(ino)
        if p is not None and (only is None or p is only):
            del self.pending[ino]
            self.forget(p.key)

    def forget(self, key: str) -> None:
        """Remove the journal row of ``key``'s change: stored, or no longer wanted."""
        if self.journal is not None:
            try:
                self.journal.remove_metadata(key)
            except OSError as exc:  # a full cache disk: recovery finds it applied
                log.warning("the cache journal cannot forget metadata of %r: %s", key, exc)

    async def recover(self) -> int:
        """At mount: store the metadata a crash left pending, on objects still the
        ones it was for. Returns how many objects got theirs."""
        if self.journal is None:
            return 0
        stored = 0
        for rec in self.journal.metadata():
            try:
                # What a copy drops unless told (the storage class, Cache-Control
                # and the like) comes from a HEAD.
                info = await self.aclient.head_object(rec.key, if_match=rec.etag)
                await self.aclient.copy_object(
                    rec.key, rec.key,
                    metadata={**meta.foreign_metadata(info.metadata), **rec.metadata},
                    content_type=rec.content_type or info.content_type, if_match=rec.etag,
                    storage_class=info.storage_class, content_headers=info.content_headers)
                stored += 1
            except CosError as exc:
                if is_server_fault(exc):
                    log.warning("could not store the pending metadata of %r (%s); "
                                "will try at the next mount", rec.key, exc)
                    continue
                log.warning("the pending metadata of %r was not stored (%s): the object "
                            "changed, went, or refuses it", rec.key, exc)
            self.forget(rec.key)
        return stored
