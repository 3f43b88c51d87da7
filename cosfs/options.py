"""Command-line and ``-o`` option parsing for ``cosfs`` (pure, unit-tested).

Options follow Tencent's COSFS and s3fs-fuse where the meaning is the same, so
existing ``/etc/fstab`` lines and habits carry over. Every ``-o name=value`` also
works as ``--name=value`` (with ``-`` or ``_``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path


class UsageError(ValueError):
    """Bad command line: the message is printed as one line and cosfs exits 2."""


@dataclass(frozen=True)
class Opt:
    name: str
    kind: str  # "flag", "int", "float", "str", "path", "octal", "size_mb"
    default: object
    help: str
    peer: str = ""  # what COSFS / s3fs-fuse call it and default to, for the docs


OPTIONS: tuple[Opt, ...] = (
    Opt("passwd_file", "path", None, "credentials file (bucket:SecretId:SecretKey lines)",
        "passwd_file (same)"),
    Opt("url", "str", None, "endpoint URL (default https://BUCKET.cos.REGION.myqcloud.com)",
        "url (same)"),
    Opt("region", "str", "ap-guangzhou", "COS region of the bucket", "region"),
    Opt("use_path_request_style", "flag", False,
        "address the bucket as URL/BUCKET/KEY (automatic for an IP or localhost URL)",
        "use_path_request_style (same)"),
    Opt("sigv4", "flag", False, "sign with AWS SigV4 (S3-compatible stores)",
        "s3fs signs v4 by default"),
    Opt("uid", "int", None, "owner of objects without cosfs metadata (default: you)",
        "uid (same)"),
    Opt("gid", "int", None, "group of objects without cosfs metadata", "gid (same)"),
    Opt("umask", "octal", 0o022, "umask for objects without cosfs metadata",
        "umask (s3fs default 0000)"),
    Opt("mp_umask", "octal", 0o022, "umask of the mount point directory",
        "mp_umask (same)"),
    Opt("allow_other", "flag", False, "let other users use the mount (kernel checks modes)",
        "allow_other (same)"),
    Opt("nonempty", "flag", False, "allow mounting over a non-empty directory",
        "nonempty (same)"),
    Opt("ro", "flag", False, "mount read-only", "ro (same)"),
    Opt("use_cache", "path", None, "where the staging cache lives, in a directory per "
        "bucket below it (default ~/.cache/cosfs)", "use_cache (s3fs: no cache by default)"),
    Opt("del_cache", "flag", False, "delete the mount's cache directory at unmount, unless "
        "it holds unsent changes", "del_cache (s3fs: also at mount)"),
    Opt("cache_size_mb", "int", 16384, "staging cache size limit in MiB",
        "s3fs: max_dirty_data=5120"),
    Opt("ensure_diskfree", "int", 1024, "MiB of disk kept free in the cache filesystem",
        "ensure_diskfree (same)"),
    Opt("multipart_size", "int", 8, "part size in MiB (grows for very large files)",
        "multipart_size (s3fs 10, COSFS 10)"),
    Opt("parallel_count", "int", 8, "parts uploaded at once", "parallel_count (s3fs 5)"),
    Opt("readahead_mb", "int", 64, "largest read-ahead window per file in MiB",
        "s3fs: none"),
    Opt("read_budget_mb", "int", 256, "read-ahead memory of the whole mount in MiB", ""),
    Opt("stat_cache_expire", "float", 10.0,
        "seconds attributes and listings are cached (0: always ask COS)",
        "stat_cache_expire (s3fs 900)"),
    Opt("max_stat_cache_size", "int", 100000, "entries in the attribute cache",
        "max_stat_cache_size (s3fs 100000)"),
    Opt("listing_attrs", "flag", False,
        "attributes from listings (no HEAD per file); object metadata ignored",
        "s3fs: none (goofys, mountpoint-s3: always so)"),
    Opt("writeback", "flag", False, "close() returns before the upload ends (fsync waits)",
        "s3fs: never"),
    Opt("writeback_delay", "float", 1.0,
        "with writeback: seconds a closed file waits before its upload starts",
        "rclone: --vfs-write-back 5s"),
    Opt("append_new_files", "flag", False,
        "create files opened with O_APPEND as appendable objects", ""),
    Opt("storage_class", "str", "STANDARD",
        "storage class of the data the mount uploads (STANDARD_IA, INTELLIGENT_TIERING, "
        "MAZ_STANDARD...); copies keep their source's",
        "s3fs: storage_class (standard)"),
    Opt("connect_timeout", "float", 10.0, "seconds to connect", "connect_timeout (300)"),
    Opt("readwrite_timeout", "float", 60.0, "seconds without data before a request fails",
        "readwrite_timeout (120)"),
    Opt("retries", "int", 5, "retries of a failed request", "retries (5)"),
    Opt("max_requests", "int", 64, "HTTP requests in flight at once", ""),
    Opt("ca_bundle", "path", None, "CA certificates file for TLS", "s3fs: ssl CA env"),
    Opt("no_check_certificate", "flag", False, "do not verify TLS certificates (unsafe)",
        "no_check_certificate (same)"),
    Opt("allow_http", "flag", False, "allow plain HTTP to a non-loopback endpoint", ""),
    Opt("logfile", "path", None, "log to this file instead of syslog when daemonized",
        "logfile (same)"),
    Opt("dbglevel", "str", "warn", "log level: crit, err, warn, info, debug",
        "dbglevel (same)"),
    Opt("fsname", "str", "cosfs", "name shown in /proc/mounts", ""),
)
BY_NAME = {o.name: o for o in OPTIONS}
# Security-relevant mount flags handed to the kernel as given (an fstab ``user``
# line implies nosuid,nodev,noexec: dropping them would widen what the mount allows).
KERNEL_FLAGS = {"nosuid", "nodev", "noexec", "suid", "dev", "exec", "noatime", "relatime",
                "atime", "sync", "async"}
# Options the kernel/fusermount understand, accepted and passed through or ignored.
PASSTHROUGH = {"rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "auto", "noauto",
               "user", "nouser", "_netdev", "nofail", "default_permissions", "atime",
               "noatime", "relatime", "sync", "async", "defaults"}

# Classes whose objects can be read back at once (an archived one needs a restore
# first): COS's, and S3's for -o sigv4.
WRITABLE_CLASSES = ("STANDARD", "STANDARD_IA", "INTELLIGENT_TIERING", "MAZ_STANDARD",
                    "MAZ_STANDARD_IA", "MAZ_INTELLIGENT_TIERING", "ONEZONE_IA",
                    "REDUCED_REDUNDANCY", "GLACIER_IR")

BUCKET_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?-\d{5,12}$")
S3_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass
class MountArgs:
    bucket: str
    prefix: str
    mountpoint: Path
    foreground: bool = False
    debug: bool = False
    values: dict[str, object] = field(default_factory=dict)

    def __getattr__(self, name: str) -> object:
        if name in BY_NAME:
            return self.values.get(name, BY_NAME[name].default)
        raise AttributeError(name)


def _convert(opt: Opt, raw: str | None) -> object:
    if opt.kind == "flag":
        if raw is None or raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"option {opt.name} takes no value or 0/1, not {raw!r}")
    if raw is None or raw == "":
        raise UsageError(f"option {opt.name} needs a value ({opt.name}=...)")
    try:
        if opt.kind == "int":
            value: object = int(raw)
            if value < 0:  # type: ignore[operator]
                raise ValueError
            return value
        if opt.kind == "float":
            value = float(raw)
            if value < 0:  # type: ignore[operator]
                raise ValueError
            return value
        if opt.kind == "octal":
            return int(raw, 8)
    except ValueError:
        raise UsageError(f"option {opt.name}: invalid value {raw!r}") from None
    if opt.kind == "path":
        return Path(os.path.expanduser(raw))
    return raw


def parse_o(text: str, values: dict[str, object]) -> None:
    """Parse one ``-o a,b=c`` list into ``values``."""
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if name in KERNEL_FLAGS:
            kernel = values.setdefault("kernel_flags", set())
            kernel.add(name)  # type: ignore[union-attr]
            continue
        if name in PASSTHROUGH:
            continue
        opt = BY_NAME.get(name)
        if opt is None:
            raise UsageError(f"unknown option {name!r} (see cosfs --help)")
        values[name] = _convert(opt, raw if sep else None)


def parse_bucket(spec: str) -> tuple[str, str]:
    """``bucket-appid[:/prefix]`` -> (bucket, prefix)."""
    bucket, _, prefix = spec.partition(":")
    if not bucket:
        raise UsageError("missing bucket name (BUCKET-APPID)")
    return bucket, prefix


def check_bucket_name(bucket: str, s3: bool) -> None:
    if s3:
        if not S3_BUCKET_RE.match(bucket):
            raise UsageError(f"invalid bucket name {bucket!r}")
    elif not BUCKET_RE.match(bucket):
        raise UsageError(
            f"invalid bucket name {bucket!r}: expected NAME-APPID, e.g. examplebucket-1250000000")


def check_storage_class(name: str) -> str:
    """The class, upper-cased, if the mount can write it."""
    upper = name.strip().upper()
    if upper not in WRITABLE_CLASSES:
        raise UsageError(f"storage_class {name!r}: use one of {', '.join(WRITABLE_CLASSES)} "
                         "(archived objects cannot be read back without a restore)")
    return upper


def parse_args(argv: list[str]) -> MountArgs:
    """``cosfs BUCKET[:/prefix] MOUNTPOINT [-o opt,...] [-f] [-d] [--opt=value]``."""
    positional: list[str] = []
    values: dict[str, object] = {}
    foreground = debug = False
    it = iter(argv)
    for arg in it:
        if arg == "-o":
            try:
                parse_o(next(it), values)
            except StopIteration:
                raise UsageError("-o needs a value") from None
        elif arg.startswith("-o") and len(arg) > 2:
            parse_o(arg[2:], values)
        elif arg in ("-f", "--foreground"):
            foreground = True
        elif arg in ("-d", "--debug"):
            debug = foreground = True
        elif arg.startswith("--") and len(arg) > 2:
            parse_o(arg[2:], values)
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown flag {arg!r} (see cosfs --help)")
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise UsageError("usage: cosfs BUCKET-APPID[:/PREFIX] MOUNTPOINT [-o OPTIONS]")
    bucket, prefix = parse_bucket(positional[0])
    args = MountArgs(bucket, prefix, Path(positional[1]), foreground, debug, values)
    check_bucket_name(bucket, bool(args.sigv4))
    values["storage_class"] = check_storage_class(str(args.storage_class))
    if debug:
        values["dbglevel"] = "debug"
    return args


def option_table() -> str:
    """Markdown table of every option, for docs and ``--help``."""
    rows = ["| option | default | meaning | COSFS / s3fs-fuse |", "|---|---|---|---|"]
    for o in OPTIONS:
        default = "off" if o.kind == "flag" and not o.default else o.default
        if o.kind == "octal" and isinstance(o.default, int):
            default = f"{o.default:04o}"
        rows.append(f"| `{o.name}` | {default if default is not None else ''} | {o.help} "
                    f"| {o.peer} |")
    return "\n".join(rows)
