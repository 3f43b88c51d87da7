"""Assemble and run one mount: client, namespace, data path, FUSE adapter.

``prepare`` does every check that can fail because of the user's input (options,
credentials, endpoint, bucket, mount point) before anything is mounted, raising
:class:`MountError` with a one-line message. ``serve`` then mounts and runs until
unmounted or signalled, and on the way out waits for every pending upload.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import logging
import mimetypes
import os
import re
import resource
import signal
import stat
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from cosfs import control, meta, names, tuning
from cosfs.aio import AsyncClient
from cosfs.cos import CosClient, CosConfig, CosError
from cosfs.credentials import CredentialError, find_credentials
from cosfs.fs import Operations
from cosfs.namespace import MetaTuning, Namespace
from cosfs.options import MountArgs, UsageError
from cosfs.reader import ObjectReader, ReadBudget
from cosfs.writer import WriteCache

log = logging.getLogger(__name__)
MiB = 1024 * 1024


class MountError(Exception):
    """A mount that cannot go ahead; the message is one line, safe to print."""


@dataclass
class Prepared:
    args: MountArgs
    mountpoint: str  # resolved before mounting
    config: CosConfig
    root_key: str
    cache_dir: Path
    data_tuning: tuning.Tuning
    meta_tuning: MetaTuning
    defaults: meta.Defaults


class DataPath:
    """The mount's reader budget and write cache, as the FUSE adapter sees them."""

    def __init__(self, aclient: AsyncClient, cache_dir: Path, t: tuning.Tuning) -> None:
        self.aclient = aclient
        self.tuning = t
        self.budget = ReadBudget(t.read_budget)
        self.cache = WriteCache(cache_dir, aclient, t)
        # Read-ahead hit/miss counters for `cosfs status`: readers count per handle,
        # so keep the readers and fold closed ones into the totals now and then.
        self._readers: list[ObjectReader] = []
        self._retired = [0, 0]
        self._prune_at = 64

    def open_reader(self, key: str, size: int, etag: str) -> ObjectReader:
        reader = ObjectReader(self.aclient, key, size, etag, self.budget, self.tuning)
        self._readers.append(reader)
        if len(self._readers) >= self._prune_at:
            self._prune_readers()
            self._prune_at = max(64, 2 * len(self._readers))
        return reader

    def _prune_readers(self) -> None:
        live = []
        for r in self._readers:
            if r._closed:  # a closed reader's counters never change again
                self._retired[0] += r.hits
                self._retired[1] += r.misses
            else:
                live.append(r)
        self._readers = live

    def readahead_counts(self) -> tuple[int, int]:
        """(hits, misses) of every reader this mount opened."""
        self._prune_readers()
        return (self._retired[0] + sum(r.hits for r in self._readers),
                self._retired[1] + sum(r.misses for r in self._readers))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip_or_localhost(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def build_config(args: MountArgs, environ: dict[str, str] | None = None) -> CosConfig:
    try:
        creds = find_credentials(args.bucket, args.passwd_file, environ)
    except CredentialError as exc:
        raise MountError(str(exc)) from None
    url = args.url
    path_style: bool | None = True if args.use_path_request_style else None
    if url:
        parsed = urllib.parse.urlsplit(str(url))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise MountError(f"invalid url {url!r}: expected http(s)://HOST[:PORT]")
        if parsed.scheme == "http" and not _is_loopback(parsed.hostname) and not args.allow_http:
            raise MountError(f"refusing plain HTTP to {parsed.hostname}: use https, or "
                             "-o allow_http if the network is trusted")
        if path_style is None and _is_ip_or_localhost(parsed.hostname):
            path_style = True
    try:
        return CosConfig(
            secret_id=creds.secret_id, secret_key=creds.secret_key, token=creds.token,
            bucket=args.bucket, region=str(args.region), endpoint=str(url) if url else None,
            path_style=path_style, signature="s3" if args.sigv4 else "cos",
            connect_timeout=float(args.connect_timeout),  # type: ignore[arg-type]
            read_timeout=float(args.readwrite_timeout),  # type: ignore[arg-type]
            pool_size=int(args.max_requests),  # type: ignore[call-overload]
            ca_bundle=str(args.ca_bundle) if args.ca_bundle else None,
            verify_tls=not args.no_check_certificate,
            max_retries=int(args.retries))  # type: ignore[call-overload]
    except ValueError as exc:
        raise MountError(str(exc)) from None


def _check_mountpoint(path: Path, nonempty: bool) -> None:
    if not path.exists():
        raise MountError(f"mount point {path} does not exist")
    if not path.is_dir():
        raise MountError(f"mount point {path} is not a directory")
    if _is_mounted(os.path.realpath(path)):
        raise MountError(f"{path} is already a mount point")
    if not nonempty and any(path.iterdir()):
        raise MountError(f"mount point {path} is not empty (use -o nonempty to mount anyway)")


def describe_bucket_error(exc: CosError, config: CosConfig) -> str:
    endpoint = config.endpoint or f"https://{config.bucket}.cos.{config.region}.myqcloud.com"
    if exc.code == "SSLError":
        return _describe_tls(endpoint, exc.message or "", config.ca_bundle)
    if exc.status == 0:
        return f"cannot reach {endpoint}: {exc.message or exc.code}"
    if exc.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId"):
        return (f"access denied by {endpoint}: {exc.code} "
                "(check the SecretId and SecretKey)")
    if exc.status == 403:
        return f"access denied to bucket {config.bucket}: {exc.code or 'AccessDenied'}"
    if exc.status == 404:
        return f"bucket {config.bucket} does not exist at {endpoint}"
    return f"bucket {config.bucket} at {endpoint} answered {exc.status} {exc.code}"


def _describe_tls(endpoint: str, detail: str, ca_bundle: str | None) -> str:
    """The reason OpenSSL gave, without the HTTP library's retry wrapper around it,
    and what to do about an untrusted certificate."""
    verify = re.search(r"certificate verify failed: (.+?)\s*\(_ssl", detail)
    if verify:
        hint = "" if ca_bundle else " (for a private CA use -o ca_bundle=FILE)"
        return (f"TLS certificate of {endpoint} not trusted: certificate verify failed: "
                f"{verify.group(1)}{hint}")
    reason = re.search(r"\] (.+?)\s*\(_ssl", detail)
    text = reason.group(1) if reason else detail
    if ca_bundle and "certificate" in text:
        return f"cannot use ca_bundle {ca_bundle}: {text}"
    return f"TLS with {endpoint} failed: {text}"


def _check_bucket(client: CosClient) -> None:
    """HEAD the bucket. A HEAD error has no body, so a 403 is re-asked with a GET
    whose error body names the cause (wrong key, unknown key id, no permission)."""
    try:
        client.head_bucket()
    except CosError as exc:
        if exc.status != 403:
            raise
        client.list_objects(max_keys=1)
        raise


def _check_cache_free(cache_dir: Path) -> None:
    """Refuse a cache directory another mount holds (the write cache's lock file)
    here, with one line, rather than fail after the checks with a traceback."""
    fd = os.open(cache_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise MountError(f"cache directory {cache_dir} is used by another mount") from None
    finally:
        os.close(fd)  # releases the probe's lock; the write cache takes it for good


def cache_dir_for(args: MountArgs, config: CosConfig) -> Path:
    """The mount's own cache directory: below ``use_cache`` (or ~/.cache/cosfs), one
    per endpoint, bucket and prefix. Users give every bucket the same ``use_cache``
    (s3fs keeps a folder per bucket there): a journal shared by two buckets would
    send one bucket's unsent changes to the other at recovery."""
    base = Path(args.use_cache) if args.use_cache else \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cosfs"
    base = base.absolute()  # messages and `cosfs status` name it wherever they run
    ident = f"{config.endpoint or config.region}|{config.bucket}|{args.prefix}"
    return base / f"{config.bucket}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


def build_tunings(args: MountArgs) -> tuple[tuning.Tuning, MetaTuning]:
    data = tuning.Tuning(
        part_size=int(args.multipart_size) * MiB,  # type: ignore[call-overload]
        multipart_threshold=int(args.multipart_size) * MiB,  # type: ignore[call-overload]
        upload_concurrency=int(args.parallel_count),  # type: ignore[call-overload]
        readahead_max=int(args.readahead_mb) * MiB,  # type: ignore[call-overload]
        read_budget=int(args.read_budget_mb) * MiB,  # type: ignore[call-overload]
        cache_limit=int(args.cache_size_mb) * MiB,  # type: ignore[call-overload]
        min_free_bytes=int(args.ensure_diskfree) * MiB,  # type: ignore[call-overload]
        writeback=bool(args.writeback),
        writeback_delay=float(args.writeback_delay),  # type: ignore[arg-type]
        create_appendable=bool(args.append_new_files),
        storage_class=str(args.storage_class),
        upload_prefix=names.dir_prefix(names.normalize_root(args.prefix)),
    )
    ttl = float(args.stat_cache_expire)  # type: ignore[arg-type]
    # A listing's HEADs may take three quarters of the request slots: reads and
    # uploads running meanwhile keep the rest.
    fill = max(1, int(args.max_requests) * 3 // 4)  # type: ignore[call-overload]
    metat = MetaTuning(ttl=ttl, negative_ttl=ttl, fill_parallel=fill,
                       max_cached=int(args.max_stat_cache_size))  # type: ignore[call-overload]
    return data, metat


def prepare(args: MountArgs, environ: dict[str, str] | None = None) -> Prepared:
    """Every check that depends on the user's input, before mounting."""
    config = build_config(args, environ)
    try:
        root_key = names.normalize_root(args.prefix)
    except ValueError as exc:
        raise MountError(str(exc)) from None
    _check_mountpoint(args.mountpoint, bool(args.nonempty))
    client = CosClient(config)
    try:
        _check_bucket(client)
    except CosError as exc:
        raise MountError(describe_bucket_error(exc, config)) from None
    cache_dir = cache_dir_for(args, config)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = cache_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise MountError(f"cache directory {cache_dir} is not writable: {exc.strerror}") from None
    _check_cache_free(cache_dir)
    umask = int(args.umask)  # type: ignore[call-overload]
    uid = os.getuid() if args.uid is None else int(args.uid)  # type: ignore[call-overload]
    gid = os.getgid() if args.gid is None else int(args.gid)  # type: ignore[call-overload]
    defaults = meta.Defaults(uid=uid, gid=gid, file_mode=0o666 & ~umask,
                             dir_mode=0o777 & ~umask,
                             use_metadata=not args.listing_attrs)
    data_t, meta_t = build_tunings(args)
    return Prepared(args, os.path.realpath(args.mountpoint), config, root_key, cache_dir,
                    data_t, meta_t, defaults)


def fuse_options(p: Prepared) -> set[str]:
    opts = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    opts |= {f"fsname={p.args.fsname}", "subtype=cosfs"}
    if p.args.allow_other:
        opts.add("allow_other")
    if p.args.ro:
        opts.add("ro")
    opts |= set(p.args.values.get("kernel_flags", ()))  # type: ignore[arg-type]
    return opts


def guess_content_type(key: str) -> str:
    return mimetypes.guess_type(key, strict=False)[0] or meta.DEFAULT_CONTENT_TYPE


def raise_open_files_limit() -> None:
    """Lift the soft limit of open files to the hard one. Each staged file holds
    two descriptors and up to 256 closed ones are kept for reuse, so the usual
    soft limit of 1,024 would let an application write only a few hundred files
    at once through the mount."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.debug("open-files limit stays %d: %s", soft, exc)


async def serve(p: Prepared, ready: Callable[[], None]) -> None:
    """Mount, call ``ready()``, serve until unmounted, then finish pending uploads."""
    raise_open_files_limit()
    client = CosClient(p.config)
    aclient = AsyncClient(client, p.config.pool_size)
    ns = Namespace(aclient, p.root_key, p.defaults, p.meta_tuning,
                   guess_type=guess_content_type)
    mp_mode = 0o777 & ~int(p.args.mp_umask)  # type: ignore[call-overload]
    ns.inodes[1].attr.mode = stat.S_IFDIR | mp_mode
    data = DataPath(aclient, p.cache_dir, p.data_tuning)
    # Renames and metadata changes survive a crash in the cache's journal.
    ns.old_keys.journal = ns.deferred.journal = data.cache.journal
    # Renames cut short first (they leave old keys, and point staged files at
    # their new keys); old names next: a new file made under one must not look
    # like another client's object to the recovery of staged files.
    moves = 0 if p.args.ro else await ns.moves.recover()
    if moves:
        log.warning("recovery: finished %d renames a crash cut short", moves)
    deleted = 0 if p.args.ro else await ns.old_keys.recover()
    if deleted:
        log.warning("recovery: deleted the old names of %d renamed files", deleted)
    report = await data.cache.recover()
    if report:
        log.warning("recovery: %s", report)
    stored = 0 if p.args.ro else await ns.deferred.recover()
    if stored:
        log.warning("recovery: stored the metadata changes of %d objects", stored)
    ops = Operations(ns, data, read_only=bool(p.args.ro),
                     kernel_ttl=min(1.0, p.meta_tuning.ttl))
    status = control.MountStatus(p, client, data, ops, report)
    # The control channel outlives the FUSE session, so `cosfs status` and
    # `cosfs unmount` can follow the uploads that finish after the unmount.
    async with control.serving(p.mountpoint, {"status": status.snapshot}):
        pyfuse3.init(ops, p.mountpoint, fuse_options(p))
        clean = False
        try:
            ready()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_on_signals, nursery.cancel_scope)
                nursery.start_soon(set_kernel_readahead, p.mountpoint,
                                   p.data_tuning.kernel_readahead)
                await pyfuse3.main(min_tasks=4, max_tasks=64)
                nursery.cancel_scope.cancel()
            clean = True
        finally:
            with trio.CancelScope(shield=True):
                await ops.wait_idle()
                await data.cache.shutdown(remove=bool(p.args.del_cache))
                log.info("all uploads finished; unmounting")
            pyfuse3.close(unmount=_is_mounted(p.mountpoint))
    if not clean:
        log.warning("mount ended abnormally")


async def _on_signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %s: finishing uploads and unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


async def set_kernel_readahead(mountpoint: str, size: int) -> None:
    """Set the kernel's read-ahead for the mount at ``mountpoint`` to ``size`` bytes
    (``/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`` of its device). FUSE mounts start
    at 128 KiB, so a sequential read arrives as 128 KiB requests, each a round trip
    through the interpreter; with more read-ahead the kernel asks for larger pieces.

    The kernel resets the value when it gets the answer to FUSE's INIT, so this
    runs once the mount serves: the ``stat`` of the mount point (in a thread; this
    loop answers it) returns only after INIT. Best effort: without root (or
    without sysfs) the kernel's default stays, and a debug line says why."""
    if size <= 0:
        return
    try:
        st = await trio.to_thread.run_sync(os.stat, mountpoint)
        device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
            f.write(str(max(4, size // 1024)))
        log.debug("read-ahead of %s (bdi %s) set to %d KiB", mountpoint, device,
                  size // 1024)
    except OSError as exc:
        log.debug("could not set the read-ahead of %s: %s", mountpoint, exc)


def _is_mounted(real_path: str) -> bool:
    """Whether ``real_path`` is a mount point. It must be resolved already: resolving
    a path in our own mount once this process stopped serving it would hang."""
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == real_path for line in f)


__all__ = ["MountError", "Prepared", "UsageError", "prepare", "serve"]
