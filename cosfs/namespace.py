"""The filesystem's view of a bucket: inodes, keys, lookups, listings and the
namespace operations (mkdir, unlink, rmdir, rename, setattr, xattrs, symlinks).

This layer knows nothing of FUSE: it raises ``OSError`` with an errno, and
:mod:`cosfs.fs` turns calls from the kernel into calls here. It talks to COS only
through :class:`cosfs.aio.AsyncClient`.

Model
    A path component maps to a key under the mount's root prefix. A name is a
    *file* (an object ``key``), a *symlink* (an object with S_IFLNK in its mode),
    or a *directory*: a ``key/`` marker object, or *implicit* when only keys under
    ``key/`` exist. When both ``key`` and ``key/...`` exist the directory wins and
    the object is hidden (as mountpoint-s3 does).

Invariants
    - ``inodes`` holds every inode the kernel may still refer to (lookup count > 0)
      or that is open; ``children`` binds each live name to its inode.
      An unlinked or replaced inode leaves ``children`` but stays in ``inodes``
      until forgotten and closed.
    - An inode's key is derived from its parent chain, so renaming a directory moves
      everything below it without touching the descendants.
    - An inode with ``local`` set (a new file not yet uploaded, or a file with dirty
      staged data) is authoritative: it is never revalidated against the server.
      So is one in ``deferred`` (new metadata waiting to be copied onto its object,
      see ``defer_attr`` and :mod:`cosfs.deferred_meta`).
    - ``attr.partial`` (attributes from a listing only) is only ever seen by
      readdir; ``lookup``, ``getattr`` and ``complete`` return full attributes.
      A partial file is never a possible symlink (its size rules that out), and
      never exists when no metadata is read (``-o listing_attrs``): a listing
      then says all there is of a file.
    - Our own changes update the caches at once; other clients' changes show once
      ``ttl`` has passed.

Concurrency
    Everything runs on the trio event loop; state changes between awaits only.
    Operations re-check the tables after each await instead of holding locks, except
    rename, which holds ``rename_lock`` so two renames never interleave their
    copy/delete phases. (A renamed file's old key is deleted in the background;
    ``AsyncClient`` holds back every request naming it until then.)
    Background tasks (``_fill_tasks``) complete listed entries and ready the
    directories a walk reads next; a readdir waits for the readying of its
    directory (``_readying``), and for the HEADs sent ahead of lookups by name
    (``_heading``), rather than asking again. A LIST whose answer may
    be kept as a listing is registered in ``_fetches`` while under way, so our
    changes meanwhile are replayed onto its answer (or void it).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeVar

import cachetools
import trio

from cosfs import copies, meta, names
from cosfs.aio import AsyncClient
from cosfs.background import Started, TaskSet
from cosfs.cos import CosError, ListPage, ObjectInfo
from cosfs.deferred_meta import DeferredMetadata, PendingMeta
from cosfs.meta import Attr, Defaults
from cosfs.moves import Moves
from cosfs.old_keys import OldKeys

log = logging.getLogger(__name__)
T = TypeVar("T")

ROOT_INODE = 1
# A directory whose latest listing had at most this many entries (one page) is
# listed again, not asked about name by name, once that listing expired.
RELIST_MAX = 1000


@dataclass(eq=False, slots=True)
class Inode:
    ino: int
    parent: int
    name: str
    attr: Attr
    expires: float = 0.0  # trio clock deadline of ``attr``'s validity
    lookups: int = 0
    opens: int = 0
    has_marker: bool = False  # directories: a ``key/`` object exists
    local: bool = False  # new or dirty: authoritative, not on the server (yet)
    symlink_target: str | None = None
    last_open_etag: str = ""  # ETag whose bytes the kernel page cache holds

    def is_dir(self) -> bool:
        return self.attr.is_dir()


class ChildIndex:
    """The live names of every directory: which inode ``name`` in directory
    ``parent`` is bound to, kept per directory, so that what one directory holds
    is read without going over every name the mount knows (a walk of a tree of N
    names would cost N squared: each readdir looks for its unsent files).

    Invariant: a directory with no bound name has no entry of its own."""

    def __init__(self) -> None:
        self._dirs: dict[int, dict[str, int]] = {}

    def get(self, parent: int, name: str) -> int | None:
        names_ = self._dirs.get(parent)
        return names_.get(name) if names_ is not None else None

    def bind(self, parent: int, name: str, ino: int) -> None:
        self._dirs.setdefault(parent, {})[name] = ino

    def unbind(self, parent: int, name: str) -> int | None:
        """Remove ``name`` from ``parent``; the inode it was bound to, if any."""
        names_ = self._dirs.get(parent)
        if names_ is None:
            return None
        ino = names_.pop(name, None)
        if not names_:
            del self._dirs[parent]
        return ino

    def of(self, parent: int) -> dict[str, int]:
        """A copy of ``parent``'s bindings, name -> inode (safe to hold across
        awaits while the namespace changes)."""
        return dict(self._dirs.get(parent, ()))


@dataclass(slots=True)
class DirEntry:
    """One name of a listing. ``info`` is None for a directory."""

    name: str
    is_dir: bool
    info: ObjectInfo | None = None


@dataclass
class Listing:
    """A whole directory listing, kept for ``ttl`` to answer lookups and readdir."""

    entries: dict[str, DirEntry] = field(default_factory=dict)


def chunked(items: list[T], parallel: int, most: int) -> list[list[T]]:
    """``items`` in order, cut into chunks whose HEADs go one after the other from
    one worker-thread call: no larger than ``most``, and no larger than needed to
    keep ``parallel`` chunks busy in each of the fewest rounds that can send them
    all (a chunk of N costs N round trips of latency against a distant endpoint:
    a last round of a few full chunks would leave the other slots idle)."""
    rounds = max(1, -(-len(items) // (parallel * most)))
    size = max(1, -(-len(items) // (parallel * rounds)))
    return [items[at:at + size] for at in range(0, len(items), size)]


@dataclass
class MetaTuning:
    ttl: float = 10.0  # seconds attributes and listings stay valid (0: no caching)
    negative_ttl: float = 10.0
    max_cached: int = 100_000  # entries in the attribute and listing caches
    head_parallel: int = 64  # copies in flight while renaming a directory
    fill_parallel: int = 24  # background HEADs (LISTs) completing a listing's entries
    #                          (the mount gives them 3/4 of max_requests)
    fill_chunk: int = 8  # most files whose HEADs one worker-thread call sends in turn
    fill_window: int = 32  # siblings the first completion in a directory fetches ahead;
    fill_window_max: int = 1024  # doubled by each later one, up to this
    probe_keys: int = 200  # keys a directory's completion LIST asks for (kept as its
    #                        listing when that is all of it)
    walk_window: int = 2  # sibling directories a walk's first readdir readies ahead;
    walk_window_max: int = 32  # doubled by each later one, up to this
    meta_delay: float = 1.0  # seconds a closed file's chmod/chown/utime may wait for
    #                          company (0: stored at once)
    list_after: float = 0.01  # a new name's HEAD unanswered this long: the LIST that
    #                           tells a directory goes too, not after its 404 (a
    #                           local server answers well within it: no extra LIST)


@dataclass
class _FillPlan:
    """The partial entries of one listing, per kind, in listing order: what a
    completion fetches ahead (``ls -l`` stats files in this order)."""

    order: dict[bool, list[int]]  # is_dir -> inode numbers
    pos: dict[int, int]  # inode number -> index in its kind's list
    window: int
    # is_dir -> (end, then): ``order[is_dir][:end]`` have been fetched ahead or
    # asked for; the next window goes when a completion reaches index ``then``.
    sent: dict[bool, tuple[int, int]] = field(default_factory=dict)


@dataclass
class _LookupPlan:
    """The files of one listing in listing order, and how far the HEADs sent
    ahead of lookups by name reach (see ``Namespace._lookup_ahead``)."""

    listing: Listing
    order: list[str]  # names
    pos: dict[str, int]  # name -> index in ``order``
    window: int
    readied: int = 0  # ``order[:readied]`` have been sent ahead or looked up


@dataclass(eq=False)
class _ListingFetch:
    """A LIST of one directory under way, whose answer may become its listing: the
    changes this mount made to the directory meanwhile, to apply to the answer (the
    server may have served it before or after each of them)."""

    changes: dict[str, DirEntry | None] = field(default_factory=dict)
    void: bool = False  # the directory moved or went: the answer is not to be kept


@dataclass
class _WalkPlan:
    """The subdirectories of one listed directory, in listing order, and how far a
    walk through them (``find``, ``du``, ``rsync``) has been readied ahead."""

    order: list[int]  # inode numbers
    pos: dict[int, int]  # inode number -> index in ``order``
    readied: int = 0  # ``order[:readied]`` have been readied or read
    window: int = 0


class Namespace:
    """Inode table and namespace operations for one mount. See the module docstring."""

    def __init__(self, aclient: AsyncClient, root_key: str, defaults: Defaults,
                 tuning: MetaTuning | None = None,
                 guess_type: Callable[[str], str] | None = None) -> None:
        self.aclient = aclient
        self.root_key = root_key
        self.defaults = defaults
        self.tuning = tuning or MetaTuning()
        # The Content-Type of a key, from its name: of new files, and of renamed
        # ones whose type came from their old name (meta.retyped).
        self.guess_type = guess_type or (lambda key: meta.DEFAULT_CONTENT_TYPE)
        now_ns = time.time_ns()
        root_attr = meta.implicit_dir_attr(defaults, now_ns)
        self.inodes: dict[int, Inode] = {
            ROOT_INODE: Inode(ROOT_INODE, ROOT_INODE, "", root_attr, expires=float("inf"),
                              lookups=1)
        }
        self.children = ChildIndex()
        self._next_ino = ROOT_INODE + 1
        ttl = max(self.tuning.ttl, 1e-9)
        # (parent ino, name) of names known not to exist.
        self.negative: cachetools.TTLCache = cachetools.TTLCache(
            self.tuning.max_cached, max(self.tuning.negative_ttl, 1e-9), timer=trio.current_time
        ) if self._cache_on else cachetools.TTLCache(1, 1e-9)
        # dir ino -> Listing
        self.listings: cachetools.TTLCache = cachetools.TTLCache(
            max(1, self.tuning.max_cached // 100), ttl)
        # dir ino -> entries of its latest listing, kept past the listing's expiry:
        # a small directory is listed again rather than asked about name by name.
        self._listed_size: cachetools.LRUCache = cachetools.LRUCache(
            max(1, self.tuning.max_cached // 100))
        self._relisting: dict[int, trio.Event] = {}
        self._fetches: dict[int, set[_ListingFetch]] = {}  # dir ino -> LISTs under way
        # key -> (etag, Attr): attributes of unchanged objects never need a second HEAD.
        self.object_attrs: cachetools.LRUCache = cachetools.LRUCache(self.tuning.max_cached)
        self.rename_lock = trio.Lock()
        # Completion of partial attributes (see ``complete``): the inodes whose HEAD
        # (or LIST) is under way, and per directory what to fetch ahead.
        self._filling: dict[int, trio.Event] = {}
        self._plans: cachetools.LRUCache = cachetools.LRUCache(1024)
        self._fill_limit = trio.CapacityLimiter(self.tuning.fill_parallel)
        self._fill_tasks = TaskSet("attrs")
        self._probe_tasks = TaskSet("lookups")  # a new name's HEAD and LIST
        # Readdir-ahead of a walk (see ``_walk_ahead``): per listed directory its
        # subdirectories, and the directories being readied in the background.
        self._walks: cachetools.LRUCache = cachetools.LRUCache(1024)
        self._readying: dict[int, trio.Event] = {}
        # Lookup-ahead (see ``_lookup_ahead``): lookups of names in directories never
        # listed, per directory; per listed one and kind (is_dir) what goes ahead;
        # the keys being HEADed.
        self._unlisted_lookups: cachetools.LRUCache = cachetools.LRUCache(1024)
        self._lookup_plans: cachetools.LRUCache = cachetools.LRUCache(1024)
        self._heading: dict[str, trio.Event] = {}
        # Metadata changes waiting for their copy (see ``defer_attr``); the mount
        # gives it the cache's journal, so that they survive a crash.
        self.deferred = DeferredMetadata(aclient, self.tuning.meta_delay,
                                         self._metadata_stored, self._metadata_obsolete)
        # Old keys of renamed files until their DELETE ends, journaled the same way.
        self.old_keys = OldKeys(aclient)
        # Renames of more than one copy request, finished by the next mount when a
        # crash cuts one short.
        self.moves = Moves(aclient, self.old_keys, defaults, self.tuning.head_parallel)

    @property
    def _cache_on(self) -> bool:
        return self.tuning.ttl > 0

    # -- inode table -----------------------------------------------------------

    def get(self, ino: int) -> Inode:
        try:
            return self.inodes[ino]
        except KeyError:
            raise OSError(errno.ESTALE, "stale inode") from None

    def key_of(self, inode: Inode) -> str:
        parts: list[str] = []
        while inode.ino != ROOT_INODE:
            parts.append(inode.name)
            inode = self.inodes[inode.parent]
        rel = "/".join(reversed(parts))
        if not self.root_key:
            return rel
        return f"{self.root_key}/{rel}" if rel else self.root_key

    def path_of(self, inode: Inode) -> str:
        """For log lines: the path inside the mount."""
        parts: list[str] = []
        while inode.ino != ROOT_INODE:
            parts.append(inode.name)
            inode = self.inodes[inode.parent]
        return "/" + "/".join(reversed(parts))

    def _expiry(self) -> float:
        return trio.current_time() + self.tuning.ttl if self._cache_on else 0.0

    def _attach(self, parent: Inode, name: str, attr: Attr, *, has_marker: bool = False,
                local: bool = False) -> Inode:
        """Bind ``name`` in ``parent`` to an inode with ``attr``, reusing the inode
        already bound there when it is of the same type."""
        self._exists(parent.ino, name)
        inode = self.child(parent.ino, name)
        if inode is not None and inode.attr.kind == attr.kind:
            if not self._authoritative(inode):
                inode.attr = attr
                inode.has_marker = has_marker
            inode.local = inode.local or local
        else:
            if inode is not None:
                self._detach(parent.ino, name)
            inode = Inode(self._next_ino, parent.ino, name, attr, has_marker=has_marker,
                          local=local)
            self._next_ino += 1
            self.inodes[inode.ino] = inode
            self.children.bind(parent.ino, name, inode.ino)
        inode.expires = self._expiry()
        return inode

    def _exists(self, parent_ino: int, name: str) -> None:
        """Forget that ``name`` was missing from ``parent_ino``."""
        # Asked first: a name bound from a listing rarely has a negative entry,
        # and TTLCache.pop of an absent key costs five times a lookup (readdir of
        # a large listing binds every name).
        if (parent_ino, name) in self.negative:
            with contextlib.suppress(KeyError):  # expired since: removed all the same
                del self.negative[(parent_ino, name)]

    def _authoritative(self, inode: Inode) -> bool:
        """What we hold for ``inode`` is newer than the server's (unsent data, or
        metadata waiting in ``deferred``): never replaced by what the server says."""
        return inode.local or inode.ino in self.deferred

    def _detach(self, parent_ino: int, name: str) -> None:
        ino = self.children.unbind(parent_ino, name)
        if ino is not None:
            self._maybe_drop(ino)

    def child(self, parent_ino: int, name: str) -> Inode | None:
        """The inode bound to ``name`` in ``parent_ino`` now, if any (no request)."""
        ino = self.children.get(parent_ino, name)
        return self.inodes.get(ino) if ino is not None else None

    def below(self, top: Inode) -> list[Inode]:
        """``top`` and every inode bound at any depth below it (no request)."""
        found, todo = [], [top]
        while todo:
            inode = todo.pop()
            found.append(inode)
            if inode.is_dir():
                todo.extend(self.inodes[c] for c in self.children.of(inode.ino).values())
        return found

    def linked(self, inode: Inode) -> bool:
        """Whether ``inode`` still has its name (not unlinked, renamed over or
        forgotten)."""
        return inode.ino == ROOT_INODE or \
            self.children.get(inode.parent, inode.name) == inode.ino

    def _maybe_drop(self, ino: int) -> None:
        inode = self.inodes.get(ino)
        if inode is None or ino == ROOT_INODE:
            return
        if inode.lookups <= 0 and inode.opens <= 0 and not self.linked(inode):
            del self.inodes[ino]

    def forget(self, ino: int, count: int) -> None:
        inode = self.inodes.get(ino)
        if inode is None or ino == ROOT_INODE:
            return
        inode.lookups -= count
        if inode.lookups <= 0 and inode.opens <= 0 and not inode.local:
            # Forgotten by the kernel (which forgets children before their parent):
            # the next lookup of the name builds a fresh inode.
            if self.linked(inode):
                self.children.unbind(inode.parent, inode.name)
            self._maybe_drop(ino)

    def _keep_listing(self, ino: int, listing: Listing) -> None:
        self.listings[ino] = listing
        self._listed_size[ino] = len(listing.entries)

    @contextlib.contextmanager
    def _listing_fetch(self, ino: int) -> Iterator[_ListingFetch]:
        """Around a LIST of directory ``ino`` whose answer may be kept: records our
        changes to the directory while it is under way (see ``_fetched``)."""
        fetch = _ListingFetch()
        self._fetches.setdefault(ino, set()).add(fetch)
        try:
            yield fetch
        finally:
            running = self._fetches[ino]
            running.discard(fetch)
            if not running:
                del self._fetches[ino]

    def _fetched(self, ino: int, listing: Listing, fetch: _ListingFetch) -> bool:
        """Bring ``listing``, the answer of ``fetch``, up to date with the changes
        made while it was under way, and keep it as the listing of ``ino``
        (False: it is not to be kept)."""
        if fetch.void or not self._cache_on:
            return False
        for name, entry in fetch.changes.items():
            if entry is None:
                listing.entries.pop(name, None)
            else:
                listing.entries[name] = entry
        self._keep_listing(ino, listing)
        return True

    def _forget_listing(self, ino: int | None) -> None:
        """Drop the listing of directory ``ino`` (None: of every directory), and
        the answers of LISTs of it under way."""
        if ino is None:
            self.listings.clear()
            fetches: Iterable[set[_ListingFetch]] = self._fetches.values()
        else:
            self.listings.pop(ino, None)
            fetches = [self._fetches.get(ino, set())]
        for running in fetches:
            for fetch in running:
                fetch.void = True

    def _note_change(self, parent: Inode, name: str, entry: DirEntry | None) -> None:
        """Keep a cached listing of ``parent`` true after our own change, and the
        answers of LISTs of it under way."""
        for fetch in self._fetches.get(parent.ino, ()):
            fetch.changes[name] = entry
        listing = self.listings.get(parent.ino)
        if listing is None:
            return
        if entry is None:
            listing.entries.pop(name, None)
        else:
            listing.entries[name] = entry
        self._listed_size[parent.ino] = len(listing.entries)
        now_ns = time.time_ns()
        parent.attr.mtime_ns = parent.attr.ctime_ns = now_ns

    def _file_entry(self, inode: Inode, name: str) -> DirEntry | None:
        """The listing entry a file of ours has now (None before its first upload:
        listings show such files from the inode table)."""
        a = inode.attr
        if not a.etag:
            return None
        info = ObjectInfo(key=self.key_of(inode), size=a.size, etag=a.etag,
                          last_modified=float(a.last_modified), appendable=a.appendable,
                          storage_class=a.storage_class, from_listing=True)
        return DirEntry(name, False, info)

    # -- resolving names ---------------------------------------------------------

    async def lookup(self, parent_ino: int, name: str, *, complete: bool = True) -> Inode:
        """The inode of ``name`` in directory ``parent_ino``; ENOENT if none.

        Its attributes are full (never ``partial``) unless ``complete`` is False,
        for callers that need only the name's type and object (unlink, rmdir).
        A name missing from a fresh complete listing of the directory costs no
        request: our own changes keep listings true, other clients' show after
        the TTL."""
        parent = self.get(parent_ino)
        if not parent.is_dir():
            raise OSError(errno.ENOTDIR, "not a directory")
        inode = self.child(parent_ino, name)
        if inode is None and parent_ino not in self.listings \
                and (parent_ino, name) not in self.negative:
            await self._relist_small(parent)
            inode = self.child(parent_ino, name)  # created meanwhile?
        if inode is not None and (self._authoritative(inode)
                                  or inode.expires > trio.current_time()):
            return await self.complete(inode) if complete else inode
        if (parent_ino, name) in self.negative:
            raise OSError(errno.ENOENT, "no such file or directory")
        listing = self.listings.get(parent_ino)
        if listing is not None and inode is None and name not in listing.entries:
            raise OSError(errno.ENOENT, "no such file or directory")
        if inode is not None and not inode.is_dir():
            return await self._revalidate_file(parent, inode)
        if listing is not None and inode is None:
            cached = await self._lookup_listed(parent, listing, name)
            if cached is not None:
                return cached
        return await self._lookup_remote(parent, name)

    async def _relist_small(self, parent: Inode) -> None:
        """List ``parent`` again if its last listing had at most one page of
        entries (else lookups ask about each name alone).

        A lookup of a new name costs a HEAD and a LIST once the directory's listing
        has expired; a long copy into one directory would pay both for every file.
        Listing a small directory again answers all of them for another TTL.
        A directory never listed is listed at the second name looked up in it
        (its first page: kept when that is all of it), so a run of lookups, as
        rsync's ``lstat`` of every file it may send, is answered from the listing
        and the HEADs it sends ahead (see ``_lookup_ahead``).
        Concurrent lookups in the directory share one LIST."""
        if not self._cache_on:
            return
        size = self._listed_size.get(parent.ino)
        if size is None:
            seen = self._unlisted_lookups.get(parent.ino, 0) + 1
            self._unlisted_lookups[parent.ino] = seen
            if seen < 2:
                return
        elif size > RELIST_MAX:
            return
        running = self._relisting.get(parent.ino)
        if running is not None:
            await running.wait()
            return
        done = self._relisting[parent.ino] = trio.Event()
        try:
            if size is None:
                page = await self._probe(parent, RELIST_MAX)
                if page.is_truncated:
                    self._listed_size[parent.ino] = RELIST_MAX + 1  # ask no more
            else:
                await self._fetch_listing(parent)
        finally:
            del self._relisting[parent.ino]
            done.set()

    async def _lookup_remote(self, parent: Inode, name: str) -> Inode:
        """Resolve ``name`` on the server and bind (or unbind) it."""
        key = names.child_key(self.key_of(parent), name)
        was = self.child(parent.ino, name)
        found = await self._resolve(key, was_dir=was is not None and was.is_dir())
        # The table may have changed while we waited: re-read before binding.
        current = self.child(parent.ino, name)
        if current is not None and current.local:
            return current
        if found is None:
            self._detach(parent.ino, name)
            if self._cache_on:
                self.negative[(parent.ino, name)] = True
            raise OSError(errno.ENOENT, "no such file or directory")
        attr, has_marker = found
        return self._attach(parent, name, attr, has_marker=has_marker)

    async def _resolve(self, key: str, *, was_dir: bool = False) -> tuple[Attr, bool] | None:
        """Ask COS what ``key`` is. Returns (attributes, has_marker) or None when
        nothing is there.

        A name never seen before is HEADed; when no answer came within
        ``list_after`` (a slow link: real COS, not a local server), the LIST of
        ``key/`` that tells a directory goes too, rather than after the 404, so a
        directory or a missing name costs about one round trip, not two (as in
        mountpoint-s3, which always sends both; a quick HEAD spares the LIST). An
        object wins over a directory of the same name, and answers at its HEAD:
        a LIST still under way is left to land. ``was_dir`` (the name was a
        directory last time) asks the LIST first and the HEAD only if it shows
        nothing, so a directory that shadows an object stays a directory; only a
        name never seen before may show the shadowed object (see
        docs/SEMANTICS.md).
        """
        names.check_key(key)
        if was_dir:
            found = await self._resolve_dir(key)
            return found if found is not None else await self._resolve_file(key)
        as_file = Started(self._probe_tasks, self._resolve_file, key)
        with trio.move_on_after(self.tuning.list_after):
            await as_file.wait()
        as_dir = None if as_file.done else Started(self._probe_tasks, self._resolve_dir, key)
        found = await as_file.outcome()
        if found is not None:
            return found
        return await (as_dir.outcome() if as_dir is not None else self._resolve_dir(key))

    async def _resolve_file(self, key: str) -> tuple[Attr, bool] | None:
        """(attributes, False) of the object ``key``, None if there is none."""
        try:
            info = await self.aclient.head_object(key)
        except CosError as exc:
            if exc.status != 404:
                raise
            return None
        return self._file_attr(info), False

    async def _resolve_dir(self, key: str) -> tuple[Attr, bool] | None:
        """(attributes, has_marker) of the directory ``key``, None if none is there."""
        page = await self.aclient.list_objects(prefix=key + "/", max_keys=1)
        if not page.contents and not page.common_prefixes:
            return None
        if page.contents and page.contents[0].key == key + "/":
            return await self._marker_attr(key, page.contents[0]), True
        return meta.implicit_dir_attr(self.defaults, time.time_ns()), False

    async def _marker_attr(self, key: str, marker: ObjectInfo) -> Attr:
        """Attributes of directory ``key`` whose marker a listing showed: its
        metadata needs a HEAD, unless metadata is not read at all."""
        if not self.defaults.use_metadata:
            return meta.attr_from_object(marker, self.defaults, is_dir=True)
        return await self._dir_attr(key)

    async def _dir_attr(self, key: str) -> Attr:
        """Attributes of a directory with a marker (its metadata, from a HEAD)."""
        try:
            info = await self.aclient.head_object(key + "/")
        except CosError as exc:
            if exc.status != 404:
                raise
            return meta.implicit_dir_attr(self.defaults, time.time_ns())
        return meta.attr_from_object(info, self.defaults, is_dir=True)

    def _file_attr(self, info: ObjectInfo) -> Attr:
        attr = meta.attr_from_object(info, self.defaults)
        if not info.from_listing:
            self.object_attrs[info.key] = (info.etag, attr)
        return attr

    def _known_attr(self, info: ObjectInfo) -> Attr | None:
        """The attributes a HEAD gave of the object a listing describes by
        ``info``, when the attribute cache holds them for that same object."""
        cached = self.object_attrs.get(info.key)
        return cached[1] if cached is not None and meta.same_object(cached[1], info) \
            else None

    async def getattr(self, ino: int) -> Inode:
        """The inode with attributes no older than the TTL (revalidating files),
        never partial."""
        inode = self.get(ino)
        if inode.attr.partial:
            return await self.complete(inode)
        self._fetch_ahead(inode)  # fetched ahead already: the window moves on from here
        if (self._authoritative(inode) or inode.is_dir()
                or inode.expires > trio.current_time()):
            return inode
        parent = self._bound_parent(inode)
        if parent is None:
            return inode
        try:
            return await self._revalidate_file(parent, inode)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return inode  # deleted by someone else: the open inode stays usable
            raise

    # -- completing attributes a listing left partial ---------------------------------

    async def complete(self, inode: Inode) -> Inode:
        """``inode`` with full attributes (mode, uid, gid, mtime, xattrs from its
        metadata). A partial one, which only a listing has described, gets its
        HEAD now (a directory the LIST that says whether it has a marker); and the
        partial siblings of the same kind that follow it in the listing are fetched
        in the background, a window that doubles each time the completions in the
        directory reach the middle of the one before (``_fetch_ahead``). So ``ls
        -l`` of N objects costs one LIST and N HEADs in parallel, and ``find``,
        which needs no file's attributes, LISTs only.

        Concurrency: one request per inode at a time; a caller finding its inode
        under way waits for that request, and asks itself if it failed. Returns the
        inode now bound to the name (another one if the type changed)."""
        self._fetch_ahead(inode)  # also when this one was fetched ahead already
        while inode.attr.partial:
            running = self._filling.get(inode.ino)
            if running is not None:
                await running.wait()
                continue
            done = self._filling[inode.ino] = trio.Event()
            try:
                return await self._fill(inode, foreground=True)
            finally:
                if self._filling.get(inode.ino) is done:
                    del self._filling[inode.ino]
                done.set()
        return inode

    def _fetch_ahead(self, inode: Inode) -> None:
        """Complete in the background the partial entries of ``inode``'s kind that
        follow it in its listing (see :meth:`complete`), a window at a time: the
        next one goes once a completion reaches past the middle of what was sent,
        so against a distant endpoint it is on its way before ``ls -l`` gets
        there."""
        plan: _FillPlan | None = self._plans.get(inode.parent)
        pos = plan.pos.get(inode.ino) if plan is not None else None
        if plan is None or pos is None:
            return
        kind = inode.is_dir()
        end, then = plan.sent.get(kind, (0, 0))
        if pos < then:
            return  # in the first half of what was sent ahead
        order = plan.order[kind]
        start = at = max(pos + 1, end)
        batch: list[Inode] = []
        while at < len(order) and len(batch) < plan.window:
            node = self.inodes.get(order[at])
            at += 1
            if node is not None and node.attr.partial and node.ino not in self._filling:
                batch.append(node)
        plan.sent[kind] = (at, start + (at - start) // 2)
        if not batch:
            return
        plan.window = min(plan.window * 2, self.tuning.fill_window_max)
        for node in batch:
            self._filling[node.ino] = trio.Event()
        self._fill_tasks.spawn(self._fill_batch, batch)

    async def _fill_batch(self, batch: list[Inode]) -> None:
        """Background: complete ``batch`` (each already marked in ``_filling``),
        in order, at most ``fill_parallel`` requests at once. Files go in chunks
        (``chunked``), each chunk's HEADs one worker-thread call (a trip to a
        thread and back costs more of the mount's CPU than the HEAD itself). A
        failure leaves the inode partial; whoever needs it asks again and sees the
        error."""
        files = [node for node in batch if not node.is_dir()]
        async with trio.open_nursery() as nursery:
            for node in batch:
                if node.is_dir():
                    nursery.start_soon(self._fill_some, [node], self._fill_dirs)
            for chunk in chunked(files, self.tuning.fill_parallel, self.tuning.fill_chunk):
                nursery.start_soon(self._fill_some, chunk, self._fill_files)

    async def _fill_some(self, nodes: list[Inode],
                         fill: Callable[[list[Inode]], Awaitable[None]]) -> None:
        events = [self._filling[node.ino] for node in nodes]
        try:
            async with self._fill_limit:
                todo = [node for node in nodes if node.attr.partial]
                if todo:
                    await fill(todo)
        except (CosError, OSError) as exc:
            log.debug("completing %s: %s", self.path_of(nodes[0]), exc)
        finally:
            for node, event in zip(nodes, events, strict=True):
                if self._filling.get(node.ino) is event:
                    del self._filling[node.ino]
                event.set()

    async def _fill_dirs(self, nodes: list[Inode]) -> None:
        for node in nodes:
            await self._fill(node, foreground=False)

    async def _fill_files(self, nodes: list[Inode]) -> None:
        bound = [self._bound_parent(node) for node in nodes]
        found = await self.aclient.head_objects([self.key_of(node) for node in nodes])
        for node, parent, got in zip(nodes, bound, found, strict=True):
            if isinstance(got, CosError):
                if got.status != 404:
                    log.debug("completing %s: %s", self.path_of(node), got)
                continue  # gone: the foreground resolves the name when asked
            await self._filled(node, parent, self._file_attr(got), False, foreground=False)

    def _bound_parent(self, inode: Inode) -> Inode | None:
        """The parent ``inode`` is bound under, or None (unlinked, or moved away)."""
        parent = self.inodes.get(inode.parent)
        return parent if parent is not None and self.linked(inode) else None

    async def _fill(self, inode: Inode, *, foreground: bool) -> Inode:
        """One request (two for a directory with a marker) for ``inode``'s full
        attributes. Gone from the server: the foreground resolves the name again
        (ENOENT, or what took it); the background leaves it to the foreground."""
        parent = self._bound_parent(inode)
        key = self.key_of(inode)
        has_marker = False
        attr: Attr | None = None
        if inode.is_dir():
            page = await self._probe(inode)
            if page.contents or page.common_prefixes:
                has_marker = bool(page.contents) and page.contents[0].key == key + "/"
                attr = await self._marker_attr(key, page.contents[0]) if has_marker \
                    else meta.implicit_dir_attr(self.defaults, time.time_ns())
        else:
            try:
                attr = self._file_attr(await self.aclient.head_object(key))
            except CosError as exc:
                if exc.status != 404:
                    raise
        return await self._filled(inode, parent, attr, has_marker, foreground=foreground)

    async def _filled(self, inode: Inode, parent: Inode | None, attr: Attr | None,
                      has_marker: bool, *, foreground: bool) -> Inode:
        """Take what a completion found (``attr`` None: nothing on the server);
        ``parent``: where ``inode`` was bound when its request went out."""
        if not inode.attr.partial:
            return inode  # completed meanwhile
        if attr is None:
            if foreground and parent is not None:
                return await self._lookup_remote(parent, inode.name)
            if foreground:
                inode.attr.partial = False  # unlinked and gone: what we know is all
            return inode
        if parent is not None:
            return self._attach(parent, inode.name, attr, has_marker=has_marker)
        inode.attr, inode.has_marker = attr, has_marker
        return inode

    async def _revalidate_file(self, parent: Inode, inode: Inode) -> Inode:
        """Refresh a file's attributes: one HEAD says all about a file that is still
        a file; only when it is gone do we ask whether a directory took its name."""
        try:
            info = await self.aclient.head_object(self.key_of(inode))
        except CosError as exc:
            if exc.status != 404:
                raise
            return await self._lookup_remote(parent, inode.name)
        if not meta.same_object(inode.attr, info):
            inode.symlink_target = None
        return self._attach(parent, inode.name, self._file_attr(info))

    # -- listing -------------------------------------------------------------------

    async def list_dir(self, ino: int) -> list[tuple[str, Inode]]:
        """Every name in directory ``ino`` with its inode.

        The listing is paged with prefix/delimiter and is all this costs: entries
        that neither a live inode nor the attribute cache describe get ``partial``
        attributes from the listing (size, Last-Modified, ETag; the mount's default
        mode and owner), completed by :meth:`complete` when asked for.
        The caller must account one lookup per returned inode it hands the kernel.
        """
        parent = self.get(ino)
        if not parent.is_dir():
            raise OSError(errno.ENOTDIR, "not a directory")
        walking = self._walk_ahead(parent)
        readying = self._readying.get(ino)
        if readying is not None:
            await readying.wait()  # its listing and HEADs are on their way
        listing = self.listings.get(ino)
        if listing is None:
            listing = await self._fetch_listing(parent)
        await self._heads_sent_ahead(listing)
        entries = sorted(listing.entries.values(), key=lambda e: names.listing_order(e.name))
        bound: dict[str, Inode] = {}
        todo: list[DirEntry] = []
        for e in entries:
            inode = self._bind_entry(parent, e)
            if inode is None:
                todo.append(e)
            else:
                bound[e.name] = inode
        if todo:
            await self._head_entries(parent, todo, bound)
        result = [(e.name, self.rebind(parent, e.name, bound[e.name]))
                  for e in entries if e.name in bound]  # absent: deleted since the listing
        partial = [inode for _, inode in result if inode.attr.partial]
        if partial:
            order: dict[bool, list[int]] = {False: [], True: []}
            pos: dict[int, int] = {}
            for inode in partial:
                kind = order[inode.is_dir()]
                pos[inode.ino] = len(kind)
                kind.append(inode.ino)
            self._plans[ino] = _FillPlan(order, pos, self.tuning.fill_window)
        subdirs = [inode.ino for _, inode in result if inode.is_dir()]
        if subdirs and self._cache_on:
            plan = self._walks[ino] = _WalkPlan(subdirs,
                                                {d: i for i, d in enumerate(subdirs)})
            if walking:  # a walk goes down into the first of them next
                self._ready_ahead(plan, 0, self.tuning.walk_window)
        # New files not yet uploaded are part of the directory too.
        listed = {n for n, _ in result}
        for name, cino in self.children.of(ino).items():
            if name not in listed and self.inodes[cino].local:
                result.append((name, self.inodes[cino]))
        return result

    async def _heads_sent_ahead(self, listing: Listing) -> None:
        """Wait for the HEADs the lookup-ahead sent (``_heading``) of objects
        ``listing`` describes: binding them then takes their answers from the
        attribute cache instead of asking the server a second time."""
        if not self._heading:
            return
        for e in list(listing.entries.values()):
            if e.info is not None:
                await self._head_sent_ahead(e.info.key)

    async def _head_sent_ahead(self, key: str) -> None:
        """Wait for the HEAD of ``key`` sent ahead, if one is under way: its answer
        is then in ``object_attrs`` (unless it failed)."""
        running = self._heading.get(key)
        if running is not None:
            await running.wait()

    async def _fetch_listing(self, parent: Inode) -> Listing:
        prefix = names.dir_prefix(self.key_of(parent))
        listing = Listing()
        with self._listing_fetch(parent.ino) as fetch:
            async for page in self.aclient.list_pages(prefix, delimiter="/"):
                self._add_page(listing, prefix, page)
        self._fetched(parent.ino, listing, fetch)
        return listing

    async def _probe(self, inode: Inode, max_keys: int | None = None) -> ListPage:
        """The LIST of the first ``max_keys`` (``probe_keys``) keys of directory
        ``inode``: when that is all of it, kept as its listing (unless a newer one
        is kept), so the readdir that usually follows a directory's completion, or
        the lookups that follow the second one in it, need no request."""
        prefix = names.dir_prefix(self.key_of(inode))
        with self._listing_fetch(inode.ino) as fetch:
            page = await self.aclient.list_objects(
                prefix=prefix, delimiter="/", max_keys=max_keys or self.tuning.probe_keys)
        if not page.is_truncated and (page.contents or page.common_prefixes) \
                and self.listings.get(inode.ino) is None:
            listing = Listing()
            self._add_page(listing, prefix, page)
            self._fetched(inode.ino, listing, fetch)
        return page

    @staticmethod
    def _add_page(listing: Listing, prefix: str, page: ListPage) -> None:
        for p in page.common_prefixes:
            name = p[len(prefix):].rstrip("/")
            if names.is_listable(name):
                listing.entries[name] = DirEntry(name, True)
        for info in page.contents:
            name = info.key[len(prefix):]
            if info.key == prefix or not names.is_listable(name) or "/" in name:
                continue
            if name not in listing.entries:  # a directory of that name wins
                listing.entries[name] = DirEntry(name, False, info)

    # -- readdir-ahead of a walk ------------------------------------------------------

    def _walk_ahead(self, inode: Inode) -> bool:
        """``inode`` is about to be read by readdir: when it is a subdirectory of a
        directory read before, this is a walk (``find``, ``du``, ``rsync``, ``tar``
        read every subdirectory in listing order, depth first), so ready the
        siblings that follow it in the background: each one's listing, and the
        HEADs its ``readdir`` would wait for (objects that may be symlinks). A
        window that starts at ``walk_window`` and doubles with each readdir in the
        directory; ``list_dir`` readies the first subdirectories of ``inode`` too,
        where the walk goes next. Against a distant endpoint a walk then seldom
        waits for a directory; ``ls -l``, which reads no subdirectory, costs
        nothing more. Returns whether this is a walk."""
        plan: _WalkPlan | None = self._walks.get(inode.parent)
        pos = plan.pos.get(inode.ino) if plan is not None else None
        if plan is None or pos is None or inode.ino == ROOT_INODE:
            return False
        plan.window = min(plan.window * 2, self.tuning.walk_window_max) if plan.window \
            else self.tuning.walk_window
        self._ready_ahead(plan, pos + 1, plan.window)
        return True

    def _ready_ahead(self, plan: _WalkPlan, start: int, count: int) -> None:
        """Ready ``count`` directories of ``plan`` from index ``start`` on in the
        background, but none twice."""
        first = max(start, plan.readied)
        plan.readied = max(plan.readied, start + count)
        for ino in plan.order[first:plan.readied]:
            self._ready_soon(self.inodes.get(ino))

    def _ready_soon(self, node: Inode | None, every_file: bool = False,
                    deeper: bool = False) -> None:
        """Ready directory ``node`` in the background (``_ready_dir``), unless that
        is under way already."""
        if node is None or not node.is_dir() or node.ino in self._readying:
            return
        self._readying[node.ino] = trio.Event()
        self._fill_tasks.spawn(self._ready_dir, node, every_file, deeper)

    async def _ready_dir(self, inode: Inode, every_file: bool = False,
                         deeper: bool = False) -> None:
        """Background: what ``list_dir(inode)`` will need, so it sends nothing: its
        listing (the LIST of its first ``probe_keys`` keys, which also completes
        its attributes, when that is all of it) and the attributes of the
        objects it must HEAD (kept in ``object_attrs``, checked against the
        listing when used); with ``every_file``, of all its files, for the
        lookups of each of them, and with ``deeper`` its first subdirectories
        so too (see ``_lookup_ahead``). A failure is left to the readdir or
        lookup, which asks again."""
        done = self._readying[inode.ino]
        try:
            if inode.attr.partial:
                # Its LIST of the first keys, kept as the listing when that is all.
                await self.complete(inode)
            elif self.listings.get(inode.ino) is None:
                async with self._fill_limit:
                    await self._probe(inode)
            listing = self.listings.get(inode.ino)
            if listing is None:
                return  # more than one page, or gone: left to the readdir
            # list_dir waits for these (_heads_sent_ahead).
            self._send_heads_ahead([e.info.key for e in listing.entries.values()
                                    if e.info is not None
                                    and self._needs_head(inode, e, every_file)])
            if deeper:
                subdirs = sorted((e for e in listing.entries.values() if e.info is None),
                                 key=lambda e: names.listing_order(e.name))
                self._ready_listed_dirs(inode, subdirs[:self.tuning.walk_window],
                                        deeper=False)
        except (CosError, OSError) as exc:
            log.debug("reading ahead %s: %s", self.path_of(inode), exc)
        finally:
            if self._readying.get(inode.ino) is done:
                del self._readying[inode.ino]
            done.set()

    def _send_heads_ahead(self, keys: list[str]) -> None:
        """HEAD ``keys`` into ``object_attrs`` in the background, in chunks
        (``chunked``). Each key is claimed in ``_heading`` at once, before its
        task runs, so a lookup of it from now on waits for that answer rather
        than sending a HEAD of its own."""
        keys = [k for k in keys if k not in self._heading]
        for chunk in chunked(keys, self.tuning.fill_parallel, self.tuning.fill_chunk):
            events = {k: trio.Event() for k in chunk}
            self._heading.update(events)
            self._fill_tasks.spawn(self._head_into_cache, events)

    async def _head_into_cache(self, events: dict[str, trio.Event]) -> None:
        """Background: HEAD the keys of ``events`` (claimed in ``_heading``) into
        ``object_attrs``, then set their events."""
        keys = list(events)
        try:
            async with self._fill_limit:
                found = await self.aclient.head_objects(keys)
        except (CosError, OSError) as exc:
            log.debug("reading ahead %s: %s", keys[0], exc)
        else:
            for got in found:
                if not isinstance(got, CosError):
                    self._file_attr(got)  # into object_attrs
                elif got.status != 404:
                    log.debug("reading ahead: %s", got)
        finally:  # after the answers are in the cache: the waiters look there
            for k, event in events.items():
                if self._heading.get(k) is event:
                    del self._heading[k]
                event.set()

    # -- lookup-ahead -------------------------------------------------------------------

    async def _lookup_listed(self, parent: Inode, listing: Listing,
                             name: str) -> Inode | None:
        """``name``, listed in ``parent``'s fresh listing and bound to no inode.

        A file comes from the attribute cache when it holds the listed object (a
        HEAD sent ahead, awaited if under way), else None: only a request can
        tell; the HEADs of the files that follow it in the listing go ahead. A
        directory is completed as readdir's are (:meth:`complete`): the LIST of
        its first keys, kept as its listing when that is all of it, so the
        lookups in it that follow (rsync ``lstat``s each file) send no LIST of
        their own, and its marker's HEAD if it has one; no HEAD of an object of
        the same name, which the directory hides (as readdir shows). The
        directories that follow it in the listing are readied ahead."""
        e = listing.entries.get(name)
        if e is None:
            return None
        if e.info is None:
            inode = self._bind_entry(parent, e)
            assert inode is not None  # a directory entry always binds
            self._lookup_ahead(parent, listing, name, is_dir=True)
            return await self.complete(inode)
        if not self.defaults.use_metadata:  # the listing says all there is
            return self._attach(parent, name, meta.attr_from_object(e.info, self.defaults))
        self._lookup_ahead(parent, listing, name, is_dir=False)
        await self._head_sent_ahead(e.info.key)
        known = self._known_attr(e.info)
        if known is None or self.child(parent.ino, name) is not None:
            return None
        return self._attach(parent, name, replace(known, size=e.info.size))

    def _lookup_ahead(self, parent: Inode, listing: Listing, name: str, *,
                      is_dir: bool) -> None:
        """An entry of ``parent`` is looked up by name (no readdir first): programs
        that do that for many names (rsync ``lstat``s every file and directory it
        may send, in name order, then goes into each directory and does the same)
        would wait for one request after the other, so the entries of the same
        kind that follow it in the listing are fetched in the background: files
        HEADed into ``object_attrs``, a window that starts at ``fill_window``;
        directories readied (``_ready_dir``) with the HEADs of all their files,
        which such a program looks up next, and their first subdirectories, where
        it goes after them, a window that starts at ``walk_window``. Each window
        doubles as the lookups reach into it, up to ``fill_window_max`` or
        ``walk_window_max``. A directory looked up is readied so too (its
        completion waits for that): the walk goes into it next."""
        plan: _LookupPlan | None = self._lookup_plans.get((parent.ino, is_dir))
        if plan is None or plan.listing is not listing:
            order = sorted((e.name for e in listing.entries.values()
                            if (e.info is None) == is_dir),
                           key=names.listing_order)
            plan = _LookupPlan(listing, order, {n: i for i, n in enumerate(order)},
                               self.tuning.walk_window if is_dir else self.tuning.fill_window)
            self._lookup_plans[(parent.ino, is_dir)] = plan
        pos = plan.pos.get(name)
        if is_dir:
            self._ready_listed_dirs(parent, [listing.entries[name]], deeper=True)
        if pos is None or pos + plan.window // 2 < plan.readied:
            return  # well inside what was sent ahead
        start = max(pos + 1, plan.readied)
        plan.readied = max(plan.readied, pos + 1 + plan.window)
        plan.window = min(plan.window * 2, self.tuning.walk_window_max if is_dir
                          else self.tuning.fill_window_max)
        ahead = [e for e in map(listing.entries.get, plan.order[start:plan.readied])
                 if e is not None]
        if is_dir:
            self._ready_listed_dirs(parent, ahead, deeper=True)
            return
        self._send_heads_ahead([e.info.key for e in ahead if e.info is not None
                                and self.child(parent.ino, e.name) is None
                                and self._known_attr(e.info) is None])

    def _ready_listed_dirs(self, parent: Inode, entries: list[DirEntry], *,
                           deeper: bool) -> None:
        """Ready the directories of ``entries`` (of ``parent``'s listing) in the
        background for lookups of every file in them, and with ``deeper`` their
        first ``walk_window`` subdirectories too; binding each one's inode as
        readdir does (the kernel gets it at its lookup)."""
        for e in entries:
            self._ready_soon(self._bind_entry(parent, e), True, deeper)

    def _needs_head(self, parent: Inode, e: DirEntry, every_file: bool = False) -> bool:
        """Whether binding file entry ``e`` of ``parent`` needs its HEAD first (see
        ``_bind_entry``); with ``every_file``, whether a lookup of it would."""
        assert e.info is not None
        inode = self.child(parent.ino, e.name)
        if inode is not None and self._still_valid(inode, e):
            return False
        if self._known_attr(e.info) is not None:
            return False
        return self.defaults.use_metadata and (every_file or meta.may_be_symlink(e.info.size))

    def _still_valid(self, inode: Inode, e: DirEntry) -> bool:
        if self._authoritative(inode):
            return True
        if e.info is None:
            return inode.is_dir()
        return not inode.is_dir() and meta.same_object(inode.attr, e.info)

    def rebind(self, parent: Inode, name: str, inode: Inode) -> Inode:
        """The inode ``name`` is bound to now: ``inode`` again if the kernel forgot it
        while we awaited (its FORGET runs between our awaits), unless another inode
        took the name meanwhile."""
        ino = self.children.get(parent.ino, name)
        if ino is not None and ino in self.inodes:
            return self.inodes[ino]
        self.inodes[inode.ino] = inode
        self.children.bind(parent.ino, name, inode.ino)
        return inode

    def _bind_entry(self, parent: Inode, e: DirEntry) -> Inode | None:
        """The inode for listing entry ``e``: the live one while the listing agrees
        with it, else one with what the attribute cache or the listing says; None
        when only a HEAD can tell its type (it may be a symlink)."""
        inode = self.child(parent.ino, e.name)
        if inode is not None and self._still_valid(inode, e):
            # The listing is a fresh look at the server: unchanged means valid.
            inode.expires = self._expiry()
            return inode
        if e.info is None:
            attr = meta.implicit_dir_attr(self.defaults, time.time_ns())
            # Asked when needed (a marker may carry its mode), with the LIST that
            # also serves its readdir, fetched ahead for the following ones.
            attr.partial = True
            return self._attach(parent, e.name, attr)
        known = self._known_attr(e.info)
        if known is not None:
            return self._attach(parent, e.name, replace(known, size=e.info.size))
        if self.defaults.use_metadata and meta.may_be_symlink(e.info.size):
            # readdirplus must give the kernel the right type (find -type uses it,
            # and the kernel refuses an inode that changes type): only the
            # object's metadata can say whether it is a symlink.
            return None
        return self._attach(parent, e.name, meta.attr_from_object(e.info, self.defaults))

    async def _head_entries(self, parent: Inode, todo: list[DirEntry],
                            bound: dict[str, Inode]) -> None:
        """Bind ``todo`` (file entries) with full attributes from HEADs in parallel
        (in chunks, see ``chunked``)."""
        base = self.key_of(parent)
        limit = trio.CapacityLimiter(self.tuning.head_parallel)

        async def head(chunk: list[DirEntry]) -> None:
            async with limit:
                found = await self.aclient.head_objects(
                    [names.child_key(base, e.name) for e in chunk])
            for e, got in zip(chunk, found, strict=True):
                if isinstance(got, CosError):
                    if got.status != 404:
                        raise got
                    continue  # deleted since the listing
                bound[e.name] = self._attach(parent, e.name, self._file_attr(got))

        async with trio.open_nursery() as nursery:
            for chunk in chunked(todo, self.tuning.head_parallel, self.tuning.fill_chunk):
                nursery.start_soon(head, chunk)

    # -- creating ------------------------------------------------------------------

    async def _check_free(self, parent: Inode, name: str) -> str:
        """Key for a new ``name`` in ``parent``; EEXIST if the name is taken."""
        if not parent.is_dir():
            raise OSError(errno.ENOTDIR, "not a directory")
        try:
            await self.lookup(parent.ino, name)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        else:
            raise OSError(errno.EEXIST, "file exists")
        return names.child_key(self.key_of(parent), name)

    def new_attr(self, mode: int, uid: int, gid: int) -> Attr:
        now = time.time_ns()
        return Attr(mode=mode, uid=uid, gid=gid, mtime_ns=now, ctime_ns=now)

    async def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Inode:
        parent = self.get(parent_ino)
        key = await self._check_free(parent, name)
        names.check_key(key, directory=True)
        attr = self.new_attr(stat.S_IFDIR | stat.S_IMODE(mode), uid, gid)
        await self.aclient.put_object(key + "/", b"", content_type=meta.DIR_CONTENT_TYPE,
                                      metadata=meta.metadata_for(attr))
        inode = self._attach(parent, name, attr, has_marker=True)
        self._keep_listing(inode.ino, Listing())  # known empty
        self._note_change(parent, name, DirEntry(name, True))
        return inode

    def create_local(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Inode:
        """A new regular file that exists only locally until its first upload."""
        parent = self.get(parent_ino)
        key = names.child_key(self.key_of(parent), name)
        names.check_key(key)
        attr = self.new_attr(stat.S_IFREG | stat.S_IMODE(mode), uid, gid)
        inode = self._attach(parent, name, attr, local=True)
        self._note_change(parent, name, None)
        return inode

    async def ensure_absent(self, parent_ino: int, name: str) -> None:
        """EEXIST when ``name`` exists (for create/mknod/symlink)."""
        await self._check_free(self.get(parent_ino), name)

    async def symlink(self, parent_ino: int, name: str, target: str, uid: int,
                      gid: int) -> Inode:
        parent = self.get(parent_ino)
        key = await self._check_free(parent, name)
        names.check_key(key)
        attr = self.new_attr(stat.S_IFLNK | 0o777, uid, gid)
        body = target.encode("utf-8", "surrogateescape")
        attr.size = len(body)
        etag = await self.aclient.put_object(key, body, content_type=meta.DEFAULT_CONTENT_TYPE,
                                             metadata=meta.metadata_for(attr))
        attr.etag = etag
        self.object_attrs[key] = (etag, attr)
        inode = self._attach(parent, name, attr)
        inode.symlink_target = target
        self._note_change(parent, name, None)
        self._forget_listing(parent.ino)
        return inode

    async def readlink(self, ino: int) -> str:
        inode = self.get(ino)
        if not inode.attr.is_symlink():
            raise OSError(errno.EINVAL, "not a symlink")
        if inode.symlink_target is None:
            data = await self.aclient.get_object(self.key_of(inode))
            inode.symlink_target = data.decode("utf-8", "surrogateescape")
        return inode.symlink_target

    def uploaded(self, inode: Inode, info: ObjectInfo | None,
                 metadata: dict[str, str] | None = None) -> None:
        """Record the object a flush of ``inode`` produced, carrying ``metadata``
        (None: not known)."""
        if info is None:
            return
        # A new object: what the old one had besides its metadata is gone, and a
        # later metadata copy must not bring it back.
        inode.attr = replace(inode.attr, **meta.kept_by_copies(info))
        inode.attr.etag = info.etag
        inode.attr.size = info.size
        inode.attr.appendable = info.appendable
        inode.attr.last_modified = int(info.last_modified)
        if not inode.attr.mtime_set and info.last_modified:
            # What a remount will show: the object's Last-Modified.
            inode.attr.mtime_ns = int(info.last_modified * 1_000_000_000)
        inode.last_open_etag = info.etag
        inode.local = False
        self.deferred.rebase(inode.ino, info.etag, metadata)
        self.object_attrs[info.key] = (info.etag, replace(inode.attr, partial=False))
        parent = self._bound_parent(inode)
        if parent is not None:
            self._note_change(parent, inode.name, DirEntry(inode.name, False, info))
        inode.expires = self._expiry()

    # -- removing ------------------------------------------------------------------

    async def unlink(self, parent_ino: int, name: str) -> Inode:
        """Delete a file or symlink; returns its inode (open handles keep it)."""
        parent = self.get(parent_ino)
        inode = await self.lookup(parent_ino, name, complete=False)
        if inode.is_dir():
            raise OSError(errno.EISDIR, "is a directory")
        key = self.key_of(inode)
        await self.deferred.settle(inode.ino)
        self.deferred.drop(inode.ino)  # its object goes: nothing to store it on
        if inode.attr.etag:  # a local-only file has nothing on the server yet
            await self.aclient.delete_object(key)
        self.object_attrs.pop(key, None)
        inode.local = False
        self._detach(parent_ino, name)
        self._note_change(parent, name, None)
        if self._cache_on:
            self.negative[(parent_ino, name)] = True
        return inode

    async def _has_children(self, inode: Inode) -> bool:
        if any(self.inodes[c].local for c in self.children.of(inode.ino).values()):
            return True
        key = self.key_of(inode)
        page = await self.aclient.list_objects(prefix=key + "/", max_keys=2)
        return any(c.key != key + "/" for c in page.contents) or bool(page.common_prefixes)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        parent = self.get(parent_ino)
        inode = await self.lookup(parent_ino, name, complete=False)
        if not inode.is_dir():
            raise OSError(errno.ENOTDIR, "not a directory")
        if await self._has_children(inode):
            raise OSError(errno.ENOTEMPTY, "directory not empty")
        await self.deferred.settle(inode.ino)
        self.deferred.drop(inode.ino)  # a later copy would find no marker
        await self.aclient.delete_object(self.key_of(inode) + "/")
        self._detach(parent_ino, name)
        self._forget_listing(inode.ino)
        self._note_change(parent, name, None)
        if self._cache_on:
            self.negative[(parent_ino, name)] = True

    # -- attributes ----------------------------------------------------------------

    async def store_attr(self, inode: Inode, attr: Attr) -> None:
        """Persist new mode/uid/gid/mtime/xattrs of a clean inode on the server by a
        metadata self-copy (a directory without marker gets one)."""
        if not meta.fits_metadata_limit(attr):
            raise OSError(errno.ENOSPC, "metadata larger than COS's 2 KB limit")
        key = self.key_of(inode)
        if inode.is_dir():
            if inode.ino == ROOT_INODE and not key:
                inode.attr = attr  # the bucket root has no object to carry metadata
                return
            await self.aclient.put_object(key + "/", b"", content_type=meta.DIR_CONTENT_TYPE,
                                          metadata=meta.metadata_for(attr))
            inode.has_marker = True
        elif inode.attr.etag:  # an object exists to copy onto itself
            if inode.attr.appendable:
                # COS cannot copy appendable objects, so their metadata cannot change
                # without rewriting the data: refuse rather than pretend.
                raise OSError(errno.EOPNOTSUPP, "appendable objects keep their metadata")
            await self.deferred.settle(inode.ino)
            etag, attr = await copies.rewrite_in_place(self.aclient, key, attr)
            attr.etag = etag
            self.object_attrs[key] = (etag, attr)
            self.deferred.drop(inode.ino)  # this copy carried everything
        inode.attr = attr
        inode.expires = self._expiry()

    # -- deferred metadata -----------------------------------------------------------

    def can_defer(self, inode: Inode) -> bool:
        """Whether a metadata change of ``inode`` may wait (see ``defer_attr``): a
        regular file whose object is on the server and can be copied, or a
        directory with a marker (rsync sets a directory's mode and mtime after it
        made it: two more PUTs of the marker otherwise)."""
        a = inode.attr
        if self.tuning.meta_delay <= 0 or inode.local:
            return False
        if inode.is_dir():
            return inode.has_marker and inode.ino != ROOT_INODE
        # Archived objects cannot be copied: their chmod must fail now (EACCES).
        return stat.S_ISREG(a.mode) and bool(a.etag) and copies.copyable(a)

    async def defer_attr(self, inode: Inode, attr: Attr) -> None:
        """Take new metadata of a clean file or a directory's marker
        (:meth:`can_defer`) and store it on the object later, so that several
        changes (rsync's utime then chmod) cost one request, and a rename that
        follows carries them in its copy instead.

        ``inode`` shows ``attr`` at once; the server gets it within ``meta_delay``
        seconds, or sooner: at ``deferred.apply`` (fsync, close, unmount), a
        rename (its copy carries it), an upload of the file (which carries it); an
        unlink drops it. It is recorded in the journal before this returns, and a
        mount after a crash stores it if the object is still the one it was for
        (``deferred.recover``). Stored with the object's ETag as condition: an
        object changed on the server meanwhile keeps its own metadata. See
        :mod:`cosfs.deferred_meta`.
        """
        if not meta.fits_metadata_limit(attr):
            raise OSError(errno.ENOSPC, "metadata larger than COS's 2 KB limit")
        await self.deferred.settle(inode.ino)  # a self-copy under way still has the old values
        key = self.key_of(inode)
        if inode.is_dir():
            key, ctype = key + "/", meta.DIR_CONTENT_TYPE  # the marker gets it
        else:
            ctype = attr.content_type or meta.DEFAULT_CONTENT_TYPE
        # An unknown Content-Type (listing_attrs) is asked for at recovery.
        self.deferred.defer(inode.ino, key, attr, ctype,
                            known_type=inode.is_dir() or bool(attr.content_type))
        inode.attr = attr
        inode.expires = self._expiry()

    def _metadata_stored(self, key: str, etag: str, attr: Attr) -> None:
        self.object_attrs[key] = (etag, attr)

    def _metadata_obsolete(self, ino: int) -> None:
        inode = self.inodes.get(ino)
        if inode is not None:
            inode.expires = 0.0  # show what the server has

    # -- rename --------------------------------------------------------------------

    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                     *, noreplace: bool = False,
                     before_copy: object = None) -> tuple[Inode, Inode | None]:
        """Move ``old_name`` to ``new_name``; returns (moved inode, replaced inode).

        Files: server-side copy then delete (multipart copy above 5 GB). Directories:
        every key below is copied (in parallel) before any is deleted, and a crash
        midway is finished by the next mount (:mod:`cosfs.moves`).
        ``before_copy`` (an async callable taking the moved and the replaced inode)
        lets the caller upload staged data first.
        """
        async with self.rename_lock:
            src_parent = self.get(old_parent)
            dst_parent = self.get(new_parent)
            src = await self.lookup(old_parent, old_name)
            try:
                dst: Inode | None = await self.lookup(new_parent, new_name)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                dst = None
            if dst is src:
                return src, None
            if dst is not None:
                if noreplace:
                    raise OSError(errno.EEXIST, "target exists")
                self._check_replace(src, dst)
                if dst.is_dir() and await self._has_children(dst):
                    raise OSError(errno.ENOTEMPTY, "target directory not empty")
            if src.is_dir() and self._is_ancestor(src, dst_parent):
                raise OSError(errno.EINVAL, "cannot move a directory into itself")
            old_key = self.key_of(src)
            new_key = names.child_key(self.key_of(dst_parent), new_name)
            names.check_key(new_key, directory=src.is_dir())
            if before_copy is not None:
                await before_copy(src, dst)  # type: ignore[operator]
            if dst is not None:
                await self.deferred.settle(dst.ino)
                self.deferred.drop(dst.ino)  # its object is replaced
            if src.is_dir():
                await self.deferred.apply_all(strict=True)  # the copies keep what is stored
                await self._move_tree(old_key, new_key, dst)
            elif src.attr.etag:  # an object exists (staged data was flushed first)
                await self._move_object(src, old_key, new_key)
            if dst is not None and dst.is_dir() and not src.has_marker:
                # An empty directory replaced by an implicit one: drop its marker.
                await self.aclient.delete_object(new_key + "/")
            self._move_inode(src, src_parent, old_name, dst_parent, new_name)
            return src, dst

    @staticmethod
    def _check_replace(src: Inode, dst: Inode) -> None:
        if src.is_dir() and not dst.is_dir():
            raise OSError(errno.ENOTDIR, "target is not a directory")
        if not src.is_dir() and dst.is_dir():
            raise OSError(errno.EISDIR, "target is a directory")

    def _is_ancestor(self, inode: Inode, other: Inode) -> bool:
        while True:
            if other.ino == inode.ino:
                return True
            if other.ino == ROOT_INODE:
                return False
            other = self.inodes[other.parent]

    def _move_inode(self, src: Inode, src_parent: Inode, old_name: str, dst_parent: Inode,
                    new_name: str) -> None:
        self._detach(dst_parent.ino, new_name)
        self.children.unbind(src_parent.ino, old_name)
        src.parent, src.name = dst_parent.ino, new_name
        self.children.bind(dst_parent.ino, new_name, src.ino)
        self._exists(dst_parent.ino, new_name)
        if self._cache_on:
            self.negative[(src_parent.ino, old_name)] = True
        self._note_change(src_parent, old_name, None)
        if src.is_dir():
            self._note_change(dst_parent, new_name, DirEntry(new_name, True))
            # Listings under a moved directory speak of old keys.
            self._forget_listing(None)
        else:
            # The destination's listing stays complete, so the lookups of names
            # that do not exist there (rsync's next temporary file) cost nothing.
            self._note_change(dst_parent, new_name, self._file_entry(src, new_name))

    async def _move_object(self, src: Inode, old_key: str, new_key: str) -> None:
        await self.deferred.settle(src.ino)
        carry = self.deferred.take(src.ino)
        retype = meta.retyped(src.attr.content_type, old_key, new_key, self.guess_type) \
            if stat.S_ISREG(src.attr.mode) else None  # a symlink's type means nothing
        # Once the new key is complete the rename is done. Requests naming the old
        # key wait for its DELETE (see AsyncClient), so it runs in the background;
        # the journal holds it until then (cosfs.old_keys), and holds the move
        # itself while a copy of more than one request is made (cosfs.moves).
        info = await self.moves.move_file(
            old_key, new_key, src.attr,
            lambda: self._copy_renamed(src, old_key, new_key, carry, retype))
        if retype is not None:
            src.attr.content_type = retype
        if carry is not None:
            self.deferred.forget(carry.key)
        cached = self.object_attrs.pop(old_key, None)
        src.attr.etag = info
        if cached is not None:
            self.object_attrs[new_key] = (info, src.attr)

    async def _copy_renamed(self, src: Inode, old_key: str, new_key: str,
                            carry: PendingMeta | None, retype: str | None) -> str:
        try:
            # The copy carries the deferred metadata, on condition that the object
            # is still the one it was for.
            return await copies.copy_object(
                self.aclient, old_key, new_key, src.attr, retype=retype,
                rewrite=carry is not None, if_match=carry.etag if carry else None,
                default_type=carry.content_type if carry else None)
        except CosError as exc:
            if carry is None or exc.status != 412:
                if carry is not None:
                    self.deferred.give_back(src.ino, carry)
                raise
            log.warning("%r changed on the server before its new metadata was stored; "
                        "it keeps the server's", old_key)
            src.expires = 0.0
            return await copies.copy_object(self.aclient, old_key, new_key, src.attr,
                                            retype=retype)

    async def _move_tree(self, old_key: str, new_key: str, dst: Inode | None) -> None:
        # The marker of an empty directory replaced is the one key under the new
        # name that was there before.
        keep = new_key + "/" if dst is not None and dst.has_marker else None
        moved = await self.moves.move_tree(old_key + "/", new_key + "/", keep=keep)
        for info in moved:
            self.object_attrs.pop(info.key, None)

    # -- statistics ----------------------------------------------------------------

    def open_inodes(self) -> Iterable[Inode]:
        return (i for i in self.inodes.values() if i.opens > 0)
