"""``cosfs status [MOUNTPOINT] [--json] [--watch]``: what each mount is doing.

For every cosfs mount in ``/proc/mounts`` (type ``fuse.cosfs``), or the one given,
asks the mount process over its control channel (:mod:`cosfs.control`) and shows
its uploads (a progress bar each, with rate and ETA), cache use, read-ahead hit
ratio, request counts, errors and retries per COS operation, and what crash
recovery did at mount time.

Output is plain text without terminal escapes unless stdout is a terminal (and
``NO_COLOR`` is unset); ``--json`` prints one JSON array (with ``--watch``, one
array per line). Exit status: 0, or 1 when a mount could not be asked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from cosfs import control

FSTYPE = "fuse.cosfs"
BAR_WIDTH = 24
KEY_WIDTH = 40


# -- finding mounts ---------------------------------------------------------------


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/mounts of type fuse.cosfs."""

    source: str
    mountpoint: str
    owner_uid: int | None


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != FSTYPE:
            continue
        owner = re.search(r"(?:^|,)user_id=(\d+)(?:,|$)", fields[3])
        entries.append(MountEntry(_unescape(fields[0]), _unescape(fields[1]),
                                  int(owner.group(1)) if owner else None))
    return entries


def cosfs_mounts() -> list[MountEntry]:
    with open("/proc/self/mounts") as f:
        return parse_mounts(f.read())


def find_mount(path: str) -> MountEntry | None:
    """The cosfs mount at ``path``. The plain absolute path is tried first: resolving
    symlinks stats the mount point, which hangs if the mount process does."""
    mounts = cosfs_mounts()
    plain = os.path.abspath(path)
    found = next((m for m in mounts if m.mountpoint == plain), None)
    if found is None:
        real = os.path.realpath(path)
        found = next((m for m in mounts if m.mountpoint == real), None)
    return found


def ask(entry: MountEntry, timeout: float = 5.0) -> dict[str, Any]:
    """The mount's status, or ``{"error": ...}``; always with mountpoint and source."""
    base = {"mountpoint": entry.mountpoint, "source": entry.source}
    try:
        return {**base, **control.request_mount(entry.mountpoint, entry.owner_uid,
                                                "status", timeout)}
    except control.ControlError as exc:
        return {**base, "error": str(exc)}


