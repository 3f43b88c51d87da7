"""The pyfuse3 adapter: turns kernel requests into namespace, reader and writer calls.

This module holds no filesystem logic of its own beyond open-file bookkeeping; it
decodes names, maps exceptions to errno values (an error never kills the mount) and
builds the attribute replies the kernel caches.

Concurrency
    pyfuse3 runs handlers as trio tasks; any number may be in flight. Per inode, the
    writer's StagedFile serialises data changes; ``self.staged`` maps an inode to its
    StagedFile and how many handles share it, so every handle of an inode sees the same
    bytes whether it was opened for reading or writing. A directory's rename holds
    the trees it moves (``self.tree_gate``, :mod:`cosfs.tree_gate`): every call on an
    inode below waits for it, and it for those already under way.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pyfuse3
import trio

from cosfs import meta, names
from cosfs.cos import CosError, ObjectInfo
from cosfs.errmap import errno_for
from cosfs.namespace import ROOT_INODE, Inode, Namespace
from cosfs.tree_gate import TreeGate

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from trio nurseries."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


# Answers applications ask for all the time: not worth a log line.
_EXPECTED = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENODATA}
# The cache disk refusing data: the administrator must hear of it at the default
# log level (warn), but an application retrying in a loop must not flood the log.
_DISK_TROUBLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_DISK_WARN_EVERY = 30.0  # seconds between two warnings of the same errno
# readdir lists "." and ".." first, as every filesystem does (`ls -a` shows them,
# and some tools count on them); the listed names follow at offsets from _DOTS.
_DOTS_NAMES = (b".", b"..")
_DOTS = len(_DOTS_NAMES)
_disk_warned: dict[int, float] = {}


def _log_oserror(op: str, exc: OSError, read_only_mount: bool) -> None:
    if exc.errno in _DISK_TROUBLE and not read_only_mount:
        now = time.monotonic()
        last = _disk_warned.get(exc.errno)
        if last is None or now - last >= _DISK_WARN_EVERY:
            _disk_warned[exc.errno] = now
            log.warning("%s refused, the cache directory takes no more data: %s", op, exc)
            return
    log.info("%s: %s", op, exc)


def _has_object(node: Inode | None) -> bool:
    """Whether the server holds an object for ``node``, as far as the mount knows."""
    return node is not None and bool(node.attr.etag)


InodesOf = Callable[["Operations", tuple[Any, ...]], tuple[int, ...]]


def fuse_op(fn: F, inodes: InodesOf | None = None) -> F:
    """Run a handler, turning every failure into a FUSEError with the right errno.
    With ``inodes`` (see :func:`on`), the call passes the tree gate first."""

    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: Any) -> Any:
        try:
            if inodes is None:
                return await fn(self, *args)
            inos = inodes(self, args)
            await self.tree_gate.enter(inos)
            try:
                return await fn(self, *args)
            finally:
                self.tree_gate.leave(inos)
        except Exception as group:  # noqa: BLE001 - the mount must survive anything
            exc = _leaf(group)
            if isinstance(exc, pyfuse3.FUSEError):
                raise exc from None
            if isinstance(exc, OSError) and exc.errno:
                if exc.errno not in _EXPECTED:
                    _log_oserror(fn.__name__, exc, self.read_only)
                raise pyfuse3.FUSEError(exc.errno) from None
            if isinstance(exc, CosError):
                self.stats["errors"] += 1
                log.warning("%s failed: %s", fn.__name__, exc)
                raise pyfuse3.FUSEError(errno_for(exc)) from None
            log.exception("%s failed unexpectedly", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def on(inodes: InodesOf) -> Callable[[F], F]:
    """A FUSE call (:func:`fuse_op`) acting on the inodes ``inodes(self, args)``
    names: it waits while a directory above one of them is being renamed, and
    such a rename waits for it (:mod:`cosfs.tree_gate`)."""
    return lambda fn: fuse_op(fn, inodes)


def _args(*positions: int) -> InodesOf:
    """The inode numbers at these positions of the call's arguments."""
    if len(positions) == 1:  # most calls: kept cheap, as every call comes here
        (at,) = positions
        return lambda ops, args: (args[at],)
    return lambda ops, args: tuple(args[p] for p in positions)


def _handle_inode(ops: Operations, args: tuple[Any, ...]) -> tuple[int, ...]:
    """The inode of the file handle the call names first."""
    h = ops.handles.get(args[0])
    return (h.inode.ino,) if h is not None else ()


def _dir_handle_inode(ops: Operations, args: tuple[Any, ...]) -> tuple[int, ...]:
    """The inode of the directory handle the call names first."""
    state = ops.dir_handles.get(args[0])
    return (state[0],) if state is not None else ()


@dataclass(eq=False)
class Handle:
    inode: Inode
    staged: Any = None  # cosfs.writer.StagedFile while the inode is staged
    reader: Any = None  # cosfs.reader.ObjectReader for read-only handles
    # Opened for writing (or created; always staged): only such a handle's flush
    # and release upload. A reader of a staged file (being written through another
    # handle, only in the cache, or kept for it) has nothing to send: its close
    # must not upload a half-written file, restart a write-back delay or report a
    # failed upload that was not its own.
    writing: bool = False


