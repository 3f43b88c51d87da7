"""Runs every workload ``repeat`` times on every mount, each run on a freshly started
mount after the page cache was dropped, and records what happened."""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

from .mounts import Mount, MountEnv, make_mount
from .procs import ProcSampler, Watchdog, drop_caches
from .servers import Server
from .workloads import Ctx, Session, Workload


@dataclass
class RunResult:
    workload: str
    mount: str  # "server" for workloads without a mount
    rep: int
    values: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    cpu_s: float | None = None  # CPU seconds of the mount process(es) during the run
    server_cpu_s: float | None = None  # ...and of the server
    requests: dict[str, int] | None = None  # the server's counters, minus ours
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict:
        return asdict(self)


class Runner:
    def __init__(self, ctx: Ctx, server: Server, menv: MountEnv, kinds: list[str],
                 repeat: int, can_drop: bool) -> None:
        self.ctx = ctx
        self.server = server
        self.kinds = kinds
        self.repeat = repeat
        self.can_drop = can_drop
        self.mounts: dict[str, Mount] = {k: make_mount(k, menv) for k in kinds}
        self.results: list[RunResult] = []

    def run_all(self, workloads: list[Workload]) -> list[RunResult]:
        for wl in workloads:
            _log(f"setting up {wl.name}")
            wl.setup(self.ctx)
        for wl in workloads:
            for rep in range(self.repeat):
                if not wl.needs_mount:
                    self._record(self._run_without_mount(wl, rep))
                    continue
                # Rotate the order so no mount always runs first (or last) in a round.
                order = self.kinds[rep % len(self.kinds):] + self.kinds[:rep % len(self.kinds)]
                for kind in order:
                    self._record(self._run_on_mount(wl, kind, rep))
        return self.results

    def stop_all(self) -> None:
        """Unmount whatever is still mounted (Ctrl-C, errors): never leave one behind."""
        for mount in self.mounts.values():
            try:
                mount.stop(timeout=30)
            except Exception:  # noqa: BLE001 - best effort on the way out
                mount.kill()

    def _drop(self) -> None:
        if self.can_drop:
            drop_caches()

    def _run_without_mount(self, wl: Workload, rep: int) -> RunResult:
        result = RunResult(wl.name, "server", rep)
        t0 = time.monotonic()
        self._drop()
        try:
            wl.warm_server(self.ctx, None)
            result.values = wl.run(self.ctx, None, f"server-r{rep}", None)
        except Exception as exc:  # noqa: BLE001 - a failed run is a result too
            result.error = _describe(exc)
        result.seconds = time.monotonic() - t0
        return result

    def _run_on_mount(self, wl: Workload, kind: str, rep: int) -> RunResult:
        mount, tag = self.mounts[kind], f"{kind}-r{rep}"
        result = RunResult(wl.name, kind, rep)
        t0 = time.monotonic()
        state = None
        try:
            state = wl.prepare(self.ctx, tag)
            self._drop()
            wl.warm_server(self.ctx, state)
            self._start(mount, f"{wl.name}-{tag}")
            session = Session(mount, lambda: self._restart(mount, f"{wl.name}-{tag}-2"))
            result.notes = session.notes
            with ProcSampler(lambda: mount.pid, self.server.proc.pid) as sampler, \
                    Watchdog(self.ctx.sizes.timeout * 2, mount.kill) as dog:
                try:
                    result.values = wl.run(self.ctx, session, tag, state)
                finally:
                    sampler.stop()  # before the numbers are read
                    result.peak_rss_mb = round(sampler.peak_mb, 1)
                    result.cpu_s = round(sampler.cpu_s, 2)
                    result.server_cpu_s = _round(sampler.other_cpu_s)
                    # Also after a failure: what was asked of the server says why.
                    result.requests = self._requests()
            if dog.fired:
                raise TimeoutError("the run hit the watchdog; the mount was killed")
        except Exception as exc:  # noqa: BLE001 - a failed run is a result too
            result.error = _describe(exc)
            result.values = {}
            result.notes += [f"{kind} log: {line}" for line in mount.log_errors()]
        except KeyboardInterrupt:
            result.error = "interrupted"
            raise
        finally:
            self._stop(mount, result)
            try:
                wl.cleanup(self.ctx, tag, state)
            except Exception as exc:  # noqa: BLE001 - leftovers only cost disk space
                result.notes.append(f"cleanup failed: {_describe(exc)}")
        result.seconds = time.monotonic() - t0
        return result

    def _start(self, mount: Mount, label: str) -> None:
        mount.start(label)
        # Count only the workload's requests, not the mount's start-up.
        self.server.reset_stats()
        self.ctx.store.reset_counts()

    def _restart(self, mount: Mount, label: str) -> None:
        mount.stop()
        self._drop()
        mount.start(label)

    def _stop(self, mount: Mount, result: RunResult) -> None:
        try:
            rc = mount.stop()
        except Exception as exc:  # noqa: BLE001
            mount.kill()
            result.notes.append(f"unmount failed: {_describe(exc)}")
            return
        if rc not in (0, None):
            result.notes.append(f"{mount.kind} exited {rc} at unmount")

    def _requests(self) -> dict[str, int] | None:
        try:
            stats = self.server.stats()
        except OSError:
            return None
        if stats is None:
            return None
        own = self.ctx.store.own_requests
        mine = {op: n - own.get(op, 0) for op, n in stats.items()}
        return {op: n for op, n in sorted(mine.items()) if n > 0}

    def _record(self, r: RunResult) -> None:
        self.results.append(r)
        _log(_progress_line(r))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _describe(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({frame[0].name}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"[:400]


def _progress_line(r: RunResult) -> str:
    head = f"[{r.workload} r{r.rep + 1} {r.mount}]"
    if r.error:
        return f"{head} ERROR {r.error}"
    vals = "  ".join(f"{k}={v:.4g}" for k, v in r.values.items())
    rss = f"  rss={r.peak_rss_mb:.0f}MB" if r.peak_rss_mb is not None else ""
    if r.cpu_s is not None:
        rss += f"  cpu={r.cpu_s:.1f}s"
    if r.server_cpu_s is not None:
        rss += f" server_cpu={r.server_cpu_s:.1f}s"
    notes = f"  ({'; '.join(r.notes)})" if r.notes else ""
    return f"{head} {vals}{rss}  [{r.seconds:.0f}s]{notes}"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
