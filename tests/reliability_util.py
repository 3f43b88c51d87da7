"""Helpers shared by the reliability tests (model, faults, bad input, security).

``record`` appends one row of figures to ``$COSFS_REPORT_DIR/<section>.jsonl`` when
that variable is set (``scripts/reliability-report`` sets it and renders the rows
into the tables of docs/RELIABILITY.md); otherwise it does nothing. Tests compute
and assert their figures either way, so a report only ever shows what was checked.

``timed`` runs one filesystem call with a deadline: a call into a FUSE mount that
never returns cannot be interrupted, so it runs in a daemon thread and the test
fails (naming the call) instead of hanging.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def record(section: str, row: dict[str, Any]) -> None:
    """Append ``row`` to the report section ``section`` (if a report is being made)."""
    out = os.environ.get("COSFS_REPORT_DIR")
    if not out:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / f"{section}.jsonl", "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


class Hang(AssertionError):
    """A filesystem call did not return within its deadline."""


def timed(fn: Callable[[], T], timeout: float, what: str = "") -> T:
    """``fn()`` with a deadline; raises :class:`Hang` if it does not return in time
    (the thread stays blocked until the mount is killed)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise Hang(f"{what or fn!r} did not return within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass
class Tally:
    """Outcome counts of the operations of one fault scenario."""

    tried: int = 0
    ok: int = 0
    eio: int = 0
    other: dict[str, int] = field(default_factory=dict)
    slowest: float = 0.0

    def run(self, fn: Callable[[], T], timeout: float, what: str = "") -> T | None:
        """Run one operation under ``timeout``; count its outcome. Returns its value,
        or None when it failed with an OSError (EIO or another errno)."""
        self.tried += 1
        start = time.monotonic()
        try:
            value = timed(fn, timeout, what)
        except OSError as exc:
            if exc.errno == errno.EIO:
                self.eio += 1
            else:
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                self.other[name] = self.other.get(name, 0) + 1
            return None
        finally:
            self.slowest = max(self.slowest, time.monotonic() - start)
        self.ok += 1
        return value
