"""The old keys of renamed files, kept in the journal until they are deleted.

(Renames of more than one copy, a directory's among them, hand their old keys
here too: see :mod:`cosfs.moves`.)

A file rename copies the object to its new key and returns; the DELETE of the old
key runs in the background, batched with others (:meth:`cosfs.aio.AsyncClient.
delete_soon`). A crash of the mount in that moment, or a DELETE that fails after
the retries, would leave both names for good, and a new file the application made
under the old name would look like another client's at the next mount (and be
filed under ``recovered/`` instead of uploaded). So the old key and the ETag of
the object it held are committed to the cache's journal before the rename
returns, and leave it once the key is gone (a DELETE that failed keeps its row);
the next mount deletes what is left there, completing those renames.

Invariants: every old key waiting for its background DELETE has a journal row
(when the mount gave a journal); a row goes when its key is gone, or when the key
no longer holds the object it was for. The recovery deletes a key only if a HEAD
with ``If-Match`` finds that object. Two limits, both for a key this mount had
renamed away and only at mount time: COS has no conditional DELETE, so another
client writing the key between the HEAD and the DELETE (one round trip) would
lose that write; and one that wrote the very same bytes there (same ETag) sees
them deleted.
Used from the trio thread only.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from cosfs.aio import AsyncClient
from cosfs.cos import CosError
from cosfs.cos.retry import is_server_fault
from cosfs.journal import Journal

log = logging.getLogger(__name__)


class OldKeys:
    """Deletes renamed files' old keys in the background, and after a crash."""

    def __init__(self, aclient: AsyncClient) -> None:
        self.aclient = aclient
        self.journal: Journal | None = None  # set by the mount: renames survive a crash
        aclient.on_deleted = self._forget

    def delete_soon(self, key: str, etag: str) -> None:
        """``key`` (holding the object ``etag``) was copied away: delete it, in the
        background; recorded in the journal first."""
        self.record(f"the old key {key!r}", lambda j: j.put_old_key(key, etag))
        self.aclient.delete_soon(key)

    def record(self, what: str, change: Callable[[Journal], None]) -> None:
        """Apply ``change`` to the journal, if the mount gave one. A journal that
        refuses it (a full or failing cache disk) is logged: the rename it is for
        is done all the same, only a crash now would leave both names."""
        if self.journal is None:
            return
        try:
            change(self.journal)
        except (sqlite3.Error, OSError) as exc:
            log.warning("the cache journal cannot record %s (a crash now would leave "
                        "both names): %s", what, exc)

    def _forget(self, keys: list[str]) -> None:
        if self.journal is not None:
            try:
                self.journal.remove_old_keys(keys)
            except (sqlite3.Error, OSError) as exc:  # the next mount finds them gone
                log.warning("the cache journal cannot forget %d deleted old keys: %s",
                            len(keys), exc)

    async def recover(self) -> int:
        """At mount: delete the old keys a crash left, where they still hold the
        object they held when their file was renamed. Returns how many went."""
        if self.journal is None:
            return 0
        deleted = 0
        for key, etag in self.journal.old_keys():
            try:
                await self.aclient.head_object(key, if_match=etag)
                await self.aclient.delete_object(key)
                deleted += 1
            except CosError as exc:
                if is_server_fault(exc):
                    log.warning("could not delete the old key %r of a renamed file (%s); "
                                "will try at the next mount", key, exc)
                    continue
                if exc.status == 412:
                    log.warning("%r was renamed before a crash, but another object "
                                "took its name since: it stays", key)
                elif exc.status != 404:  # 404: gone already
                    log.warning("the old key %r of a renamed file was not deleted: %s",
                                key, exc)
            self._forget([key])
        return deleted
