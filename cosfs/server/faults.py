"""Fault injection settings and per-operation request counters of the server."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, fields

OPERATIONS = (
    "HeadBucket", "ListObjects", "HeadObject", "GetObject", "PutObject", "AppendObject",
    "PutObjectCopy", "DeleteObject", "DeleteMultipleObjects", "InitiateMultipartUpload",
    "UploadPart", "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload",
    "ListParts", "ListMultipartUploads", "PutBucket", "DeleteBucket", "ListBuckets",
)
ALL = "*"


@dataclass
class Fault:
    """Fault settings of one operation; ``None`` = not set here (falls back to ``*``)."""

    error_rate: float | None = None
    error_status: int | None = None
    drop_rate: float | None = None
    latency_ms: float | None = None  # before the request is served
    answer_latency_ms: float | None = None  # after: it is served at once, answered late


@dataclass(frozen=True)
class Decision:
    """What to do to one request: wait, then fail with ``error_status`` or cut the
    connection mid-body (``drop``), or neither; and how long to hold the answer back
    once the request has been served."""

    latency_s: float = 0.0
    error_status: int | None = None
    drop: bool = False
    answer_latency_s: float = 0.0


def _check_rate(name: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1]")
    return float(value)


def parse_fault(settings: dict) -> tuple[str, Fault]:
    """``{"op": ..., "error_rate": ..., ...}`` from the admin endpoint -> (op, fault);
    ``ValueError`` for an unknown operation or field or a bad value."""
    settings = dict(settings)
    op = settings.pop("op", ALL)
    if op != ALL and op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r}")
    known = {f.name for f in fields(Fault)}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
    fault = Fault()
    for name in ("error_rate", "drop_rate"):
        if settings.get(name) is not None:
            setattr(fault, name, _check_rate(name, settings[name]))
    status = settings.get("error_status")
    if status is not None:
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("error_status must be an HTTP error status (400..599)")
        fault.error_status = status
    for name in ("latency_ms", "answer_latency_ms"):
        latency = settings.get(name)
        if latency is not None:
            if not isinstance(latency, int | float) or isinstance(latency, bool) \
                    or latency < 0:
                raise ValueError(f"{name} must be a number >= 0")
            setattr(fault, name, float(latency))
    return op, fault


class FaultTable:
    """Faults per operation, changeable while the server runs.

    Each field of an operation's entry falls back to the same field of the ``*`` entry
    when unset. Thread-safe: one lock guards the table and the alternation between
    500 and 503 of injected errors without a fixed ``error_status``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}
        self._next_default_status = 500

    def set(self, op: str, fault: Fault) -> None:
        """Merge the fields set in ``fault`` into the entry of ``op`` (or ``*``)."""
        with self._lock:
            entry = self._faults.setdefault(op, Fault())
            for name, value in asdict(fault).items():
                if value is not None:
                    setattr(entry, name, value)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            settings = {op: {k: v for k, v in asdict(f).items() if v is not None}
                        for op, f in self._faults.items()}
        return {op: fields for op, fields in settings.items() if fields}

    def _effective(self, op: str) -> Fault:
        own, default = self._faults.get(op, Fault()), self._faults.get(ALL, Fault())
        return Fault(**{name: value if value is not None else getattr(default, name)
                        for name, value in asdict(own).items()})

    def decide(self, op: str) -> Decision:
        """Draw the faults of one request of ``op``."""
        with self._lock:
            fault = self._effective(op)
            status = None
            if fault.error_rate and random.random() < fault.error_rate:
                status = fault.error_status
                if status is None:
                    status = self._next_default_status
                    self._next_default_status = 1003 - status  # 500 <-> 503
            drop = status is None and bool(fault.drop_rate) and random.random() < fault.drop_rate
            return Decision((fault.latency_ms or 0.0) / 1000.0, status, drop,
                            (fault.answer_latency_ms or 0.0) / 1000.0)


@dataclass
class OpCounters:
    count: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    max_concurrent: int = 0
    injected: int = 0


class Stats:
    """Request counters per operation.

    ``max_concurrent`` is the highest number of requests of the operation in flight
    at once since the last reset. Thread-safe (one lock); counting costs one lock
    round per call, and the HTTP layer counts body bytes in chunks of ~1 MB.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[str, OpCounters] = defaultdict(OpCounters)
        self._in_flight: dict[str, int] = defaultdict(int)

    def begin(self, op: str) -> None:
        with self._lock:
            counters = self._ops[op]
            counters.count += 1
            self._in_flight[op] += 1
            counters.max_concurrent = max(counters.max_concurrent, self._in_flight[op])

    def end(self, op: str) -> None:
        with self._lock:
            self._in_flight[op] -= 1

    def add(self, op: str, *, errors: int = 0, bytes_in: int = 0, bytes_out: int = 0,
            injected: int = 0) -> None:
        with self._lock:
            counters = self._ops[op]
            counters.errors += errors
            counters.bytes_in += bytes_in
            counters.bytes_out += bytes_out
            counters.injected += injected

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {op: asdict(c) for op, c in sorted(self._ops.items())}

    def reset(self) -> None:
        """Zero the counters; requests in flight stay counted as concurrent."""
        with self._lock:
            self._ops.clear()
            for op, n in self._in_flight.items():
                if n:
                    self._ops[op].max_concurrent = n
