"""Per-operation counters of the COS client (shown by ``cosfs status``)."""

from __future__ import annotations

import threading
from collections import defaultdict

COUNTERS = ("calls", "requests", "errors", "retries", "bytes_sent", "bytes_received")


class ClientStats:
    """Counters keyed by operation name (``GetObject``, ``PutObject``...).

    ``calls`` counts client method calls, ``requests`` HTTP attempts (calls plus
    retries), ``errors`` calls that finally failed. Thread-safe: every update and
    snapshot holds one lock, so a snapshot is consistent across operations.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))

    def add(self, op: str, **deltas: int) -> None:
        with self._lock:
            counters = self._ops[op]
            for name, delta in deltas.items():
                counters[name] += delta

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy: ``{"GetObject": {"calls": 3, ...}, ..., "total": {...}}``."""
        with self._lock:
            ops = {op: dict(counters) for op, counters in sorted(self._ops.items())}
        total = dict.fromkeys(COUNTERS, 0)
        for counters in ops.values():
            for name, value in counters.items():
                total[name] += value
        ops["total"] = total
        return ops
