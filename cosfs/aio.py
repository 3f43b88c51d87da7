"""Async access to the blocking COS client from the trio event loop.

The filesystem runs on trio; the client is blocking (http.client). Every call goes
to a worker thread through one shared ``trio.CapacityLimiter``, which bounds both
the number of threads and the number of HTTP requests in flight, so a burst of
FUSE requests never starts more connections than the client's pool holds.

It also runs the DELETEs nobody needs to wait for (the old key of a renamed file)
in the background, and fences them: a call that names such a key, or lists a
prefix of it, waits until it is gone, so no request ever sees the key or races
its deletion.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import trio

from .background import TaskSet

log = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncClient:
    """Wraps a :class:`cosfs.cos.CosClient`; ``await aclient.head_object(key)`` runs
    ``client.head_object(key)`` in a worker thread.

    Concurrency: any number of tasks may call at once; at most ``max_in_flight``
    calls run at the same time, the others wait for a slot in FIFO order.

    Invariant: while a background delete of a key runs (``delete_soon``), it is in
    ``_deleting``; every call whose string arguments include that key, or whose
    ``prefix`` argument starts it, first waits for the delete to end. So a later
    PUT or COPY to the key lands after the DELETE, and a HEAD or LIST never shows
    it. Used from the trio thread only.
    """

    def __init__(self, client: Any, max_in_flight: int = 32) -> None:
        self.sync = client
        self.limiter = trio.CapacityLimiter(max_in_flight)
        self._deleting: dict[str, trio.Event] = {}
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
        the client's retries is logged (and counted in the client's statistics):
        the old name then shows again, next to the new one, with the same bytes."""
        if key in self._deleting:
            return
        done = self._deleting[key] = trio.Event()
        self._deletes.spawn(self._delete, key, done)

    async def _delete(self, key: str, done: trio.Event) -> None:
        try:
            await self._run(self.sync.delete_object, key)
        except Exception as exc:  # noqa: BLE001 - reported here, nobody else waits for it
            log.error("could not delete %r after renaming it: %s", key, exc)
        finally:
            del self._deleting[key]
            done.set()

    async def wait_deletes(self, prefix: str | None = None) -> None:
        """Wait until no background delete runs (under ``prefix``, if given: the
        ``fsync`` of a directory)."""
        if prefix is None:
            await self._deletes.wait_idle()
        else:
            await self._fence((), {"prefix": prefix})

    async def _fence(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        while blocking := self._blocking(args, kwargs):
            await blocking[0].wait()

    def _blocking(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[trio.Event]:
        """The running deletes a call with these arguments must wait for."""
        events = [self._deleting[a] for a in _strings(args) if a in self._deleting]
        prefix = kwargs.get("prefix")
        if isinstance(prefix, str):
            events += [e for k, e in self._deleting.items() if k.startswith(prefix)]
        return events


def _strings(args: Iterable[Any]) -> Iterable[str]:
    """The strings among ``args``, looking one level into lists (a batch of keys)."""
    for a in args:
        if isinstance(a, str):
            yield a
        elif isinstance(a, list | tuple):
            yield from (x for x in a if isinstance(x, str))
