"""Run a mount in the foreground or as a daemon that reports back once it is ready.

Daemon mode forks before anything starts threads or the event loop. The child does
all the work (checks, mount, serving); the parent waits on a pipe and exits 0 only
once the child says the mount is ready, or 1 with the child's one-line error, so
``cosfs ...`` returning means the mount is usable (or definitely failed).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import trio

from cosfs import mount
from cosfs.options import MountArgs

log = logging.getLogger(__name__)


def _run_mount(args: MountArgs, ready: Callable[[], None], failed: Callable[[str], None]) -> int:
    try:
        prepared = mount.prepare(args)
    except mount.MountError as exc:
        failed(str(exc))
        return 1
    try:
        trio.run(mount.serve, prepared, ready)
    except Exception as exc:  # noqa: BLE001 - report any failure as one line
        log.exception("mount failed")
        failed(f"mount failed: {exc}")
        return 1
    return 0


def run(args: MountArgs) -> int:
    if args.foreground:
        def failed(message: str) -> None:
            print(f"cosfs: {message}", file=sys.stderr)

        return _run_mount(args, lambda: log.info("mounted on %s", args.mountpoint), failed)

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        with os.fdopen(rfd, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        if message.startswith("ok"):
            return 0
        print(f"cosfs: {message.strip() or 'mount process ended before the mount was ready'}",
              file=sys.stderr)
        return 1
    os.close(rfd)
    os.setsid()
    reported = False

    def tell(text: str) -> None:
        nonlocal reported
        if not reported:
            reported = True
            os.write(wfd, text.encode())
            os.close(wfd)

    def ready() -> None:
        tell("ok")
        _detach_stdio()

    rc = _run_mount(args, ready, tell)
    if not reported:
        tell("mount process ended before the mount was ready")
    os._exit(rc)


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
