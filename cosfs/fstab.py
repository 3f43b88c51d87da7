"""The mount helper: ``mount -t fuse.cosfs`` and ``/etc/fstab`` lines.

For a filesystem of type ``fuse.cosfs`` mount(8) (util-linux) runs
``/sbin/mount.fuse.cosfs SOURCE MOUNTPOINT -o OPTIONS`` if that file exists, with
the fstab options minus the ones it keeps for itself (``defaults``, ``noauto``,
``x-*``), and ``user`` expanded to ``noexec,nosuid,nodev,user``; it clears PATH
from the environment. Without that helper it falls back to ``mount.fuse3``, which
runs ``cosfs`` through ``/bin/sh`` from the shell's default PATH. This module is
the helper: it drops what only mount(8) and systemd care about (``_netdev``,
``nofail``, ``auto``, ``user``, ``x-systemd.*`` ...) and runs the ``cosfs``
command in this process, which returns once the mount is ready (the mount process
stays behind as a daemon).

``cosfs install-helper`` writes the helper where mount(8) looks for it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cosfs import options

HELPER_NAMES = ("mount.fuse.cosfs", "mount.cosfs")
HELPER_DIR = Path("/sbin")  # libmount searches /sbin, /sbin/fs.d, /sbin/fs
MARKER = "# written by `cosfs install-helper`"

# Options for mount(8), systemd and fusermount that a cosfs mount does not take.
IGNORED = {"defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group",
           "_netdev", "nofail", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec",
           "sync", "async", "atime", "noatime", "relatime", "strictatime", "nodiratime",
           "diratime", "lazytime", "nolazytime", "loud", "silent"}
IGNORED_PREFIXES = ("x-", "comment=", "helper=")
FSTYPES = ("fuse.cosfs", "cosfs")


class HelperError(Exception):
    """The helper cannot go on; the message is one line."""


@dataclass
class HelperArgs:
    """mount(8)'s helper convention:
    ``mount.TYPE SOURCE MOUNTPOINT [-sfnvrw] [-N NAMESPACE] [-o OPTIONS] [-t TYPE]``."""

    source: str
    mountpoint: str
    options: list[str] = field(default_factory=list)
    fake: bool = False
    sloppy: bool = False
    verbose: bool = False
    namespace: str | None = None
    fstype: str | None = None


def parse_helper_args(argv: list[str]) -> HelperArgs:
    positional: list[str] = []
    opts: list[str] = []
    flags: set[str] = set()
    namespace = fstype = None
    it = iter(argv)
    for arg in it:
        if arg in ("-o", "-N", "-t"):
            value = next(it, None)
            if value is None:
                raise HelperError(f"{arg} needs a value")
            if arg == "-o":
                opts += [o for o in (s.strip() for s in value.split(",")) if o]
            elif arg == "-N":
                namespace = value
            else:
                fstype = value
        elif arg.startswith("-o") and len(arg) > 2:
            opts += [o for o in (s.strip() for s in arg[2:].split(",")) if o]
        elif arg.startswith("-") and len(arg) > 1 and set(arg[1:]) <= set("sfnvrwi"):
            flags |= set(arg[1:])
        elif arg.startswith("-") and len(arg) > 1:
            raise HelperError(f"unknown flag {arg!r}")
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise HelperError("usage: mount.fuse.cosfs BUCKET-APPID[:/PREFIX] MOUNTPOINT "
                          "[-o OPTIONS]")
    if "r" in flags:
        opts.append("ro")
    return HelperArgs(positional[0], positional[1], opts, fake="f" in flags,
                      sloppy="s" in flags, verbose="v" in flags, namespace=namespace,
                      fstype=fstype)


def _ignored(opt: str) -> bool:
    name = opt.split("=", 1)[0]
    return name in IGNORED or opt.startswith(IGNORED_PREFIXES)


def _known(opt: str) -> bool:
    name = opt.split("=", 1)[0].replace("-", "_")
    return name in options.BY_NAME or name in options.PASSTHROUGH


def cosfs_argv(h: HelperArgs) -> list[str]:
    """The ``cosfs`` command line for a helper invocation (see the module doc)."""
    if h.namespace is not None:
        raise HelperError("-N (mount in another namespace) is not supported")
    if h.fstype is not None and h.fstype not in FSTYPES:
        raise HelperError(f"filesystem type {h.fstype!r} is not cosfs")
    # fuse-style "cosfs#bucket" sources, as old fstab lines wrote them
    source = h.source.removeprefix("cosfs#")
    kept: list[str] = []
    for opt in h.options:
        if opt.startswith(("setuid=", "drop_privileges")):
            raise HelperError(f"option {opt.split('=')[0]!r} is not supported: run the "
                              "mount as that user (see the systemd unit in the docs)")
        if _ignored(opt):
            continue
        if h.sloppy and not _known(opt):
            print(f"mount.fuse.cosfs: ignoring unknown option {opt!r}", file=sys.stderr)
            continue
        kept.append(opt)
    # /proc/mounts then shows the fstab source, so `mount -a` and systemd recognise
    # the mount as the fstab line's (a comma would split the option).
    if not any(o.startswith("fsname=") for o in kept) and "," not in source:
        kept.append(f"fsname={source}")
    argv = [source, h.mountpoint]
    if kept:
        argv += ["-o", ",".join(kept)]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        h = parse_helper_args(argv)
        cmd = cosfs_argv(h)
    except HelperError as exc:
        print(f"mount.fuse.cosfs: {exc}", file=sys.stderr)
        return 1  # mount(8): 1 is "incorrect invocation"
    if h.verbose:
        print(f"mount.fuse.cosfs: cosfs {shlex.join(cmd)}", file=sys.stderr)
    if h.fake:
        return 0
    from cosfs import cli

    rc = cli.main(cmd)
    return 32 if rc else 0  # mount(8): 32 is "mount failure"


# -- cosfs install-helper ----------------------------------------------------------


def helper_script(python: str) -> str:
    return (f"#!/bin/sh\n{MARKER}; `cosfs install-helper --remove` deletes it.\n"
            "# mount(8) runs it for filesystems of type fuse.cosfs (see docs/OPERATIONS.md).\n"
            f"exec {shlex.quote(python)} -m cosfs.fstab \"$@\"\n")


def _ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(errors="replace")[:512]
    except OSError:
        return False


def install(directory: Path, python: str, force: bool = False) -> list[Path]:
    """Write the helpers into ``directory`` (atomically, mode 0755). A file there
    that ``install`` did not write is only replaced with ``force``."""
    written = []
    for name in HELPER_NAMES:
        target = directory / name
        if (target.exists() or target.is_symlink()) and not _ours(target) and not force:
            raise HelperError(f"{target} exists and was not written by cosfs "
                              "(use --force to replace it)")
        tmp = directory / f".{name}.tmp{os.getpid()}"
        tmp.write_text(helper_script(python))
        tmp.chmod(0o755)
        os.replace(tmp, target)
        written.append(target)
    return written


def remove(directory: Path) -> list[Path]:
    """Delete the helpers ``install`` wrote (never anyone else's)."""
    removed = []
    for name in HELPER_NAMES:
        target = directory / name
        if _ours(target):
            target.unlink()
            removed.append(target)
    return removed


def install_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="cosfs install-helper",
        description="Install the mount helper so mount(8) and /etc/fstab can mount "
                    "filesystems of type fuse.cosfs.")
    p.add_argument("--dir", type=Path, default=HELPER_DIR,
                   help=f"where mount(8) looks for helpers (default {HELPER_DIR})")
    p.add_argument("--remove", action="store_true", help="delete the installed helpers")
    p.add_argument("--force", action="store_true",
                   help="replace helpers that cosfs did not write")
    args = p.parse_args(argv)
    try:
        paths = remove(args.dir) if args.remove else install(args.dir, sys.executable,
                                                             args.force)
    except (HelperError, OSError) as exc:
        print(f"cosfs: {exc}", file=sys.stderr)
        return 1
    verb = "removed" if args.remove else "installed"
    for path in paths:
        print(f"{verb} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
