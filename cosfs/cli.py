"""``cosfs``: mount a bucket (daemonized unless ``-f``).

Exit status: 0 mounted (or, with ``-f``, cleanly unmounted), 1 the mount failed
(one line on stderr says why), 2 bad command line.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from cosfs import __version__, options

LEVELS = {"crit": logging.CRITICAL, "critical": logging.CRITICAL, "err": logging.ERROR,
          "error": logging.ERROR, "warn": logging.WARNING, "warning": logging.WARNING,
          "info": logging.INFO, "debug": logging.DEBUG}

HELP = f"""usage: cosfs BUCKET-APPID[:/PREFIX] MOUNTPOINT [-f] [-d] [-o OPTION[,OPTION...]]
       cosfs status [MOUNTPOINT] [--json] [--watch]   uploads, cache, requests of mounts
       cosfs unmount MOUNTPOINT [--no-wait]          unmount once uploads are done
       cosfs install-helper [--dir DIR] [--remove]   let mount(8) and fstab mount fuse.cosfs

Mount a Tencent Cloud COS bucket (or an S3-compatible bucket with -o sigv4).
Credentials: -o passwd_file=FILE, or COS_SECRET_ID / COS_SECRET_KEY
(/ COS_SECURITY_TOKEN) in the environment, or ~/.passwd-cosfs, or /etc/passwd-cosfs.

  -f, --foreground   stay in the foreground (log to stderr)
  -d, --debug        foreground with debug logging
  --version          print the version

Options (-o NAME[=VALUE] or --NAME[=VALUE]):
{chr(10).join(f"  {o.name:<24}{o.help}" for o in options.OPTIONS)}
"""


def setup_logging(level_name: str, foreground: bool, logfile: Path | None) -> None:
    level = LEVELS.get(level_name.lower())
    if level is None:
        raise options.UsageError(f"dbglevel must be one of {', '.join(LEVELS)}")
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    if logfile is not None:
        handler: logging.Handler = logging.FileHandler(logfile)
        handler.setFormatter(logging.Formatter("%(asctime)s cosfs[%(process)d] "
                                               "%(levelname)s %(name)s: %(message)s"))
    elif foreground or not os.path.exists("/dev/log"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
    else:
        handler = logging.handlers.SysLogHandler("/dev/log")
        handler.setFormatter(logging.Formatter("cosfs[%(process)d]: %(levelname)s %(message)s"))
    root.addHandler(handler)
    # Request-level chatter of the HTTP stack never carries anything we need.
    logging.getLogger("urllib3").setLevel(max(level, logging.WARNING))


SUBCOMMANDS = ("status", "unmount", "install-helper")


def run_subcommand(name: str, argv: list[str]) -> int:
    """``cosfs status|unmount|install-helper ...`` (argparse exits 2 on bad usage)."""
    if name == "status":
        from cosfs import status

        return status.main(argv)
    if name == "unmount":
        from cosfs import unmount

        return unmount.main(argv)
    from cosfs import fstab

    return fstab.install_main(argv)


def fail(message: str, status: int = 1) -> int:
    print(f"cosfs: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP, end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"cosfs {__version__}")
        return 0
    if argv[0] in SUBCOMMANDS:
        return run_subcommand(argv[0], argv[1:])
    try:
        args = options.parse_args(argv)
        setup_logging(str(args.dbglevel), args.foreground, args.logfile)  # type: ignore[arg-type]
    except options.UsageError as exc:
        return fail(str(exc), 2)
    from cosfs import daemon

    return daemon.run(args)


if __name__ == "__main__":
    sys.exit(main())
