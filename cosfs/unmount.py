"""``cosfs unmount MOUNTPOINT [--no-wait]``: unmount once every upload is done.

Without ``--no-wait`` it shows the running uploads with their progress until they
end, unmounts (``fusermount3 -u``), then follows the uploads the mount process
finishes on its way out (files still open until the unmount) and returns once that
process has ended, so a zero exit means every accepted byte is on the server or
journaled for the next mount. ``--no-wait`` refuses, with a non-zero exit, when
uploads are pending (or when the mount cannot be asked), and otherwise unmounts at
once. Nothing here ever drops an upload: the mount process always finishes them
before it exits.

Exit status: 0 unmounted; 1 refused or failed (one line on stderr says why); 2 bad
command line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from typing import Any, TextIO

from cosfs import control
from cosfs.status import MountEntry, Style, find_mount, render_uploads

# Files with changes but no upload running (still open, queued, or failed and kept
# for recovery) do not hold the unmount back longer than this: an open file makes
# the unmount fail with "busy" anyway, and the mount process retries the others.
SETTLE_SECONDS = 3.0
TTY_INTERVAL = 0.5
PIPE_INTERVAL = 5.0


class Progress:
    """Shows the upload lines of successive status snapshots: redrawn in place on a
    terminal, a new block every few seconds in a pipe."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.style = Style.for_stream(out)
        self.drawn = 0
        self.last = 0.0

    def update(self, st: dict[str, Any]) -> None:
        lines = render_uploads(st, self.style, indent="")
        if self.style.ansi:
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.out.write("\n".join(lines) + "\n")
            self.drawn = len(lines)
        elif time.monotonic() - self.last >= PIPE_INTERVAL:
            self.out.write("\n".join(lines) + "\n")
            self.last = time.monotonic()
        self.out.flush()

    def clear(self) -> None:
        """Erase the last drawing on a terminal (its numbers are stale by now)."""
        if self.style.ansi and self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.out.flush()
            self.drawn = 0

    @property
    def interval(self) -> float:
        return TTY_INTERVAL if self.style.ansi else 1.0


def pending(st: dict[str, Any]) -> int:
    return len(st.get("uploads", [])) + int(st.get("pending_files", 0))


def describe_pending(st: dict[str, Any]) -> str:
    running = st.get("uploads", [])
    text = f"{len(running)} uploads running, {st.get('pending_files', 0)} files waiting"
    if running:
        text += " (" + ", ".join(str(u.get("key")) for u in running[:3])
        text += ", ...)" if len(running) > 3 else ")"
    return text


def wait_for_uploads(entry: MountEntry, st: dict[str, Any], progress: Progress) -> None:
    """Show progress until no upload runs (see SETTLE_SECONDS) or the mount ends."""
    quiet_since: float | None = None
    while pending(st):
        if st.get("uploads"):
            quiet_since = None
        else:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= SETTLE_SECONDS:
                return
        progress.update(st)
        time.sleep(progress.interval)
        try:
            st = control.request_mount(entry.mountpoint, entry.owner_uid)
        except control.ControlError:
            return


def follow_exit(entry: MountEntry, progress: Progress) -> None:
    """After the unmount: show the uploads the mount process finishes, until its
    control socket is gone (removed once every upload ended), then wait for the
    process itself to exit."""
    pid = None
    while True:
        try:
            st = control.request_mount(entry.mountpoint, entry.owner_uid)
        except control.ControlError:
            break
        pid = st.get("pid", pid)
        if pending(st):
            progress.update(st)
        time.sleep(progress.interval)
    if isinstance(pid, int):
        _wait_pid(pid, timeout=30)


def _wait_pid(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has finished; its parent reaps it


def unmount_command(mountpoint: str) -> list[str]:
    tool = shutil.which("fusermount3") or next(
        (p for p in ("/usr/bin/fusermount3", "/bin/fusermount3") if os.path.exists(p)), None)
    if tool is not None:
        return [tool, "-u", mountpoint]
    return ["umount", mountpoint]


def do_unmount(mountpoint: str) -> str | None:
    """Unmount; None on success, else the reason in one line."""
    proc = subprocess.run(unmount_command(mountpoint), capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    if "busy" in reason.lower():
        reason += f" (files are open on it: see fuser -vm {mountpoint})"
    return reason


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="cosfs unmount",
        description="Unmount a cosfs mount once its uploads are done.")
    p.add_argument("mountpoint")
    p.add_argument("--no-wait", action="store_true",
                   help="refuse (exit 1) instead of waiting when uploads are pending")
    return p.parse_args(argv)


def fail(message: str) -> int:
    print(f"cosfs: {message}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    progress = Progress(sys.stdout)
    entry = find_mount(args.mountpoint)
    if entry is None:
        return _finish_lingering(args.mountpoint, progress)
    try:
        st: dict[str, Any] | None = control.request_mount(entry.mountpoint, entry.owner_uid)
    except control.ControlError as exc:
        if args.no_wait:
            return fail(f"cannot tell whether uploads are pending on {entry.mountpoint} "
                        f"({exc}); not unmounting")
        print(f"cosfs: no status from {entry.mountpoint} ({exc}); unmounting: the mount "
              "process finishes its uploads before it exits", file=sys.stderr)
        st = None
    if st is not None and pending(st):
        if args.no_wait:
            return fail(f"{describe_pending(st)} on {entry.mountpoint}; not unmounting "
                        "(without --no-wait, cosfs unmount waits for them)")
        wait_for_uploads(entry, st, progress)
    reason = do_unmount(entry.mountpoint)
    if reason is not None:
        return fail(f"cannot unmount {entry.mountpoint}: {reason}")
    follow_exit(entry, progress)
    progress.clear()
    print(f"unmounted {entry.mountpoint}")
    return 0


def _finish_lingering(mountpoint: str, progress: Progress) -> int:
    """Not mounted: if a mount process of it still finishes uploads, follow it."""
    entry = MountEntry("", os.path.realpath(mountpoint), None)
    try:
        control.request_mount(entry.mountpoint, None)
    except control.ControlError:
        return fail(f"{mountpoint} is not a cosfs mount")
    follow_exit(entry, progress)
    progress.clear()
    print(f"unmounted {entry.mountpoint}")
    return 0
