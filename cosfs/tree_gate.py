"""Lets a directory rename run alone in the trees it moves.

Why: a directory on COS is renamed key by key (:mod:`cosfs.moves`): list the keys
below it, copy each, delete the old ones, then give the inodes their new keys. The
kernel locks the two parent directories for a rename, not what lies below the one
moved, so a call on a file inside could run in the middle of it: a ``close()``
uploading to the old key after its copy was made (the move then deletes it, and
the new name keeps the old bytes), a ``mkdir`` or an ``unlink`` the listing missed
(the new directory left under the old prefix, the unlinked file copied back), a
read of a key just deleted. POSIX makes a rename atomic; here the calls on inodes
below a directory being renamed wait for it, and the rename waits for the calls
already under way there.

Invariants
    - ``_active`` counts the FUSE calls under way on each inode they act on (a
      name's parent directory, a handle's inode); every call is counted from
      before its first step to after its last.
    - While a tree is in ``_moving``, no call on an inode at or below its top
      starts: it waits for the end of the rename.
    - A rename takes a tree only once no other rename holds that same tree, and
      starts moving it only once no call on an inode at or below its top is
      under way but its own (a rename of a tree inside it is such a call).

Concurrency
    Trio thread only. A rename waiting for the calls below to end holds no lock
    that they wait for: the calls waiting at the gate are not counted yet, those
    counted never wait at it again.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

import trio


class TreeGate:
    """Keeps the calls below a directory being renamed out of its way. See the
    module docstring. ``parent_of(ino)`` is the parent directory of an inode, or
    None for the root or an inode no longer known."""

    def __init__(self, parent_of: Callable[[int], int | None]) -> None:
        self._parent_of = parent_of
        self._moving: dict[int, trio.Event] = {}
        self._active: dict[int, int] = {}  # inode -> calls under way on it
        self._ended = trio.lowlevel.ParkingLot()  # renames waiting for calls to end
        self._draining = 0  # how many wait there (asking the lot costs more)

    async def enter(self, inodes: tuple[int, ...]) -> None:
        """A call on ``inodes`` begins: wait for a rename of a tree holding one of
        them, then count the call. Pair with :meth:`leave`."""
        while self._moving and (rename := self._moving_around(inodes)) is not None:
            await rename.wait()  # the inodes may be elsewhere afterwards: look again
        active = self._active  # every FUSE call comes here: kept cheap
        for ino in inodes:
            active[ino] = active.get(ino, 0) + 1

    def leave(self, inodes: tuple[int, ...]) -> None:
        """The call :meth:`enter` counted has ended."""
        active = self._active
        for ino in inodes:
            left = active[ino] - 1
            if left:
                active[ino] = left
            else:
                del active[ino]
        if self._draining:
            self._ended.unpark_all()

    @contextlib.asynccontextmanager
    async def moving(self, tops: Iterable[int], own: tuple[int, ...]) -> AsyncIterator[None]:
        """Hold the trees under the directories ``tops`` for a rename, whose own
        call counted ``own`` (:meth:`enter`): once no other call under them is
        under way, and until the block ends, calls on them wait."""
        tops = tuple(tops)
        # Only a rename of the same tree waits here. One of a tree around it is
        # still waiting for this call to end (it was counted before that rename
        # took the tree, or it would be waiting at the gate), and one of a tree
        # inside it was counted on its parent, which the wait below sees.
        while (rename := next((self._moving[t] for t in tops if t in self._moving),
                              None)) is not None:
            await rename.wait()
        done = trio.Event()
        for top in tops:
            self._moving[top] = done
        try:
            while self._calls_below(set(tops), Counter(own)):
                self._draining += 1
                try:
                    await self._ended.park()
                finally:
                    self._draining -= 1
            yield
        finally:
            for top in tops:
                del self._moving[top]
            done.set()

    def _calls_below(self, tops: set[int], own: Counter[int]) -> bool:
        """Whether a call other than ``own`` is under way at or below ``tops``."""
        return any(count > own[ino] and not tops.isdisjoint(self._ancestry(ino))
                   for ino, count in self._active.items())

    def _moving_around(self, inodes: tuple[int, ...]) -> trio.Event | None:
        """The end of a rename moving a tree one of ``inodes`` is in, if any."""
        return next((self._moving[node] for ino in inodes for node in self._ancestry(ino)
                     if node in self._moving), None)

    def _ancestry(self, ino: int) -> Iterator[int]:
        """``ino`` and the directories above it, up to the root."""
        node: int | None = ino
        while node is not None:
            yield node
            node = self._parent_of(node)
