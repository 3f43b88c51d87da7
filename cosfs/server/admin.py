"""The admin endpoint (``/_admin/...`` on the bare host): JSON in and out, unsigned.

| request                       | effect                                          |
|-------------------------------|-------------------------------------------------|
| ``GET  /_admin/stats``        | ``{"ops": {op: counters}}``                     |
| ``POST /_admin/stats/reset``  | zero the counters                               |
| ``GET  /_admin/faults``       | ``{"faults": {op: settings}}``                  |
| ``POST /_admin/faults``       | set faults of one operation (or ``*``)          |
| ``DELETE /_admin/faults``     | clear every fault                               |
| ``GET  /_admin/buckets``      | ``{"buckets": [names]}``                        |
| ``POST /_admin/buckets``      | ``{"name": "x-1250000000"}`` creates a bucket   |
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .faults import FaultTable, Stats, parse_fault
from .routing import BUCKET_NAME
from .store import Store


@dataclass(frozen=True)
class Admin:
    """Answers admin requests from any handler thread; the store, fault table and
    stats it drives are thread-safe themselves."""

    store: Store
    faults: FaultTable
    stats: Stats

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """(HTTP status, JSON document) for ``method`` on ``/_admin/<path>``."""
        try:
            document = json.loads(body) if body.strip() else {}
        except ValueError:
            return 400, {"error": "the body is not JSON"}
        if not isinstance(document, dict):
            return 400, {"error": "the body must be a JSON object"}
        route = {
            ("GET", "stats"): self._stats,
            ("POST", "stats/reset"): self._reset_stats,
            ("GET", "faults"): self._faults,
            ("POST", "faults"): self._set_faults,
            ("DELETE", "faults"): self._clear_faults,
            ("GET", "buckets"): self._buckets,
            ("POST", "buckets"): self._create_bucket,
        }.get((method, path))
        if route is None:
            return 404, {"error": f"no admin resource {method} /_admin/{path}"}
        try:
            return 200, route(document)
        except ValueError as exc:
            return 400, {"error": str(exc)}

    def _stats(self, _: dict) -> dict:
        return {"ops": self.stats.snapshot()}

    def _reset_stats(self, _: dict) -> dict:
        self.stats.reset()
        return {}

    def _faults(self, _: dict) -> dict:
        return {"faults": self.faults.snapshot()}

    def _set_faults(self, document: dict) -> dict:
        op, fault = parse_fault(document)
        self.faults.set(op, fault)
        return self._faults(document)

    def _clear_faults(self, _: dict) -> dict:
        self.faults.clear()
        return {}

    def _buckets(self, _: dict) -> dict:
        return {"buckets": [name for name, _ in self.store.list_buckets()]}

    def _create_bucket(self, document: dict) -> dict:
        name = document.get("name")
        if not isinstance(name, str) or not BUCKET_NAME.match(name):
            raise ValueError("name must be a bucket name <name>-<APPID>")
        return {"name": name, "created": self.store.create_bucket(name)}