def collect(mountpoint: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Statuses of every cosfs mount, or of ``mountpoint``; plus an error message
    when ``mountpoint`` is not a cosfs mount. A mount point already unmounted whose
    process still finishes its uploads answers too."""
    if mountpoint is None:
        return [ask(m) for m in cosfs_mounts()], None
    entry = find_mount(mountpoint)
    if entry is not None:
        return [ask(entry)], None
    lingering = ask(MountEntry("", os.path.realpath(mountpoint), None))
    if "error" not in lingering:
        return [lingering], None
    return [], f"{mountpoint} is not a cosfs mount"


# -- formatting -------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@dataclass(frozen=True)
class Style:
    """How to draw: ``ansi`` allows escapes (bold, colour) and block characters."""

    ansi: bool

    @classmethod
    def for_stream(cls, stream: TextIO) -> Style:
        tty = hasattr(stream, "isatty") and stream.isatty()
        return cls(ansi=bool(tty) and not os.environ.get("NO_COLOR"))

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.ansi else text

    def red(self, text: str) -> str:
        return f"\x1b[31m{text}\x1b[0m" if self.ansi else text

    def bar(self, fraction: float, width: int = BAR_WIDTH) -> str:
        filled = int(round(max(0.0, min(1.0, fraction)) * width))
        full, empty = ("\u2588", "\u2591") if self.ansi else ("#", "-")
        return "[" + full * filled + empty * (width - filled) + "]"

    def shorten(self, text: str, width: int = KEY_WIDTH) -> str:
        if len(text) <= width:
            return text
        dots = "\u2026" if self.ansi else "..."
        return dots + text[-(width - len(dots)):]


def upload_line(up: dict[str, Any], now: float, style: Style) -> str:
    """``key [#####-----] 40%  4.0 MiB / 10.0 MiB  1.2 MiB/s  ETA 5s``; rate and ETA
    from the average since the upload started (both clocks are the mount's)."""
    done, total = int(up.get("bytes_done", 0)), int(up.get("bytes_total", 0))
    fraction = done / total if total else 1.0
    elapsed = max(1e-3, now - float(up.get("started", now)))
    rate = done / elapsed
    if done >= total:
        eta = "finishing"
    elif rate > 0:
        eta = "ETA " + human_duration((total - done) / rate)
    else:
        eta = "ETA ?"
    return (f"{style.shorten(str(up.get('key', '')))}  {style.bar(fraction)} "
            f"{fraction * 100:3.0f}%  {human_bytes(done)} / {human_bytes(total)}  "
            f"{human_bytes(rate)}/s  {eta}")


def render_uploads(st: dict[str, Any], style: Style, indent: str = "  ") -> list[str]:
    uploads = st.get("uploads", [])
    pending = int(st.get("pending_files", 0))
    head = f"{indent}uploads: {len(uploads)} running, {pending} waiting"
    if pending:
        head += " (files with changes not uploading yet: still open, queued or failed)"
    now = float(st.get("now", time.time()))
    return [head, *(f"{indent}  {upload_line(u, now, style)}" for u in uploads)]


def _header(st: dict[str, Any], style: Style) -> str:
    m = st.get("mount", {})
    where = st["mountpoint"]
    what = m.get("bucket", st.get("source", ""))
    if m.get("prefix"):
        what += f":/{m['prefix']}"
    parts = [f"{style.bold(where)}: {what}"]
    if m.get("endpoint"):
        parts.append(f"at {m['endpoint']}")
    if "uptime" in st:
        parts.append(f"up {human_duration(st['uptime'])}")
    if "pid" in st:
        parts.append(f"pid {st['pid']}")
    flags = [f for f, on in (("read-only", m.get("read_only")),
                             ("write-back", m.get("writeback"))) if on]
    if flags:
        parts.append(f"({', '.join(flags)})")
    return ", ".join(parts[:1]) + (" " + ", ".join(parts[1:]) if parts[1:] else "")


def _cache_line(st: dict[str, Any]) -> str:
    c = st.get("cache", {})
    return (f"  cache: {human_bytes(c.get('used_bytes', 0))} of "
            f"{human_bytes(c.get('limit_bytes', 0))} used, "
            f"{human_bytes(c.get('free_bytes', 0))} free on disk "
            f"({c.get('open_files', 0)} open, {c.get('idle_files', 0)} kept, "
            f"{c.get('dirty_files', 0)} with changes) in {c.get('cache_dir', '?')}")


def _readahead_line(st: dict[str, Any]) -> str:
    ra = st.get("readahead", {})
    hits, misses = int(ra.get("hits", 0)), int(ra.get("misses", 0))
    ratio = f"{hits / (hits + misses) * 100:.1f}% hits" if hits + misses else "no reads yet"
    return (f"  read-ahead: {ratio} ({hits} hits, {misses} misses), "
            f"{human_bytes(ra.get('budget_used', 0))} of "
            f"{human_bytes(ra.get('budget_bytes', 0))} budget in use")


def _request_lines(st: dict[str, Any], style: Style) -> list[str]:
    ops = st.get("requests", {})
    rows = [(op, c) for op, c in ops.items() if op != "total" and c.get("calls")]
    if not rows:
        return ["  requests: none yet"]
    lines = [f"  requests: {'operation':<24}{'calls':>8}{'errors':>8}{'retries':>8}"
             f"{'sent':>12}{'received':>12}"]
    for op, c in [*rows, ("total", ops.get("total", {}))]:
        errors = f"{c.get('errors', 0):>8}"
        if c.get("errors"):
            errors = style.red(errors)
        lines.append(f"            {op:<24}{c.get('calls', 0):>8}{errors}"
                     f"{c.get('retries', 0):>8}{human_bytes(c.get('bytes_sent', 0)):>12}"
                     f"{human_bytes(c.get('bytes_received', 0)):>12}")
    return lines


def _recovery_lines(st: dict[str, Any]) -> list[str]:
    r = st.get("recovery", {})
    if not any(r.get(k) for k in ("uploaded", "preserved", "aborted_uploads", "failed")):
        return ["  recovered at mount: nothing to do"]
    lines = [f"  recovered at mount: {r.get('uploaded', 0)} uploaded, "
             f"{r.get('preserved', 0)} kept locally (changed on the server), "
             f"{r.get('failed', 0)} failed (retried at the next mount), "
             f"{r.get('aborted_uploads', 0)} stale multipart uploads aborted"]
    lines += [f"    uploaded {k}" for k in r.get("uploaded_keys", [])]
    lines += [f"    kept {p['key']} as {p['path']}" for p in r.get("preserved_files", [])]
    lines += [f"    failed {k}" for k in r.get("failed_keys", [])]
    return lines


def render(st: dict[str, Any], style: Style) -> str:
    """One mount's status as text."""
    if "error" in st:
        return f"{style.bold(st['mountpoint'])}: {style.red('no status')}: {st['error']}"
    lines = [_header(st, style)]
    if not st.get("mounted", True):
        lines.append("  unmounted; the mount process is finishing its uploads")
    lines += render_uploads(st, style)
    lines.append(_cache_line(st))
    lines.append(_readahead_line(st))
    lines += _request_lines(st, style)
    if st.get("fuse_errors"):
        lines.append(f"  failed file operations (see the log): {st['fuse_errors']}")
    lines += _recovery_lines(st)
    return "\n".join(lines)


# -- command ----------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cosfs status",
                                description="Show what cosfs mounts are doing.")
    p.add_argument("mountpoint", nargs="?", help="one mount (default: every cosfs mount)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="refresh interval with --watch (default 1)")
    return p.parse_args(argv)


def show(statuses: list[dict[str, Any]], as_json: bool, style: Style, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(statuses, separators=(",", ":")) + "\n")
    elif not statuses:
        out.write("no cosfs mounts\n")
    else:
        out.write("\n\n".join(render(st, style) for st in statuses) + "\n")
    out.flush()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    out = sys.stdout
    style = Style.for_stream(out)
    seen = False
    try:
        while True:
            statuses, error = collect(args.mountpoint)
            if error is not None and seen:
                print(f"{args.mountpoint}: unmounted", file=out)
                return 0
            if error is not None:
                print(f"cosfs: {error}", file=sys.stderr)
                return 1
            seen = True
            if args.watch and style.ansi and not args.json:
                out.write("\x1b[H\x1b[2J")  # redraw in place
            elif args.watch and not args.json:
                out.write(time.strftime("-- %H:%M:%S --\n"))
            show(statuses, args.json, style, out)
            if not args.watch:
                return 1 if any("error" in st for st in statuses) else 0
            time.sleep(max(0.1, args.interval))
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
