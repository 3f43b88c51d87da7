"""Background tasks of the data path that outlive the request that started them
(read-ahead GETs, part uploads, write-back flushes).

They run as trio system tasks, so no caller has to hold a nursery open; they are
cancelled when the trio run ends. A task's own errors are its business (it stores
them where a later request will see them); anything that escapes is logged here,
because an exception leaving a system task would crash the whole run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import trio

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskSet:
    """Tracks background tasks so a caller can wait until none is running.

    Concurrency: used from the trio thread only; ``wait_idle`` may be awaited by
    several tasks at once.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.running = 0
        self._idle = trio.Event()
        self._idle.set()

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start ``fn(*args)`` now, in the background."""
        if self.running == 0:
            self._idle = trio.Event()
        self.running += 1
        trio.lowlevel.spawn_system_task(self._run, fn, args, name=f"{self.name}:{fn.__name__}")

    async def _run(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        except Exception:
            log.exception("background task %s failed", fn.__name__)
        finally:
            self.running -= 1
            if self.running == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        while self.running:
            await self._idle.wait()


class Started(Generic[T]):
    """A call started now, in the background, whose outcome is awaited later or
    never (a request sent alongside another, in case its answer is needed).

    Its exception is kept for :meth:`outcome` and never logged: a caller that did
    not need the answer does not care why it failed. Used from the trio thread.
    """

    def __init__(self, tasks: TaskSet, fn: Callable[..., Awaitable[T]], *args: Any) -> None:
        self._done = trio.Event()
        self._value: T | None = None
        self._error: Exception | None = None
        tasks.spawn(self._run, fn, *args)

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> None:
        try:
            self._value = await fn(*args)
        except Exception as exc:
            self._error = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        """Until the call has returned or raised."""
        await self._done.wait()

    async def outcome(self) -> T:
        """What the call returned, once it has; raises what it raised."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


@contextlib.asynccontextmanager
async def open_nursery_unwrapped() -> AsyncIterator[trio.Nursery]:
    """A nursery whose first real failure propagates as itself rather than inside
    an ExceptionGroup, so callers of the data path see the OSError (EIO, ENOSPC)
    a child raised. The other children are cancelled as usual."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        first = _first_error(group)
        if first is None:
            raise
        raise first from None


def _first_error(group: BaseExceptionGroup) -> BaseException | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(exc)
        if exc is not None and not isinstance(exc, trio.Cancelled):
            return exc
    return None
