"""The control channel of a mount: a Unix socket answering JSON requests.

``cosfs status`` and ``cosfs unmount`` talk to a running mount through it.

Protocol: the client connects, sends one JSON object on one line (``{"op":
"status"}``) and reads one JSON object on one line; the server then closes the
connection. An unknown request gets ``{"error": "..."}``.

Where: ``<dir>/<sha256(realpath(mountpoint))[:16]>.sock`` where ``<dir>`` is
``/run/cosfs`` for root, ``$XDG_RUNTIME_DIR/cosfs`` for other users (or
``/tmp/cosfs-<uid>`` without it). Anyone who knows the mount point (and who owns
it, from ``/proc/mounts``) finds the socket without asking the mount.

Security: the directory is 0700 and owned by the mount's user, the socket 0600,
so only that user (and root) can connect. Answers never carry credentials: the
status lists the bucket, prefix and endpoint, not the key pair or token.

Concurrency: the server runs as trio tasks on the mount's event loop, beside the
FUSE handlers. Building a status snapshot never awaits, so it sees the mount's state
at one instant of the loop. A failing request is logged and answered with an
error; it never disturbs the mount. The socket is removed when the mount process
ends (after its pending uploads), so a connectable socket means a live mount.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024  # a request is a few bytes; anything longer is not ours
STATUS_VERSION = 1


# -- where the socket lives -------------------------------------------------------


def socket_dir(uid: int | None = None, environ: dict[str, str] | None = None) -> Path:
    """The directory of the control sockets of ``uid``'s mounts (default: ours)."""
    uid = os.getuid() if uid is None else uid
    env = os.environ if environ is None else environ
    if uid == 0:
        return Path("/run/cosfs")
    runtime = env.get("XDG_RUNTIME_DIR") if uid == os.getuid() else f"/run/user/{uid}"
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "cosfs"
    return Path(f"/tmp/cosfs-{uid}")


def socket_name(canonical: str) -> str:
    """The socket's file name for a mount point given as /proc/mounts shows it
    (absolute, symlinks resolved). Hashing the string, not resolving it here, keeps
    callers off the mount itself: a process that stats its own mount point from
    inside its event loop would wait for itself forever."""
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{digest[:16]}.sock"


def socket_path(mountpoint: str | os.PathLike[str], uid: int | None = None,
                environ: dict[str, str] | None = None) -> Path:
    """Where the mount of ``mountpoint`` run by ``uid`` (default: us) listens.
    Resolves symlinks, so it touches the mount point (see ``socket_name``)."""
    return socket_dir(uid, environ) / socket_name(os.path.realpath(mountpoint))


def candidate_paths(canonical: str, owner_uid: int | None) -> list[Path]:
    """Where a client looks for the socket of the mount at ``canonical`` (as in
    /proc/mounts) owned by ``owner_uid`` (None if unknown): the owner's directory
    first, then ours, then the fallbacks under /tmp (used without a runtime
    directory)."""
    name = socket_name(canonical)
    paths: list[Path] = []
    uids = [owner_uid] if owner_uid is not None else []
    for uid in [*uids, os.getuid()]:
        paths.append(socket_dir(uid) / name)
        if uid != 0:
            paths.append(Path(f"/tmp/cosfs-{uid}") / name)
    return list(dict.fromkeys(paths))


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700, ours) or check an existing one is exactly that, so no
    other user can swap the socket for one of theirs."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise OSError(errno.EPERM, f"{path} is not a directory owned by uid {os.getuid()}")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


# -- server -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(mountpoint: str | os.PathLike[str],
                  handlers: dict[str, Callable[[], dict[str, Any]]]) -> AsyncIterator[Path | None]:
    """Answer requests on the mount's control socket while the body runs.

    ``handlers`` maps a request's ``op`` to a function building the answer (called on
    the event loop; it must not block). Yields the socket path, or None when the
    socket cannot be created (the mount goes on without a control channel: the
    reason is logged). The socket is removed on the way out.
    """
    path = socket_path(mountpoint)  # resolves symlinks: before the mount exists
    try:
        listener = await _listen(path)
    except OSError as exc:
        log.warning("no control channel (cosfs status will not see this mount): %s", exc)
        yield None
        return
    # A system task, not a nursery around the body: the mount's own exceptions then
    # reach its caller as themselves, not wrapped in an ExceptionGroup.
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run() -> None:
        try:
            with scope:
                await _accept_loop(listener, handlers)
        except Exception:  # noqa: BLE001 - an escape would crash the whole trio run
            log.exception("control channel failed; cosfs status will not see this mount")
        finally:
            stopped.set()

    trio.lowlevel.spawn_system_task(run, name="cosfs-control")
    try:
        yield path
    finally:
        scope.cancel()
        with trio.CancelScope(shield=True):
            await stopped.wait()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _listen(path: Path) -> trio.socket.SocketType:
    _private_dir(path.parent)
    # A socket left by a killed mount of the same mount point: that mount is gone
    # (the mount checked that nothing is mounted there), so the name is ours.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)  # the directory is private already; belt and braces
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return sock


async def _accept_loop(listener: trio.socket.SocketType,
                       handlers: dict[str, Callable[[], dict[str, Any]]]) -> None:
    async with trio.open_nursery() as nursery:
        while True:
            try:
                conn, _ = await listener.accept()
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                log.warning("control channel: accept failed: %s", exc)
                await trio.sleep(1)
                continue
            nursery.start_soon(_answer, trio.SocketStream(conn), handlers)


