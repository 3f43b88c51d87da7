"""The gate that lets a directory rename run alone in the trees it moves (pure
logic on a tree of inode numbers; the mount tests cover the calls it keeps out)."""

from __future__ import annotations

import trio
import trio.testing

from cosfs.tree_gate import TreeGate

# 1 is the root; 2 and 3 are directories in it; 4 is in 2, 5 in 4.
PARENTS = {2: 1, 3: 1, 4: 2, 5: 4}


def gate() -> TreeGate:
    return TreeGate(PARENTS.get)


def run(main) -> None:
    """Run ``main``; a deadlock fails the test instead of hanging it."""
    async def bounded() -> None:
        with trio.fail_after(5):
            await main()

    trio.run(bounded)


async def call(g: TreeGate, inodes: tuple[int, ...], log: list[str], name: str,
               hold: trio.Event | None = None) -> None:
    await g.enter(inodes)
    try:
        log.append(f"{name} began")
        if hold is not None:
            await hold.wait()
    finally:
        g.leave(inodes)
        log.append(f"{name} ended")


async def rename(g: TreeGate, tops: tuple[int, ...], own: tuple[int, ...], log: list[str],
                 name: str, hold: trio.Event) -> None:
    await g.enter(own)
    try:
        async with g.moving(tops, own):
            log.append(f"{name} moving")
            await hold.wait()
        log.append(f"{name} done")
    finally:
        g.leave(own)


def test_calls_below_a_moving_tree_wait_for_its_end_and_others_do_not() -> None:
    async def main() -> None:
        g, log, moved = gate(), [], trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rename, g, (2,), (1,), log, "mv", moved)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(call, g, (5,), log, "deep")  # two levels below
            nursery.start_soon(call, g, (2,), log, "top")  # the moved directory
            nursery.start_soon(call, g, (3,), log, "beside")
            nursery.start_soon(call, g, (1,), log, "parent")
            await trio.testing.wait_all_tasks_blocked()
            assert set(log) == {"mv moving", "beside began", "beside ended",
                                "parent began", "parent ended"}
            moved.set()
        assert log.index("mv done") < log.index("deep began")
        assert log.index("mv done") < log.index("top began")

    run(main)


def test_a_rename_waits_for_the_calls_under_way_below_but_not_for_its_own() -> None:
    async def main() -> None:
        g, log, closing, moved = gate(), [], trio.Event(), trio.Event()
        moved.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, g, (4,), log, "close", closing)
            await trio.testing.wait_all_tasks_blocked()
            # The rename counts itself on its parents, 1 and 4's own directory 2
            # among them (a move into a subdirectory, as the kernel may ask).
            nursery.start_soon(rename, g, (2,), (1, 4), log, "mv", moved)
            await trio.testing.wait_all_tasks_blocked()
            assert log == ["close began"]
            nursery.start_soon(call, g, (4,), log, "later")
            await trio.testing.wait_all_tasks_blocked()
            assert log == ["close began"]  # the rename holds the tree already
            closing.set()
        assert log[:3] == ["close began", "close ended", "mv moving"]
        assert log.index("mv done") < log.index("later began")

    run(main)


def test_a_rename_inside_a_tree_waiting_to_move_goes_first() -> None:
    """The inner rename was counted (on its parent) before the outer one took the
    tree: the outer one waits for it, and it does not wait for the outer one."""
    async def main() -> None:
        g, log, inner_hold, outer_hold = gate(), [], trio.Event(), trio.Event()
        outer_hold.set()
        async with trio.open_nursery() as nursery:
            await g.enter((4,))  # the inner rename's call, under way

            async def inner() -> None:
                try:
                    async with g.moving((5,), (4,)):
                        log.append("inner moving")
                        await inner_hold.wait()
                finally:
                    g.leave((4,))

            nursery.start_soon(rename, g, (2,), (1,), log, "outer", outer_hold)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(inner)
            await trio.testing.wait_all_tasks_blocked()
            assert log == ["inner moving"]
            inner_hold.set()
        assert log == ["inner moving", "outer moving", "outer done"]

    run(main)


def test_two_renames_of_one_tree_take_turns() -> None:
    async def main() -> None:
        g, log, first, second = gate(), [], trio.Event(), trio.Event()
        second.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rename, g, (2,), (1,), log, "a", first)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(rename, g, (3, 2), (1,), log, "b", second)
            await trio.testing.wait_all_tasks_blocked()
            assert log == ["a moving"]
            first.set()
        assert log == ["a moving", "a done", "b moving", "b done"]

    run(main)
