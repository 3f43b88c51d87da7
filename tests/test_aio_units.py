"""The background DELETEs of AsyncClient: batching, the fence, the fallback (pure
logic, against a client that records its calls; the mount tests cover the store)."""

from __future__ import annotations

import threading
import time

import trio

from cosfs.aio import AsyncClient
from cosfs.cos import CosError, DeleteError


class Recorder:
    """A blocking client that records what it is asked to do."""

    def __init__(self, multi_error: CosError | None = None,
                 failing: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, object]] = []
        self.multi_error = multi_error
        self.failing = failing

    def delete_objects(self, keys: list[str]) -> list[DeleteError]:
        self.calls.append(("multi", list(keys)))
        if self.multi_error is not None:
            raise self.multi_error
        return [DeleteError(k, "AccessDenied", "no") for k in keys if k in self.failing]

    def delete_object(self, key: str) -> None:
        self.calls.append(("one", key))
        if key in self.failing:
            raise CosError(403, "AccessDenied", operation="DeleteObject")

    def head_object(self, key: str) -> str:
        self.calls.append(("head", key))
        return key


def run(fn, rec: Recorder, linger: float) -> None:
    async def main() -> None:
        await fn(AsyncClient(rec, delete_linger=linger))

    trio.run(main)


def test_deletes_in_a_row_share_one_request() -> None:
    async def go(c: AsyncClient) -> None:
        for k in ("a", "b", "c"):
            c.delete_soon(k)
            c.delete_soon(k)  # already on its way: nothing more
        await c.wait_deletes()

    rec = Recorder()
    run(go, rec, 0.05)
    assert rec.calls == [("multi", ["a", "b", "c"])]


def test_a_lone_delete_is_a_plain_delete() -> None:
    async def go(c: AsyncClient) -> None:
        c.delete_soon("a")
        await c.wait_deletes()

    rec = Recorder()
    run(go, rec, 0.01)
    assert rec.calls == [("one", "a")]


def test_a_call_that_names_a_lingering_key_sends_it_at_once() -> None:
    """The linger is for other deletes to join, never for a request of the mount."""
    took: list[float] = []

    async def go(c: AsyncClient) -> None:
        c.delete_soon("x/a")
        c.delete_soon("x/b")
        t0 = time.monotonic()
        assert await c.head_object("x/a") == "x/a"
        took.append(time.monotonic() - t0)
        c.delete_soon("y/c")
        t0 = time.monotonic()
        await c.wait_deletes("y/")  # a directory's fsync
        took.append(time.monotonic() - t0)

    rec = Recorder()
    run(go, rec, 60.0)
    assert rec.calls == [("multi", ["x/a", "x/b"]), ("head", "x/a"), ("one", "y/c")]
    assert max(took) < 5


def test_a_store_without_delete_multiple_gets_single_deletes_from_then_on() -> None:
    async def go(c: AsyncClient) -> None:
        for k in ("a", "b"):
            c.delete_soon(k)
        await c.wait_deletes()
        for k in ("c", "d"):
            c.delete_soon(k)
        await c.wait_deletes()

    rec = Recorder(CosError(501, "NotImplemented", operation="DeleteMultipleObjects"))
    run(go, rec, 0.01)
    assert rec.calls == [("multi", ["a", "b"]), ("one", "a"), ("one", "b"),
                         ("one", "c"), ("one", "d")]


def test_keys_the_store_refused_are_logged_and_not_reported_gone(caplog) -> None:
    gone: list[str] = []

    async def go(c: AsyncClient) -> None:
        c.on_deleted = gone.extend
        for batch in (("a", "b"), ("c",), ("d", "e")):
            for k in batch:
                c.delete_soon(k)
            await c.wait_deletes()

    rec = Recorder(failing=("b", "c", "e"))
    run(go, rec, 0.01)
    assert rec.calls == [("multi", ["a", "b"]), ("one", "c"), ("multi", ["d", "e"])]
    assert "could not delete 'b' after renaming it: AccessDenied" in caplog.text
    assert "could not delete 'c' after renaming it:" in caplog.text
    assert gone == ["a", "d"]


def test_a_failed_delete_multiple_falls_back_for_that_batch_only() -> None:
    async def go(c: AsyncClient) -> None:
        for batch in (("a", "b"), ("c", "d")):
            for k in batch:
                c.delete_soon(k)
            await c.wait_deletes()

    rec = Recorder(CosError(400, "RequestTimeout", operation="DeleteMultipleObjects"))
    run(go, rec, 0.01)
    assert rec.calls == [("multi", ["a", "b"]), ("one", "a"), ("one", "b"),
                         ("multi", ["c", "d"]), ("one", "c"), ("one", "d")]


def test_after_a_hurried_batch_the_next_key_lingers_again() -> None:
    """A request that hurried one batch does not leave the next key without its
    linger (so renames after it still share a request)."""
    async def go(c: AsyncClient) -> None:
        c.delete_soon("a")
        await c.head_object("a")  # hurries a's batch
        await c.wait_deletes()
        c.delete_soon("b")
        c.delete_soon("c")
        await trio.sleep(0.01)  # well inside the linger
        c.delete_soon("d")
        await c.wait_deletes()

    rec = Recorder()
    run(go, rec, 0.2)
    assert rec.calls == [("one", "a"), ("head", "a"), ("multi", ["b", "c", "d"])]


def test_waiting_for_a_key_in_flight_leaves_the_queued_keys_their_linger() -> None:
    """Only a key still queued is worth hurrying: one already sent gains nothing,
    and the keys queued since would go without the others that join them."""
    gate = threading.Event()

    class Held(Recorder):
        def delete_object(self, key: str) -> None:
            gate.wait(5)
            super().delete_object(key)

    async def go(c: AsyncClient) -> None:
        c.delete_soon("a")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.head_object, "a")  # hurries a: sent, held at the gate
            await trio.sleep(0.05)
            c.delete_soon("c")
            nursery.start_soon(c.head_object, "a")  # waits for a, already in flight
            await trio.sleep(0.05)
            gate.set()
            await trio.sleep(0.05)  # c lingers on past a's end...
            c.delete_soon("d")  # ...so d joins it
        await c.wait_deletes()

    rec = Held()
    run(go, rec, 0.5)
    assert rec.calls == [("one", "a"), ("head", "a"), ("head", "a"), ("multi", ["c", "d"])]
