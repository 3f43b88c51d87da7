"""Async access to the blocking COS client from the trio event loop.

The filesystem runs on trio; the client is blocking (http.client). Every call goes
to a worker thread through one shared ``trio.CapacityLimiter``, which bounds both
the number of threads and the number of HTTP requests in flight, so a burst of
FUSE requests never starts more connections than the client's pool holds.

It also runs the DELETEs nobody needs to wait for (the old key of a renamed file)
in the background, and fences them: a call that names such a key, or lists a
prefix of it, waits until it is gone (or fails while the store keeps failing the
DELETE), so no request ever sees the key or races its deletion. Those DELETEs
linger a moment and go out together, one Delete Multiple request for up to 1000
keys: rsync renames every file it writes, and a request per old name cost the
mount and the server as much CPU as the copy did.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import trio

from .background import TaskSet
from .cos import CosError
from .cos.client import DELETE_BATCH
from .cos.retry import RETRYABLE_CODES, is_retryable, is_server_fault

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a background DELETE waits for others to share its request. Nobody waits
# for it meanwhile: a request of this mount that must see the key gone sends the
# batch at once (see _fence); only other clients see the old name that much longer.
DELETE_LINGER = 0.05

# A background DELETE that failed after the client's retries (the store answers
# 5xx or nothing) is tried again this long after, the pause doubling up to the
# cap, for as long as the mount runs.
RETRY_FIRST = 1.0
RETRY_MAX = 60.0

# Answers of a store that has no Delete Multiple (some S3-compatible ones): the
# keys are deleted one by one from then on. A 5xx or no answer (after the retries)
# leaves the whole batch for the next attempt; any other failure falls back for
# that batch only (a 400 may be a RequestTimeout).
_NO_MULTI_DELETE = {405, 501}


class AsyncClient:
    """Wraps a :class:`cosfs.cos.CosClient`; ``await aclient.head_object(key)`` runs
    ``client.head_object(key)`` in a worker thread.

    Concurrency: any number of tasks may call at once; at most ``max_in_flight``
    calls run at the same time, the others wait for a slot in FIFO order.

    Invariant: while a background delete of a key is pending (``delete_soon``), it
    is in ``_deleting``; every call whose string arguments include that key, or
    whose ``prefix`` argument starts it, first waits for the delete's attempt to
    end, and fails if it failed. So a later PUT or COPY to the key lands after the
    DELETE, and a HEAD or LIST never shows it. A key waits in ``_queued`` until the
    one batching task sends it (after ``DELETE_LINGER``, or at once when ``_hurry``
    is set: someone waits for a key still queued), then stays in ``_deleting``
    until it is gone or refused for good. A key whose attempt failed in a way worth
    another waits in ``_failed`` for the next one: with the next batch, at
    ``_retry_at``, or at once for a call that names it. Used from the trio thread
    only.
    """

    def __init__(self, client: Any, max_in_flight: int = 32,
                 delete_linger: float = DELETE_LINGER) -> None:
        self.sync = client
        self.limiter = trio.CapacityLimiter(max_in_flight)
        self.delete_linger = delete_linger
        # Told the keys each batch of background deletes removed, before the calls
        # waiting for them run (cosfs.old_keys forgets them in the journal).
        self.on_deleted: Callable[[list[str]], None] | None = None
        self._deleting: dict[str, trio.Event] = {}
        self._queued: dict[str, None] = {}  # in order, and quick to look up
        self._hurry = trio.Event()
        self._wake = trio.Event()  # the batching task, waiting to retry, is needed
        self._failed: dict[str, str] = {}  # keys to try again, and why they failed
        self._retry_at = 0.0
        self._retry_pause = RETRY_FIRST
        self._batching = False
        self._multi_delete = True
        self._deletes = TaskSet("deletes")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker thread under the shared limit,
        once no background delete of a key it names is running."""
        if self._deleting:
            await self._fence(args, kwargs)
        return await self._run(fn, *args, **kwargs)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self.limiter
        )

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.sync, name)
        if not callable(method):
            raise AttributeError(name)

        async def run(*args: Any, **kwargs: Any) -> Any:
            return await self.call(method, *args, **kwargs)

        run.__name__ = name
        return run

    async def list_pages(self, prefix: str, **kwargs: Any) -> AsyncIterator[Any]:
        """The pages of a listing of ``prefix`` (``CosClient.iter_list``), fetched
        one by one in worker threads, after the background deletes under it."""
        if self._deleting:
            await self._fence((), {"prefix": prefix})
        pages = self.sync.iter_list(prefix=prefix, **kwargs)
        while (page := await self._run(next, pages, None)) is not None:
            yield page

    # -- background deletes -------------------------------------------------------

    def delete_soon(self, key: str) -> None:
        """Delete ``key`` in the background (a renamed file's old key: the rename
        need not wait for it). Calls that name the key wait for it (see the class
        invariant); :meth:`wait_deletes` waits for all. A delete that fails after
        the client's retries with an error worth another try (5xx, throttling, no
        answer) is tried again in the background, with a growing pause, until it
        succeeds or the mount ends; meanwhile a call that names the key tries it
        once more and fails if that fails too, rather than see the key. A key the
        store refuses for good (403) is logged: the old name then shows again,
        next to the new one, with the same bytes. Only keys that are gone reach
        ``on_deleted``."""
        if key in self._deleting:
            return
        self._deleting[key] = trio.Event()
        self._queued[key] = None
        if len(self._queued) >= DELETE_BATCH:
            self._hurry.set()
        self._wake.set()
        if not self._batching:
            self._batching = True
            self._deletes.spawn(self._send_deletes)

    async def _send_deletes(self) -> None:
        """The batching task: sends the queued keys, a batch at a time, and the
        failed ones again, until none is left (one task at most, so batches never
        overlap)."""
        try:
            while self._queued or self._failed:
                if not self._queued:
                    await self._wait_for_retry()
                    continue
                with trio.move_on_after(self.delete_linger):
                    await self._hurry.wait()
                self._hurry = trio.Event()
                self._retry_now(list(self._failed))  # a request goes anyway: all in it
                batch = list(itertools.islice(self._queued, DELETE_BATCH))
                for key in batch:
                    del self._queued[key]
                gone: list[str] = []
                retry: dict[str, str] = {}
                try:
                    gone, retry = await self._delete_batch(batch)
                finally:
                    self._attempted(batch, retry)
                # No checkpoint since the set(): no waiter has run yet.
                if gone and self.on_deleted is not None:
                    self.on_deleted(gone)
        finally:
            self._batching = False
            self._hurry = trio.Event()  # nothing is queued: the next key lingers again

    async def _wait_for_retry(self) -> None:
        """Only failed keys are left: wait until their next attempt is due, or until
        a new key, or a call that needs one of them gone, comes."""
        # Whatever set it before is in the batches sent already.
        self._wake = trio.Event()
        with trio.move_on_at(self._retry_at):
            await self._wake.wait()
        if not self._queued:  # the time has come
            self._retry_now(list(self._failed))
            self._hurry.set()  # they have waited long enough for company

    def _retry_now(self, keys: Iterable[str]) -> None:
        """Queue the failed ones among ``keys`` for the next batch."""
        for key in keys:
            if key in self._failed:
                del self._failed[key]
                self._queued[key] = None
                self._wake.set()

    def _attempted(self, batch: list[str], retry: dict[str, str]) -> None:
        """The attempt at ``batch`` has ended: wake its waiters. The keys of ``retry``
        (with why they failed) stay pending for the next attempt."""
        for key in batch:
            event = self._deleting.pop(key)
            if key in retry:
                self._deleting[key] = trio.Event()
                self._failed[key] = retry[key]
            event.set()
        if not retry:
            self._retry_pause = RETRY_FIRST
            return
        pause, self._retry_pause = self._retry_pause, min(2 * self._retry_pause, RETRY_MAX)
        self._retry_at = trio.current_time() + pause
        key, why = next(iter(retry.items()))
        what = repr(key) if len(retry) == 1 else f"{len(retry)} keys ({key!r}...)"
        log.warning("could not delete %s after renaming (%s); trying again in %.0f s "
                    "(requests for the old name%s give EIO meanwhile)", what, why, pause,
                    "" if len(retry) == 1 else "s")

    async def _delete_batch(self, keys: list[str]) -> tuple[list[str], dict[str, str]]:
        """Delete ``keys``. Returns those that are gone, and why each one worth
        another attempt failed (those refused for good are logged)."""
        retry: dict[str, str] = {}
        if len(keys) > 1 and self._multi_delete:
            try:
                failed = await self._run(self.sync.delete_objects, keys)
            except CosError as exc:
                if exc.status in _NO_MULTI_DELETE:
                    log.warning("the store refused Delete Multiple (%s); deleting renamed "
                                "files' old keys one by one", exc)
                    self._multi_delete = False
                elif is_server_fault(exc):
                    # The store is failing: one request per key would fail as well,
                    # and each would wait out its retries.
                    return [], dict.fromkeys(keys, str(exc))
            except Exception as exc:  # noqa: BLE001 - each key is tried on its own below
                log.warning("Delete Multiple of %d keys failed (%s); deleting them one by "
                            "one", len(keys), exc)
            else:
                for err in failed:
                    why = f"{err.code} {err.message}"
                    if err.code in RETRYABLE_CODES:
                        retry[err.key] = why
                    else:
                        _log_undeleted(err.key, why)
                refused = {err.key for err in failed}
                return [key for key in keys if key not in refused], retry
        gone = []
        for key in keys:
            try:
                await self._run(self.sync.delete_object, key)
            except CosError as exc:
                if is_retryable(exc):
                    retry[key] = str(exc)
                else:
                    _log_undeleted(key, str(exc))
            except Exception as exc:  # noqa: BLE001 - reported here, nobody else waits for it
                _log_undeleted(key, str(exc))
            else:
                gone.append(key)
        return gone, retry

    async def wait_deletes(self, prefix: str | None = None) -> None:
        """Wait for the background deletes under ``prefix`` (a directory's ``fsync``:
        fails as a call naming them would). Without a prefix (at unmount), give
        every pending key one more attempt and wait for it; the keys that fail
        again stay in the journal (cosfs.old_keys) for the next mount."""
        if prefix is not None:
            await self._fence((), {"prefix": prefix})
            return
        pending = list(self._deleting)
        self._retry_now(pending)
        if self._queued:
            self._hurry.set()
        for key in pending:
            while key in self._deleting and key not in self._failed:
                await self._deleting[key].wait()

    async def _fence(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        while blocking := self._blocking(args, kwargs):
            self._retry_now(blocking)  # someone needs them gone: no pause
            if any(key in self._queued for key in blocking):
                self._hurry.set()  # someone waits: no lingering for company
            # (A key already in flight needs no hurry: setting it would send the
            # keys queued since without the rest of their linger.)
            key = blocking[0]
            await self._deleting[key].wait()
            if key in self._failed:  # the attempt this call waited for failed
                raise CosError(503, "ServiceUnavailable",
                               f"the old key of a renamed file is not deleted yet "
                               f"({self._failed[key]})", operation="DeleteObject", key=key)

    def _blocking(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        """The keys, queued or in flight, a call with these arguments must wait for."""
        keys = [a for a in _strings(args) if a in self._deleting]
        prefix = kwargs.get("prefix")
        if isinstance(prefix, str):
            keys += [k for k in self._deleting if k.startswith(prefix)]
        return keys


def _log_undeleted(key: str, why: str) -> None:
    log.error("could not delete %r after renaming it: %s", key, why)


def _strings(args: Iterable[Any]) -> Iterable[str]:
    """The strings among ``args``, looking one level into lists (a batch of keys)."""
    for a in args:
        if isinstance(a, str):
            yield a
        elif isinstance(a, list | tuple):
            yield from (x for x in a if isinstance(x, str))