async def _answer(stream: trio.SocketStream,
                  handlers: dict[str, Callable[[], dict[str, Any]]]) -> None:
    """Read one request line, send one answer line. Never raises."""
    try:
        async with stream:
            with trio.move_on_after(10):
                request = await _read_line(stream)
                reply = _dispatch(request, handlers)
                await stream.send_all(json.dumps(reply, default=str).encode() + b"\n")
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away; nothing to tell anyone
    except Exception:  # noqa: BLE001 - a bad request must never take the mount down
        log.exception("control channel: request failed")


async def _read_line(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < MAX_REQUEST:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _dispatch(raw: bytes, handlers: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, Any]:
    try:
        request = json.loads(raw or b"{}")
        op = request.get("op") if isinstance(request, dict) else None
    except ValueError:
        return {"error": "request is not JSON"}
    handler = handlers.get(op) if isinstance(op, str) else None
    if handler is None:
        return {"error": f"unknown request {op!r}; known: {', '.join(sorted(handlers))}"}
    return handler()


# -- what ``status`` answers -------------------------------------------------------

LIST_LIMIT = 50  # keys listed per recovery category; the counts are always complete


class MountStatus:
    """Builds the ``status`` answer from the live objects of one mount.

    ``prepared`` is the mount's :class:`cosfs.mount.Prepared`, ``client`` its
    CosClient, ``data`` its DataPath (write cache and read budget), ``ops`` the FUSE
    adapter, ``recovery`` the report of the journal replay at mount time. Reads only;
    never awaits (see the module's concurrency note).
    """

    def __init__(self, prepared: Any, client: Any, data: Any, ops: Any,
                 recovery: Any = None) -> None:
        self.prepared = prepared
        self.client = client
        self.data = data
        self.ops = ops
        self.recovery = recovery
        self.started = time.time()
        # Resolved now, before the mount exists: resolving it later would stat the
        # mount's root from inside the loop that must answer that request.
        self.mountpoint = os.path.realpath(prepared.args.mountpoint)

    def snapshot(self) -> dict[str, Any]:
        cache = dict(self.data.cache.status())
        uploads = cache.pop("uploads", [])
        now = time.time()
        return {
            "version": STATUS_VERSION,
            "pid": os.getpid(),
            "now": now,
            "started": self.started,
            "uptime": now - self.started,
            "mounted": _is_mounted(self.mountpoint),
            "mount": self._mount_info(),
            "uploads": uploads,
            "pending_files": max(0, cache.get("dirty_files", 0) - len(uploads)),
            "cache": cache,
            "readahead": self._readahead(),
            "requests": self.client.stats(),
            "fuse_errors": self.ops.stats.get("errors", 0),
            "recovery": self._recovery(),
        }

    def _mount_info(self) -> dict[str, Any]:
        p = self.prepared
        config = p.config
        endpoint = config.endpoint or \
            f"https://{config.bucket}.cos.{config.region}.myqcloud.com"
        return {
            "mountpoint": self.mountpoint,
            "bucket": config.bucket,
            "prefix": p.root_key,
            "endpoint": endpoint,
            "region": config.region,
            "signature": config.signature,
            "read_only": bool(p.args.ro),
            "writeback": bool(p.data_tuning.writeback),
        }

    def _readahead(self) -> dict[str, Any]:
        budget = self.data.budget
        hits, misses = self.data.readahead_counts()
        return {"hits": hits, "misses": misses, "budget_bytes": budget.total,
                "budget_used": budget.used, "readers": budget.readers}

    def _recovery(self) -> dict[str, Any]:
        r = self.recovery
        if r is None:
            return {"uploaded": 0, "preserved": 0, "aborted_uploads": 0, "failed": 0,
                    "uploaded_keys": [], "preserved_files": [], "failed_keys": []}
        return {
            "uploaded": len(r.uploaded),
            "preserved": len(r.preserved),
            "aborted_uploads": r.aborted_uploads,
            "failed": len(r.failed),
            "uploaded_keys": list(r.uploaded[:LIST_LIMIT]),
            "preserved_files": [{"key": k, "path": str(path)}
                                for k, path in r.preserved[:LIST_LIMIT]],
            "failed_keys": list(r.failed[:LIST_LIMIT]),
        }


def _is_mounted(canonical: str) -> bool:
    escaped = canonical.replace("\\", "\\134").replace(" ", "\\040") \
        .replace("\t", "\\011").replace("\n", "\\012")
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == escaped for line in f)
    except OSError:
        return False


# -- client -----------------------------------------------------------------------


class ControlError(Exception):
    """No answer from a mount's control channel; the message is one line."""


def request(path: str | os.PathLike[str], op: str = "status",
            timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the socket at ``path`` and return the answer (blocking)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(json.dumps({"op": op}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise ControlError(f"{path}: {exc.strerror or exc}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: the mount sent no valid answer") from None
    if not isinstance(answer, dict):
        raise ControlError(f"{path}: unexpected answer")
    if "error" in answer:
        raise ControlError(f"{path}: {answer['error']}")
    return answer


def request_mount(canonical: str, owner_uid: int | None, op: str = "status",
                  timeout: float = 5.0) -> dict[str, Any]:
    """Ask the mount at ``canonical`` (as /proc/mounts shows it), trying each place
    its socket may be."""
    tried: list[str] = []
    for path in candidate_paths(canonical, owner_uid):
        if not path.exists():
            continue
        try:
            return request(path, op, timeout)
        except ControlError as exc:
            tried.append(str(exc))
    if tried:
        raise ControlError(tried[0])
    raise ControlError(f"no control socket for {canonical} (is it a cosfs mount, "
                       "and are you its owner or root?)")