@dataclass
class _Held:
    """What an unlink, rename or metadata change holds until it ends (see
    ``Operations._hold_unsent``)."""
    staged: list[Inode]  # staged by the operation: data waiting in the cache
    paused: list[Any]  # StagedFiles whose waiting write-back upload must not start

    def __iadd__(self, other: _Held) -> _Held:
        self.staged += other.staged
        self.paused += other.paused
        return self


class Operations(pyfuse3.Operations):
    """FUSE operations of one mount. ``data`` is the mount's reader/writer context
    (see :class:`cosfs.mount.DataPath`)."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, ns: Namespace, data: Any, *, read_only: bool = False,
                 kernel_ttl: float = 1.0) -> None:
        super().__init__()
        self.ns = ns
        self.data = data
        self.read_only = read_only
        self.kernel_ttl = kernel_ttl
        self.handles: dict[int, Handle] = {}
        # directory handle -> [inode number, entries listed at the first readdir]
        self.dir_handles: dict[int, list[Any]] = {}
        self.staged: dict[int, tuple[Any, int]] = {}
        # Unlinked inodes still open: their staged copy is held until the last close.
        self.orphans: set[int] = set()
        # Names an unlink or rename is removing or replacing, and the inodes they
        # name: lookups of those names and opens of those inodes wait for the end
        # (see _replacing).
        self._busy_names: dict[tuple[int, str], trio.Event] = {}
        self._busy_inodes: dict[int, trio.Event] = {}
        self.tree_gate = TreeGate(self._parent_of)
        self._next_fh = 1
        self.stats = {"errors": 0}
        # Write-back uploads end after flush() returned: record what they produced.
        data.cache.on_upload = self._uploaded_in_background

    def _uploaded_in_background(self, f: Any, info: ObjectInfo) -> None:
        node = self.ns.inodes.get(f.ino)
        if node is not None:
            self.ns.uploaded(node, info, f.metadata)
            if f.dirty:  # changed again since that upload began: the cache is newer
                node.attr.size = f.size
                node.local = True
            self._readers_follow(node)

    # -- helpers -----------------------------------------------------------------

    def _parent_of(self, ino: int) -> int | None:
        node = self.ns.inodes.get(ino)
        return None if node is None or ino == ROOT_INODE else node.parent

    def entry(self, inode: Inode) -> pyfuse3.EntryAttributes:
        a = inode.attr
        e = pyfuse3.EntryAttributes()
        e.st_ino = inode.ino
        e.generation = 0
        e.entry_timeout = self.kernel_ttl
        # Partial attributes (a listing's, for readdirplus) carry the default mode
        # and owner: the kernel must ask (getattr) before it uses them.
        e.attr_timeout = 0 if a.partial else self.kernel_ttl
        e.st_mode = a.mode
        e.st_nlink = 2 if a.is_dir() else 1
        e.st_uid = a.uid
        e.st_gid = a.gid
        staged = self.staged.get(inode.ino)
        size = staged[0].size if staged is not None else a.size
        e.st_size = size
        e.st_blksize = 1 << 20
        e.st_blocks = (size + 511) // 512
        e.st_atime_ns = a.mtime_ns
        e.st_mtime_ns = a.mtime_ns
        e.st_ctime_ns = max(a.ctime_ns, a.mtime_ns)
        return e

    def _negative(self) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = 0  # a negative entry the kernel may cache
        e.entry_timeout = self.kernel_ttl
        return e

    def _writable(self) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, "read-only mount")

    def _new_fh(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = handle
        return fh

    def _handle(self, fh: int) -> Handle:
        try:
            return self.handles[fh]
        except KeyError:
            raise OSError(errno.EBADF, "bad file handle") from None

    def _base(self, inode: Inode) -> ObjectInfo | None:
        """What the data path needs to know of the object behind ``inode``."""
        if not inode.attr.etag:
            return None
        a = inode.attr
        return ObjectInfo(key=self.ns.key_of(inode), size=a.size, etag=a.etag,
                          last_modified=a.mtime_ns / 1e9, appendable=a.appendable,
                          storage_class=a.storage_class)

    async def _stage(self, inode: Inode, truncate: bool = False,
                     append_only: bool = False) -> Any:
        """The inode's StagedFile, opened (or shared) for one more user."""
        current = self.staged.get(inode.ino)
        # Uploads that start while the file is still being written carry these.
        metadata, ctype = self._upload_args(inode)
        f = await self.data.cache.open(inode.ino, self.ns.key_of(inode), self._base(inode),
                                       truncate, append_only=append_only,
                                       metadata=metadata, content_type=ctype)
        self.staged[inode.ino] = (f, (current[1] if current else 0) + 1)
        if truncate or not inode.attr.etag:
            inode.local = True
        return f

    async def _unstage(self, inode: Inode) -> None:
        f, users = self.staged[inode.ino]
        if users > 1:
            self.staged[inode.ino] = (f, users - 1)
        else:
            del self.staged[inode.ino]
        # Every _stage() opened the cache's file once: release it once each, or it
        # never goes idle and a later open gets it back under a stale key.
        await self.data.cache.release(f)

    def _upload_args(self, inode: Inode) -> tuple[dict[str, str], str]:
        # A rewritten object keeps its Content-Type; a new one gets it from its name.
        ctype = inode.attr.content_type or self.ns.guess_type(self.ns.key_of(inode))
        return meta.metadata_for(inode.attr), ctype

    async def _flush_inode(self, inode: Inode, *, sync: bool = False) -> None:
        staged = self.staged.get(inode.ino)
        if staged is None:
            return
        f = staged[0]
        if not f.dirty and not sync:
            return
        deferred = self.ns.deferred
        superseded = None
        if f.dirty:
            # A chmod or utime deferred while the file was clean is in inode.attr,
            # where this upload's metadata comes from: the upload carries it, and
            # what came after it (a later chmod, the new mtime of a write), which
            # the deferred copy, stored afterwards, would undo.
            await deferred.settle(inode.ino)
            superseded = deferred.of(inode.ino)
        metadata, ctype = self._upload_args(inode)
        try:
            info = await (f.fsync(metadata, ctype) if sync else f.flush(metadata, ctype))
        finally:
            if superseded is not None:
                # The staged file holds the metadata now (journaled with it): an
                # upload that failed is tried again with it.
                deferred.drop(inode.ino, only=superseded)
        self.ns.uploaded(inode, info, metadata)
        if f.dirty:  # write-back mode: still uploading in the background
            inode.local = True
        self._readers_follow(inode)

    def _readers_follow(self, node: Inode) -> None:
        """Read-only handles see what was written through this mount (POSIX): one
        whose object we just replaced (by a flush, or a write-back upload that
        ended) reads the new one from now on, instead of failing its If-Match
        (EIO). Changes by other clients still give EIO rather than a mix of two
        versions."""
        for h in self.handles.values():
            if h.inode is node and h.reader is not None and node.attr.etag \
                    and h.reader.etag != node.attr.etag:
                old = h.reader
                h.reader = self.data.open_reader(self.ns.key_of(node), node.attr.size,
                                                 node.attr.etag)
                old.close_now()

    # -- lookups and attributes ----------------------------------------------------

    @on(_args(0))
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        text = names.decode_name(name)
        while (busy := self._busy_names.get((parent_inode, text))) is not None:
            await busy.wait()
        try:
            inode = await self.ns.lookup(parent_inode, text)
        except OSError as exc:
            if exc.errno == errno.ENOENT and self.kernel_ttl > 0:
                return self._negative()
            raise
        inode.lookups += 1
        return self.entry(inode)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.ns.forget(ino, count)

    @on(_args(0))
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        node = await self.ns.getattr(inode)
        if node.ino != inode and node.attr.kind != self.ns.get(inode).attr.kind:
            # Not what the kernel holds (a listed object turned out to be a
            # symlink, or a directory took the name): ESTALE makes stat() look the
            # name up again instead of the kernel failing the inode.
            raise OSError(errno.ESTALE, "the name is now of another type")
        return self.entry(node)

    @on(_args(0))
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None, ctx: Any
                      ) -> pyfuse3.EntryAttributes:
        self._writable()
        node = await self.ns.complete(self.ns.get(inode))
        if fields.update_size:
            await self._truncate(node, attr.st_size, fh)
        new = replace(node.attr)
        now = time.time_ns()
        if fields.update_mode:
            new.mode = stat.S_IFMT(node.attr.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            new.uid = attr.st_uid
        if fields.update_gid:
            new.gid = attr.st_gid
        if fields.update_mtime:
            new.mtime_ns = attr.st_mtime_ns
            new.mtime_set = True
        if fields.update_size and not fields.update_mtime:
            new.mtime_ns = now
            new.mtime_set = False
        changed = (new.mode, new.uid, new.gid, new.mtime_ns) != (
            node.attr.mode, node.attr.uid, node.attr.gid, node.attr.mtime_ns)
        new.ctime_ns = now
        if changed and not fields.update_size:
            await self._store_attr(node, new, defer=True)
        else:
            node.attr = new
            if fields.update_size:
                await self._flush_inode(node)
        return self.entry(node)

    async def _store_attr(self, node: Inode, new: meta.Attr, *, defer: bool = False) -> None:
        """Give ``node`` the attributes ``new`` on the server. ``defer``: a clean
        file's metadata copy may wait (``Namespace.defer_attr``; chmod, chown,
        utime); xattr changes are stored before the call returns."""
        # Data waiting in the cache after a failed upload goes up now, with it; a
        # write-back upload (waiting or running) carries it by itself.
        held = _Held(await self._hold_below(node), [])
        try:
            staged = self.staged.get(node.ino)
            if staged is not None and staged[0].dirty:  # the pending upload carries it
                if not meta.fits_metadata_limit(new):
                    raise OSError(errno.ENOSPC, "metadata larger than COS's 2 KB limit")
                node.attr = new
                staged[0].remember(*self._upload_args(node))
                if held.staged and not staged[0].writeback_pending:
                    await self._flush_inode(node, sync=True)
            else:
                # Nothing pending (an open file not written to, even if truncated to
                # its own size): only a copy onto itself stores the metadata (and
                # keeps what else the object has: copies.kept_by_copy).
                if defer and self.ns.can_defer(node):
                    # The copy waits a moment for the next change (rsync's utime,
                    # then chmod) or the rename that carries it. Open handles do not
                    # mind: a metadata copy keeps the ETag, and an upload of new
                    # data carries the metadata itself.
                    await self.ns.defer_attr(node, new)
                else:
                    await self.ns.store_attr(node, new)
                    self._readers_follow(node)
        finally:
            await self._release_held(held)

    async def _truncate(self, node: Inode, size: int, fh: int | None) -> None:
        if node.is_dir():
            raise OSError(errno.EISDIR, "is a directory")
        # Staged here even when open handles have it staged already: the last of
        # those may be released (FUSE sends RELEASE after close() returned) while
        # this truncate waits, and the flush below must still find the file.
        f = await self._stage(node, truncate=size == 0)
        try:
            await f.truncate(size)
            node.local = True
            node.attr.size = size
            await self._flush_inode(node)
        finally:
            await self._unstage(node)

    @on(_args(0))
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        target = await self.ns.readlink(inode)
        return target.encode("utf-8", "surrogateescape")

    # -- directories -----------------------------------------------------------------

    @on(_args(0))
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        node = self.ns.get(inode)
        if not node.is_dir():
            raise OSError(errno.ENOTDIR, "not a directory")
        fh = self._next_fh
        self._next_fh += 1
        self.dir_handles[fh] = [inode, None]
        return fh

    @on(_dir_handle_inode)
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        try:
            state = self.dir_handles[fh]
        except KeyError:
            raise OSError(errno.EBADF, "bad directory handle") from None
        # List once per pass: offsets index the entries of the first call.
        if state[1] is None or start_id == 0:
            state[1] = await self.ns.list_dir(state[0])
        entries = state[1]
        parent = self.ns.get(state[0])
        for i in range(start_id, _DOTS + len(entries)):
            if i < _DOTS:
                # The kernel takes no reference on these: not counted as lookups.
                node = parent if i == 0 else self.ns.inodes.get(parent.parent, parent)
                if not pyfuse3.readdir_reply(token, _DOTS_NAMES[i], self.entry(node), i + 1):
                    return
                continue
            name, inode = entries[i - _DOTS]
            # Listed earlier, perhaps forgotten by the kernel since: bind it again.
            inode = self.ns.rebind(parent, name, inode)
            if not pyfuse3.readdir_reply(token, name.encode("utf-8", "surrogateescape"),
                                         self.entry(inode), i + 1):
                return
            inode.lookups += 1

    @fuse_op
    async def releasedir(self, fh: int) -> None:
        self.dir_handles.pop(fh, None)

    @on(_dir_handle_inode)
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        # Directory changes are on the server when their call returns, except the
        # DELETE of a renamed file's old key, which may still be running.
        state = self.dir_handles.get(fh)
        node = self.ns.inodes.get(state[0]) if state is not None else None
        if node is not None:
            await self.ns.aclient.wait_deletes(names.dir_prefix(self.ns.key_of(node)))

    @on(_args(0))
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any
                    ) -> pyfuse3.EntryAttributes:
        self._writable()
        inode = await self.ns.mkdir(parent_inode, names.decode_name(name), mode,
                                    ctx.uid, ctx.gid)
        inode.lookups += 1
        return self.entry(inode)

    @on(_args(0))
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        self._writable()
        text = names.decode_name(name)
        await self.ns.rmdir(parent_inode, text)
        self._kernel_forget_name(parent_inode, text)

    @on(_args(0))
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        self._writable()
        text = names.decode_name(name)
        async with self._replacing((parent_inode, text)):
            held = await self._hold_unsent(parent_inode, text)
            try:
                await self._keep_open_data(parent_inode, text)
                inode = await self.ns.unlink(parent_inode, text)
                staged = self.staged.get(inode.ino)
                if staged is not None:
                    staged[0].discard()  # never uploaded, nor recovered after a crash
            finally:
                await self._release_held(held)
        self._kernel_forget_name(parent_inode, text)

    @contextlib.asynccontextmanager
    async def _replacing(self, *names_: tuple[int, str]) -> AsyncIterator[None]:
        """Mark names whose object is about to be deleted or overwritten.

        POSIX makes unlink and rename atomic; here they take requests (a copy, a
        DELETE). An open of the old inode that slipped in between would read the
        object as it goes away (EIO): opens of the inodes so named wait, then get
        ESTALE if their name went (the kernel looks the name up again); lookups of
        the names wait and find what is there afterwards; a second unlink or rename
        of the same name waits for the first.
        """
        while busy := [self._busy_names[n] for n in names_ if n in self._busy_names]:
            await busy[0].wait()
        done = trio.Event()
        inodes = {ino for n in names_ if (ino := self.ns.children.get(*n)) is not None}
        for n in names_:
            self._busy_names[n] = done
        for ino in inodes:
            self._busy_inodes[ino] = done
        try:
            yield
        finally:
            for n in names_:
                del self._busy_names[n]
            for ino in inodes:
                if self._busy_inodes.get(ino) is done:
                    del self._busy_inodes[ino]
            done.set()

    async def _keep_open_data(self, parent_inode: int, name: str) -> Inode | None:
        """POSIX: an unlinked file stays readable through the handles open on it. The
        object is about to be deleted, so its bytes move into the staged copy first
        (reads of any handle of the inode go there), held until the last close.
        Returns the inode so held, if any."""
        node = self.ns.child(parent_inode, name)
        if node is None or node.opens <= 0 or node.is_dir() or not node.attr.etag \
                or node.ino in self.orphans:
            return None
        f = await self._stage(node)
        try:
            await f.make_local()
        except BaseException:
            await self._unstage(node)
            raise
        self.orphans.add(node.ino)
        return node

    async def _hold_unsent(self, parent_inode: int, name: str, *,
                           moving: bool = False, onto_object: bool = False) -> _Held:
        """Stage the files at or below ``name`` whose data waits in the cache because
        their last upload failed or runs in the background (no handle holds them).
        Staged, they take part in what follows: an unlink discards their data, a
        rename uploads it first and moves it along. Left idle, the journal would
        upload it under the old name at the next mount, bringing a deleted or
        renamed file back.

        A write-back upload that has not started is held instead of waited for:
        an unlink (or a rename over the file) drops it, and a rename (``moving``)
        of a file with no object yet gives it the new key, so it is sent once,
        under its final name, unless the file is renamed onto a name that has an
        object (``onto_object``): then it goes up first, to be copied over that
        object. Any other one in flight would land after what follows (the DELETE
        of an unlink, the copy of a rename) and undo it: it finishes first."""
        held = _Held([], [])
        top = self.ns.child(parent_inode, name)
        if top is None:
            return held
        try:
            held.staged += await self._hold_below(top)
            staged_here = {node.ino for node in held.staged}
            for staged_ino in self._staged_below(top):
                node = self.ns.inodes[staged_ino]
                if staged_ino not in staged_here:
                    # Held staged until the operation ends: the RELEASE of a
                    # close() that returned just before may arrive meanwhile, and
                    # the file must still be staged when the unlink discards it or
                    # the rename gives it its new key.
                    await self._stage(node)
                    held.staged.append(node)
                f = self.staged[staged_ino][0]
                retarget = not node.attr.etag and not (onto_object and node is top)
                if (retarget or not moving) and f.hold_writeback():
                    held.paused.append(f)
                else:
                    await f.wait_background()
        except BaseException:
            await self._release_held(held)
            raise
        return held

    async def _hold_below(self, top: Inode) -> list[Inode]:
        """Stage the files at or below ``top`` with data only in the cache."""
        held = []
        for node in self.ns.below(top):
            if node.local and not node.is_dir() and node.ino not in self.staged:
                await self._stage(node)
                held.append(node)
        return held

    async def _release_held(self, held: _Held) -> None:
        for f in held.paused:
            f.release_writeback()
        for node in held.staged:
            f = self.staged[node.ino][0]
            await self._unstage(node)
            if not f.dirty and not node.attr.etag and node.ino not in self.staged:
                node.local = False  # its data was discarded (unlinked or replaced)

    def _kernel_forget_name(self, parent_inode: int, name: str) -> None:
        """Nothing to do: the kernel drops the dentry itself after a successful
        unlink/rmdir/rename it sent us. Kept as the one place to add invalidation
        for changes not made through the kernel."""

    @on(_args(0, 2))
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any = None) -> None:
        self._writable()
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise OSError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        old = names.decode_name(name_old)
        new = names.decode_name(name_new)
        async with self._replacing((parent_inode_old, old), (parent_inode_new, new)), \
                self._moving_trees(parent_inode_old, old, parent_inode_new, new):
            await self._rename(parent_inode_old, old, parent_inode_new, new, flags)

    def _moving_trees(self, parent_inode_old: int, old: str, parent_inode_new: int,
                      new: str) -> contextlib.AbstractAsyncContextManager[None]:
        """A directory's rename holds the tree it moves and the one it replaces:
        calls below wait for it (the kernel locks only the two parents)."""
        src = self.ns.child(parent_inode_old, old)
        if src is None or not src.is_dir():  # a file's inode the kernel locks itself
            return contextlib.nullcontext()
        dst = self.ns.child(parent_inode_new, new)
        trees = [src.ino] + ([dst.ino] if dst is not None and dst.is_dir() else [])
        return self.tree_gate.moving(trees, own=(parent_inode_old, parent_inode_new))

    async def _rename(self, parent_inode_old: int, old: str, parent_inode_new: int,
                      new: str, flags: int) -> None:
        moved: dict[int, str] = {}  # open inode -> its key before the rename

        async def flush_first(src: Inode, dst: Inode | None) -> None:
            # A file with no object yet moves along unsent, to be uploaded once
            # under its new name; but one that replaces an object goes up first
            # and is copied over it, or the name would keep the old object while
            # the namespace knew of none (an unlink would then leave it there).
            # Decided before the rename where the target was known (its upload
            # is then awaited outside the namespace's rename lock); here for a
            # target learnt of only now.
            replaces = _has_object(dst) and not src.is_dir()
            for ino in self._staged_below(src):
                f = self.staged[ino][0]
                if f in held.paused:
                    if not replaces:
                        continue
                    held.paused.remove(f)
                    f.release_writeback()
                await self._flush_inode(self.ns.inodes[ino], sync=True)
            for node in self._open_below(src):
                moved[node.ino] = self.ns.key_of(node)

        held = await self._hold_unsent(
            parent_inode_old, old, moving=True,
            onto_object=_has_object(self.ns.child(parent_inode_new, new)))
        try:
            held += await self._hold_unsent(parent_inode_new, new)
            # A file renamed over stays readable through its open handles, like an
            # unlinked one: its bytes move into the cache before the object goes.
            kept = None if flags & pyfuse3.RENAME_NOREPLACE else \
                await self._keep_open_data(parent_inode_new, new)
            try:
                src, replaced = await self.ns.rename(
                    parent_inode_old, old, parent_inode_new, new,
                    noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE),
                    before_copy=flush_first)
            except BaseException:
                if kept is not None:
                    self.orphans.discard(kept.ino)
                    await self._unstage(kept)
                raise
            if replaced is not None and replaced.ino in self.staged:
                self.staged[replaced.ino][0].discard()
            for ino in self._staged_below(src):
                f = self.staged[ino][0]
                new_key = self.ns.key_of(self.ns.inodes[ino])
                # A file not sent yet goes up under its new name and the type it
                # gives (rsync's temporary files in write-back mode).
                retype = meta.retyped(f.content_type or "", f.key, new_key,
                                      self.ns.guess_type)
                f.key = new_key
                if retype is not None:
                    f.remember(None, retype)
            await self._follow_rename(moved)
        finally:
            await self._release_held(held)

    async def _follow_rename(self, moved: dict[int, str]) -> None:
        """Open files a rename moved read their bytes from the new key from now on:
        the old one is deleted. ``moved`` maps each inode to its key before."""
        for ino, old_key in moved.items():
            node = self.ns.inodes.get(ino)
            if node is None:
                continue
            readers = [h.reader for h in self.handles.values()
                       if h.inode is node and h.reader is not None]
            staged = self.staged.get(ino)
            base = staged[0].base if staged is not None else None
            if base is not None and base.key != old_key:
                base = None  # its bytes come from another object: not moved
            if not readers and base is None:
                continue
            new_key = self.ns.key_of(node)
            try:
                info = await self.ns.aclient.head_object(new_key)
            except CosError as exc:
                log.warning("%r moved to %r while open, but cannot be found there (%s): "
                            "its open handles will fail", old_key, new_key, exc)
                continue
            for reader in readers:
                reader.key, reader.etag = new_key, info.etag
            if base is not None and staged is not None:
                staged[0].base_moved(info)

    def _staged_below(self, top: Inode) -> list[int]:
        """Staged inodes at or below ``top`` (open files that follow a rename)."""
        if not top.is_dir():  # the common case, and a rename per file: no scan
            return [top.ino] if top.ino in self.staged else []
        return [ino for ino in self.staged
                if (node := self.ns.inodes.get(ino)) is not None and self._is_below(node, top)]

    def _open_below(self, top: Inode) -> list[Inode]:
        """Open inodes at or below ``top``."""
        if not top.is_dir():
            return [top] if top.opens > 0 else []
        return [node for node in self.ns.open_inodes() if self._is_below(node, top)]

    def _is_below(self, node: Inode | None, top: Inode) -> bool:
        """Whether ``node`` is ``top`` or lies below it."""
        while node is not None:
            if node.ino == top.ino:
                return True
            if node.ino == ROOT_INODE:
                return False
            node = self.ns.inodes.get(node.parent)
        return False

    @on(_args(0, 1))
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any
                   ) -> pyfuse3.EntryAttributes:
        raise OSError(errno.EPERM, "hard links are not supported")

    @on(_args(0))
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any
                      ) -> pyfuse3.EntryAttributes:
        self._writable()
        inode = await self.ns.symlink(parent_inode, names.decode_name(name),
                                      target.decode("utf-8", "surrogateescape"),
                                      ctx.uid, ctx.gid)
        inode.lookups += 1
        return self.entry(inode)

    # -- files -------------------------------------------------------------------------

    @on(_args(0))
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
                    ) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):
            raise OSError(errno.EPERM, "only regular files can be created")
        self._writable()
        text = names.decode_name(name)
        await self.ns.ensure_absent(parent_inode, text)
        inode = self.ns.create_local(parent_inode, text, mode, ctx.uid, ctx.gid)
        try:
            await self._stage(inode)
        except BaseException:
            self._abandon_new(parent_inode, text, inode)
            raise
        try:
            await self._flush_inode(inode, sync=True)
        finally:
            await self._unstage(inode)
        inode.lookups += 1
        return self.entry(inode)

    @on(_args(0))
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._writable()
        text = names.decode_name(name)
        inode = self.ns.create_local(parent_inode, text, mode, ctx.uid, ctx.gid)
        inode.opens += 1
        try:
            f = await self._stage(inode, append_only=(flags & os.O_ACCMODE) == os.O_WRONLY
                                  and bool(flags & os.O_APPEND))
        except BaseException:
            inode.opens -= 1
            self._abandon_new(parent_inode, text, inode)
            raise
        inode.lookups += 1
        fh = self._new_fh(Handle(inode, staged=f, writing=True))
        return pyfuse3.FileInfo(fh=fh), self.entry(inode)

    def _abandon_new(self, parent_inode: int, name: str, inode: Inode) -> None:
        """A new file whose staging failed (e.g. ENOSPC from the cache) must not stay
        listed: nothing holds it locally and nothing is on the server."""
        if inode.attr.etag or inode.opens > 0 or inode.ino in self.staged:
            return  # an existing object, or in use by another handle
        inode.local = False
        self.ns._detach(parent_inode, name)

    @on(_args(0))
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        while (busy := self._busy_inodes.get(inode)) is not None:
            await busy.wait()
        node = self.ns.get(inode)
        # Counted open from the start: an unlink or rename racing this open must
        # keep the inode's bytes for it.
        node.opens += 1
        try:
            node = await self.ns.getattr(inode)
            if node.is_dir():
                raise OSError(errno.EISDIR, "is a directory")
            writing = (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC
            if writing:
                self._writable()
            old_ino = node.ino
            redirected = not self.ns.linked(node) and node.ino not in self.staged
            if redirected:
                node = self._open_what_replaced(node, bool(writing))
            append_only = (flags & os.O_ACCMODE) == os.O_WRONLY and bool(flags & os.O_APPEND)
            # No await before this: the file a redirect found may be only in the
            # cache, and a rename over it discards that unless a handle stages it.
            handle = await self._open_handle(node, bool(writing), bool(flags & os.O_TRUNC),
                                             append_only)
        except BaseException:
            node.opens -= 1
            self.ns._maybe_drop(node.ino)
            raise
        # The kernel's cached pages are still good when the object did not change
        # (never for a redirected open: the kernel's pages are the old inode's).
        keep = bool(node.attr.etag) and node.last_open_etag == node.attr.etag \
            and not redirected
        node.last_open_etag = node.attr.etag
        fh = self._new_fh(handle)
        if redirected:
            # The kernel would read up to the size it cached for the old inode.
            # Shielded: the handle is registered, and a cancellation (only at
            # shutdown) would leave it counted open with no fh the kernel releases.
            with trio.CancelScope(shield=True), \
                    contextlib.suppress(OSError):  # e.g. ENOENT: the kernel forgot it
                await trio.to_thread.run_sync(pyfuse3.invalidate_inode, old_ino, True)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    def _open_what_replaced(self, node: Inode, writing: bool) -> Inode:
        """``node`` was unlinked or renamed over between the kernel's lookup and this
        open, its object gone: the open takes effect after that change. Readers get
        the file now under the name (``node`` takes its attributes, which the kernel
        asks for when reading past the old size); writers get ESTALE, which makes
        the kernel look the name up again, so two inodes never stage one key.
        A file that is only in the cache (write-back, not uploaded yet) is read
        from there: ESTALE would make the kernel retry just once, and the name is
        often replaced again by then when programs keep renaming files over it.
        Returns the inode the handle is for, counted open in place of ``node``."""
        cur = self.ns.child(node.parent, node.name)
        if cur is None:
            raise OSError(errno.ENOENT, "removed while being opened")
        if writing or cur.is_dir() or not (cur.local or cur.attr.etag) \
                or stat.S_IFMT(cur.attr.mode) != stat.S_IFMT(node.attr.mode):
            raise OSError(errno.ESTALE, "replaced while being opened")
        node.attr = replace(cur.attr)
        # The handle belongs to ``cur``: a later unlink or rename of the name keeps
        # its bytes for it like for any other open handle.
        node.opens -= 1
        self.ns._maybe_drop(node.ino)
        cur.opens += 1
        return cur

    async def _open_handle(self, node: Inode, writing: bool, truncate: bool,
                           append_only: bool) -> Handle:
        # A file with unsent data (its upload failed) is read from the cache too.
        if writing or node.ino in self.staged or node.local:
            f = await self._stage(node, truncate=truncate, append_only=append_only)
            if truncate:
                node.attr.size = 0
                node.attr.mtime_ns = time.time_ns()
            return Handle(node, staged=f, writing=writing)
        reader = self.data.open_reader(self.ns.key_of(node), node.attr.size, node.attr.etag)
        return Handle(node, reader=reader)

    @on(_handle_inode)
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        h = self._handle(fh)
        staged = self.staged.get(h.inode.ino)
        if staged is not None:
            return await staged[0].read(off, size)
        if h.reader is not None and h.inode.local:
            # Rewritten through another handle, since closed, and not uploaded yet
            # (write-back, or a failed upload): the cache holds what to read.
            f = await self._stage(h.inode)
            old, h.reader, h.staged = h.reader, None, f
            await old.close()
            return await f.read(off, size)
        reader = h.reader
        try:
            return await reader.read_view(off, size)
        except Exception:  # an OSError or CosError, maybe in a nursery's group
            # Unlinked or renamed over while this read waited for the server: the
            # inode's bytes were moved into the cache before the object went.
            staged = self.staged.get(h.inode.ino)
            if staged is not None:
                return await staged[0].read(off, size)
            if h.reader is not reader and h.reader is not None:
                # Our own upload replaced the object meanwhile (_readers_follow).
                return await h.reader.read_view(off, size)
            raise

    @on(_handle_inode)
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self._handle(fh)
        if h.staged is None:
            raise OSError(errno.EBADF, "file not open for writing")
        written = await h.staged.write(off, buf)
        node = h.inode
        node.local = True
        node.attr.size = h.staged.size
        node.attr.mtime_ns = node.attr.ctime_ns = time.time_ns()
        node.attr.mtime_set = False
        return written

    @on(_handle_inode)
    async def flush(self, fh: int) -> None:
        h = self._handle(fh)
        if h.writing:
            await self._flush_inode(h.inode)
            # A deferred chmod/utime goes up with the data (or alone if there was
            # none to send). Read-only handles leave it waiting: rsync opens the
            # file only to fchmod it, right before the rename that carries it.
            await self.ns.deferred.apply(h.inode.ino)

    @on(_handle_inode)
    async def fsync(self, fh: int, datasync: bool) -> None:
        h = self._handle(fh)
        if h.staged is not None:
            await self._flush_inode(h.inode, sync=True)
        await self.ns.deferred.apply(h.inode.ino)

    @on(_handle_inode)
    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        node = h.inode
        try:
            if h.staged is not None:
                try:
                    if h.writing:
                        await self._flush_inode(node)
                finally:
                    await self._unstage(node)
            elif h.reader is not None:
                await h.reader.close()
        finally:
            node.opens -= 1
            if node.opens <= 0 and node.ino in self.orphans:
                self.orphans.discard(node.ino)
                await self._unstage(node)
            # A file stays local (authoritative, listed even if new) while the cache
            # keeps unsent data for it (its upload failed, or runs in the background);
            # otherwise it is what the server holds, even after a truncate that
            # changed nothing.
            unsent = h.staged is not None and h.staged.dirty
            if node.ino not in self.staged and not unsent and node.opens <= 0:
                node.local = False
            self.ns._maybe_drop(node.ino)

    # -- extended attributes -----------------------------------------------------------

    async def _fresh(self, inode: int) -> Inode:
        return await self.ns.getattr(inode)  # never partial

    @on(_args(0))
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        node = await self._fresh(inode)
        try:
            return node.attr.xattrs[name.decode("utf-8", "surrogateescape")]
        except KeyError:
            raise OSError(errno.ENODATA, "no such attribute") from None

    @on(_args(0))
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        node = await self._fresh(inode)
        return [n.encode("utf-8", "surrogateescape") for n in sorted(node.attr.xattrs)]

    @on(_args(0))
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any = None) -> None:
        self._writable()
        text = name.decode("utf-8", "surrogateescape")
        if text.startswith("system."):
            raise OSError(errno.ENOTSUP, "system attributes are not supported")
        node = await self._fresh(inode)
        new = replace(node.attr, xattrs={**node.attr.xattrs, text: value})
        if meta.metadata_size({"xattr": meta.encode_xattrs({text: value})}) > \
                meta.METADATA_LIMIT:
            raise OSError(errno.E2BIG, "attribute value larger than COS's metadata limit")
        await self._store_attr(node, new)

    @on(_args(0))
    async def removexattr(self, inode: int, name: bytes, ctx: Any = None) -> None:
        self._writable()
        text = name.decode("utf-8", "surrogateescape")
        node = await self._fresh(inode)
        if text not in node.attr.xattrs:
            raise OSError(errno.ENODATA, "no such attribute")
        xattrs = dict(node.attr.xattrs)
        del xattrs[text]
        await self._store_attr(node, replace(node.attr, xattrs=xattrs))

    # -- the rest ------------------------------------------------------------------------

    @fuse_op
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        # A bucket has no fixed size: report 1 PiB, almost all free, so tools that
        # check for space before writing go ahead.
        s.f_blocks = 2**50 // 4096
        s.f_bfree = s.f_bavail = s.f_blocks - 1
        s.f_files = 2**32
        s.f_ffree = s.f_favail = 2**32 - 1
        s.f_namemax = meta.NAME_MAX
        return s

    async def wait_idle(self) -> None:
        """Flush every staged inode (used before a clean unmount)."""
        for ino in list(self.staged):
            node = self.ns.inodes.get(ino)
            if node is not None:
                await self._flush_inode(node, sync=True)
        await self.ns.deferred.apply_all()
        await self.ns.aclient.wait_deletes()
        await trio.sleep(0)
