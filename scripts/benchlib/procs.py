"""Processes, mounts and the machine: the small OS-level helpers of the harness."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    """A loopback port nobody listens on right now (for servers without ``--port 0``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a child in its own session, so a Ctrl-C in the terminal reaches only us:
    we then unmount and stop everything in order instead of leaving dead mounts."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def _parent_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = _parent_map()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def rss_kib(pid: int) -> int:
    """Resident memory of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of one process in clock ticks (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


class ProcSampler:
    """Samples a process tree in a thread: peak summed VmRSS, and CPU seconds used
    while sampling (by the tree, and by one more process such as the server).

    ``pid_of`` is asked at every sample because a workload may remount (new pid)."""

    def __init__(self, pid_of: Callable[[], int | None], other_pid: int | None = None,
                 interval: float = 0.1) -> None:
        self.pid_of = pid_of
        self.other_pid = other_pid
        self.interval = interval
        self.peak_kib = 0
        self._ticks: dict[int, tuple[int, int]] = {}  # pid -> (first seen, last seen)
        self._other: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        pid = self.pid_of()
        if pid is not None:
            tree = process_tree(pid)
            self.peak_kib = max(self.peak_kib, sum(rss_kib(p) for p in tree))
            for p in tree:
                now = cpu_ticks(p)
                first = self._ticks.get(p, (now, now))[0]
                self._ticks[p] = (first, max(now, first))
        if self.other_pid is not None:
            now = cpu_ticks(self.other_pid)
            self._other = (self._other[0] if self._other else now, now)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)
        self._sample()

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take the last sample and stop (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_kib / 1024

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the sampled tree (a process's last ticks before it exits
        within one interval are missed)."""
        return sum(b - a for a, b in self._ticks.values()) / os.sysconf("SC_CLK_TCK")

    @property
    def other_cpu_s(self) -> float | None:
        if self._other is None:
            return None
        return (self._other[1] - self._other[0]) / os.sysconf("SC_CLK_TCK")


class Watchdog:
    """Calls ``on_expiry`` once if the block runs longer than ``seconds``. Killing the
    FUSE daemon is what unblocks a stuck syscall (it then fails with ENOTCONN)."""

    def __init__(self, seconds: float, on_expiry: Callable[[], None]) -> None:
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire, args=(on_expiry,))
        self._timer.daemon = True

    def _fire(self, on_expiry: Callable[[], None]) -> None:
        self.fired = True
        on_expiry()

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def drop_caches() -> bool:
    """Write back and drop the page cache, dentries and inodes; False if not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def _first(path: str, prefix: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


def machine_info() -> dict[str, object]:
    """What the numbers were measured on, from /proc (and the tools' own versions)."""
    mem_kib = int(_first("/proc/meminfo", "MemTotal").split()[0] or 0)
    with open("/proc/version") as f:
        kernel = f.read().split()[2]
    return {
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": kernel,
        "python": platform.python_version(),
        "s3fs": _version(["s3fs", "--version"]),
        "rclone": _version(["rclone", "version"]),
        "rsync": _version(["rsync", "--version"]),
    }


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05,
               what: str = "condition") -> float:
    """Poll ``predicate`` until true; returns the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
