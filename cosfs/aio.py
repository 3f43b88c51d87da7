"""Async access to the blocking COS client from the trio event loop.

The filesystem runs on trio; the client is blocking (http.client). Every call goes
to a worker thread through one shared ``trio.CapacityLimiter``, which bounds both
the number of threads and the number of HTTP requests in flight, so a burst of
FUSE requests never starts more connections than the client's pool holds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class AsyncClient:
    """Wraps a :class:`cosfs.cos.CosClient`; ``await aclient.head_object(key)`` runs
    ``client.head_object(key)`` in a worker thread.

    Concurrency: any number of tasks may call at once; at most ``max_in_flight``
    calls run at the same time, the others wait for a slot in FIFO order.
    """

    def __init__(self, client: Any, max_in_flight: int = 32) -> None:
        self.sync = client
        self.limiter = trio.CapacityLimiter(max_in_flight)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker thread under the shared limit."""
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
