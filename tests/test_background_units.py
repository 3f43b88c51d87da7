"""cosfs.background.Started: a call started in the background, its outcome awaited
later or never (pure logic, in a trio run)."""

from __future__ import annotations

import logging

import pytest
import trio

from cosfs.background import Started, TaskSet


async def _answer(value: int, delay: float) -> int:
    await trio.sleep(delay)
    return value


async def _fail(delay: float) -> int:
    await trio.sleep(delay)
    raise OSError(5, "no answer")


def test_the_outcome_is_what_the_call_returned() -> None:
    async def main() -> None:
        started = Started(TaskSet("t"), _answer, 7, 0.01)
        assert not started.done  # running in the background, not yet returned
        assert await started.outcome() == 7
        assert started.done

    trio.run(main)


def test_an_error_is_raised_only_to_whoever_asks_for_the_outcome(caplog) -> None:
    async def main() -> None:
        tasks = TaskSet("t")
        unasked = Started(tasks, _fail, 0)
        asked = Started(tasks, _fail, 0)
        await unasked.wait()  # it failed; nothing is raised by waiting
        with pytest.raises(OSError, match="no answer"):
            await asked.outcome()
        await tasks.wait_idle()

    with caplog.at_level(logging.DEBUG):
        trio.run(main)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
