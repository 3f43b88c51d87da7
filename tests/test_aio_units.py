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


class Failing(Recorder):
    """A store whose DELETEs (single or multiple) answer 503 until ``fixed``."""

    def __init__(self) -> None:
        super().__init__()
        self.fixed = False

    def _check(self) -> None:
        if not self.fixed:
            raise CosError(503, "ServiceUnavailable", operation="DeleteObject")

    def delete_objects(self, keys: list[str]) -> list[DeleteError]:
        self.calls.append(("multi", list(keys)))
        self._check()
        return []

    def delete_object(self, key: str) -> None:
        self.calls.append(("one", key))
        self._check()


def test_a_failed_delete_is_tried_again_until_it_succeeds(monkeypatch, caplog) -> None:
    monkeypatch.setattr("cosfs.aio.RETRY_FIRST", 0.05)
    gone: list[str] = []
    rec = Failing()

    async def go(c: AsyncClient) -> None:
        c.on_deleted = gone.extend
        c.delete_soon("a")
        c.delete_soon("b")
        while len(rec.calls) < 3:  # the first attempt and two more, 0.05 and 0.1 s on
            await trio.sleep(0.01)
        assert gone == []
        rec.fixed = True
        while not gone:
            await trio.sleep(0.01)

    run(go, rec, 0.01)
    # The batch failed as a whole (503): it was not split into single DELETEs.
    assert set(map(str, rec.calls)) == {str(("multi", ["a", "b"]))}
    assert gone == ["a", "b"]
    assert "could not delete 2 keys ('a'...) after renaming" in caplog.text


def test_a_call_naming_an_undeleted_key_fails_instead_of_seeing_it(monkeypatch) -> None:
    """While the store refuses the DELETE, a request for the old key tries it once
    more and fails (EIO in the mount), never shows the old name again."""
    monkeypatch.setattr("cosfs.aio.RETRY_FIRST", 60.0)  # only callers retry here
    rec = Failing()
    outcomes: list[str] = []

    async def go(c: AsyncClient) -> None:
        c.delete_soon("d/a")
        for _ in range(2):
            try:
                await c.head_object("d/a")
                outcomes.append("seen")
            except CosError as exc:
                outcomes.append(f"{exc.status} {exc.code}")
            try:
                await c.wait_deletes("d/")  # the directory's fsync
                outcomes.append("synced")
            except CosError:
                outcomes.append("not synced")
        rec.fixed = True
        assert await c.head_object("d/a") == "d/a"  # gone now: the HEAD goes out
        await c.wait_deletes("d/")

    run(go, rec, 60.0)
    assert outcomes == ["503 ServiceUnavailable", "not synced"] * 2
    assert rec.calls == [("one", "d/a")] * 5 + [("head", "d/a")]


def test_unmount_gives_an_undeleted_key_one_more_attempt_and_ends() -> None:
    rec = Failing()

    async def go(c: AsyncClient) -> None:
        c.delete_soon("a")
        while not rec.calls:  # the first attempt, in the background
            await trio.sleep(0.01)
        with trio.fail_after(5):  # the unmount does not hang on a failing store
            await c.wait_deletes()

    run(go, rec, 0.01)
    assert rec.calls == [("one", "a")] * 2


def test_failed_deletes_pause_between_attempts(monkeypatch) -> None:
    """The pause doubles after each failed attempt; a new key goes at once (after
    its linger), taking the failed ones with it, and does not cut the next pause."""
    monkeypatch.setattr("cosfs.aio.RETRY_FIRST", 0.3)
    times: list[float] = []

    class Timed(Failing):
        def delete_objects(self, keys: list[str]) -> list[DeleteError]:
            times.append(time.monotonic())
            return super().delete_objects(keys)

    rec = Timed()

    async def go(c: AsyncClient) -> None:
        c.delete_soon("a")
        c.delete_soon("b")
        await trio.sleep(0.45)  # attempts at about 0 and 0.3 s
        c.delete_soon("c")  # sent at once with a and b; the next try 1.2 s later
        await trio.sleep(0.55)

    run(go, rec, 0.01)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 2 and gaps[0] >= 0.28 and gaps[1] < 0.28, gaps
    assert rec.calls[-1] == ("multi", ["c", "a", "b"])
