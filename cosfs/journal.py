"""The crash journal of the write cache: which staged files hold data not yet on the
server, and which multipart uploads are open.

Two parts, each suited to its rate of change:

* ``Journal``: SQLite (WAL) in the cache directory, one row per staged file while
  it is dirty (key, staging file name, the base object's key/ETag/size, the last
  metadata), one row per open multipart upload, and one per clean object whose
  new metadata (a deferred chmod/chown/utime) is not on it yet, one per old key of
  a renamed file whose DELETE has not ended. Rows change a few times per
  file (first write, upload start, upload end), never per write().
* ``ExtentLog``: next to each staging file, an append-only log of the writes and
  truncates applied to it, one small record per call. Replaying it through a
  :class:`~cosfs.ranges.DirtyMap` gives exactly the dirty ranges. A plain
  ``write(2)`` is enough for crash safety: a killed process loses nothing that
  reached the kernel's page cache. Only a power loss needs ``fsync``, which the
  writer issues where durability is promised (fsync(), write-back flush).

Order that makes recovery sound: the journal row is committed before the staging
file is first written; each write lands in the staging file before its log record;
write() returns only after both. A record without its data cannot exist, so every
recorded range holds accepted bytes, and every accepted byte is recorded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .ranges import DirtyMap

_SCHEMA = """
CREATE TABLE IF NOT EXISTS staged (
    id INTEGER PRIMARY KEY,
    ino INTEGER NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,            -- staging file name inside the staging folder
    base_key TEXT,                 -- NULL: a new file, no object to fill from
    base_etag TEXT,
    base_size INTEGER NOT NULL DEFAULT 0,
    base_appendable INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    content_type TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_meta (
    key TEXT PRIMARY KEY,          -- an object whose new metadata is not on it yet
    etag TEXT NOT NULL,            -- the object it is for: applied only while unchanged
    metadata TEXT NOT NULL,
    content_type TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS old_keys (
    key TEXT PRIMARY KEY,          -- the old key of a renamed file, to be deleted
    etag TEXT NOT NULL,            -- the object it held: deleted only while it does
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS moves (
    old TEXT PRIMARY KEY,          -- a rename whose copies are being made: of every
    new TEXT NOT NULL,             -- key under a prefix (tree), or of one key whose
    tree INTEGER NOT NULL,         -- copy takes more than one request
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    staged_id INTEGER,
    started REAL NOT NULL
);
-- One row, bumped by Journal.sync: a commit to make durable with one fsync.
CREATE TABLE IF NOT EXISTS sync_marker (n INTEGER NOT NULL);
INSERT INTO sync_marker SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM sync_marker);
"""


# SQLite result codes that mean the cache disk refused a change, and the errno the
# application gets for them (instead of a bare EIO for an unknown exception).
_DISK_ERRORS = {13: errno.ENOSPC,  # SQLITE_FULL
                8: errno.EROFS,  # SQLITE_READONLY
                10: errno.EIO}  # SQLITE_IOERR


@dataclass
class StagedRecord:
    """One dirty staged file as the journal knows it."""

    ino: int
    key: str
    name: str
    base_key: str | None = None
    base_etag: str | None = None
    base_size: int = 0
    base_appendable: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    created: float = field(default_factory=time.time)
    id: int | None = None


@dataclass(frozen=True)
class MetadataRecord:
    """Metadata a clean object must get (a deferred chmod/chown/utime)."""

    key: str
    etag: str
    metadata: dict[str, str]
    content_type: str | None


@dataclass(frozen=True)
class UploadRecord:
    upload_id: str
    key: str
    staged_id: int | None
    started: float


class Journal:
    """SQLite journal of dirty staged files and open multipart uploads.

    Every method commits before it returns (WAL, ``synchronous=NORMAL``: a commit
    survives the death of the process; :meth:`sync` makes what is committed survive
    a power loss too). One connection, used only from the thread running the trio
    loop; calls are short (no row holds file data). :meth:`sync` has a connection
    of its own (``synchronous=FULL``) and a lock, so any thread may call it: its
    commit fsyncs the WAL, and with it every commit before it, while the trio
    loop goes on.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._sync_db = sqlite3.connect(str(path), isolation_level=None,
                                        check_same_thread=False)
        self._sync_db.execute("PRAGMA synchronous=FULL")
        self._sync_lock = threading.Lock()

    def close(self) -> None:
        self._sync_db.close()
        self._db.close()

    def delete_files(self) -> None:
        """After :meth:`close`: delete the database and the WAL files beside it."""
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                self.path.with_name(self.path.name + suffix).unlink()

    def _change(self, sql: str, params: tuple = (), db: sqlite3.Connection | None = None
                ) -> sqlite3.Cursor:
        """Run one statement that writes; a full or read-only cache disk raises
        OSError(ENOSPC / EROFS) so the application sees why."""
        try:
            return (db or self._db).execute(sql, params)
        except sqlite3.Error as exc:
            code = _DISK_ERRORS.get(getattr(exc, "sqlite_errorcode", -1) & 0xFF)
            if code is None:
                raise
            raise OSError(code, f"cache journal {self.path}: {exc}") from exc

    def sync(self) -> None:
        """Make every committed change durable against power loss: one small
        commit with ``synchronous=FULL`` fsyncs the WAL that holds them all (a
        checkpoint would copy them into the database first, for nothing)."""
        with self._sync_lock:
            self._change("UPDATE sync_marker SET n = n + 1", db=self._sync_db)

    def holds_changes(self) -> bool:
        """Whether any row waits for the server (a staged file, metadata, an old
        key, a multipart upload): what the next recovery would act on."""
        return any(self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                   for table in ("staged", "pending_meta", "old_keys", "moves",
                                 "uploads"))

    # -- staged files ----------------------------------------------------------
    def add_file(self, rec: StagedRecord) -> int:
        cur = self._change(
            "INSERT INTO staged (ino, key, name, base_key, base_etag, base_size,"
            " base_appendable, metadata, content_type, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.ino, rec.key, rec.name, rec.base_key, rec.base_etag, rec.base_size,
             int(rec.base_appendable), json.dumps(rec.metadata), rec.content_type,
             rec.created),
        )
        rec.id = cur.lastrowid
        assert rec.id is not None
        return rec.id

    def update_file(self, rec: StagedRecord) -> None:
        self._change(
            "UPDATE staged SET key=?, base_key=?, base_etag=?, base_size=?,"
            " base_appendable=?, metadata=?, content_type=? WHERE id=?",
            (rec.key, rec.base_key, rec.base_etag, rec.base_size, int(rec.base_appendable),
             json.dumps(rec.metadata), rec.content_type, rec.id),
        )

    def remove_file(self, file_id: int) -> None:
        self._change("DELETE FROM staged WHERE id=?", (file_id,))

    def files(self) -> list[StagedRecord]:
        rows = self._db.execute(
            "SELECT id, ino, key, name, base_key, base_etag, base_size, base_appendable,"
            " metadata, content_type, created FROM staged ORDER BY id").fetchall()
        return [StagedRecord(id=r[0], ino=r[1], key=r[2], name=r[3], base_key=r[4],
                             base_etag=r[5], base_size=r[6], base_appendable=bool(r[7]),
                             metadata=json.loads(r[8]), content_type=r[9], created=r[10])
                for r in rows]

    # -- deferred metadata -----------------------------------------------------
    def put_metadata(self, rec: MetadataRecord) -> None:
        """Record (or replace) the metadata ``rec.key`` must get. Committed before
        the change is acknowledged, so a crash of the mount does not lose it."""
        self._change("INSERT OR REPLACE INTO pending_meta VALUES (?, ?, ?, ?, ?)",
                     (rec.key, rec.etag, json.dumps(rec.metadata), rec.content_type,
                      time.time()))

    def remove_metadata(self, key: str) -> None:
        self._change("DELETE FROM pending_meta WHERE key=?", (key,))

    def metadata(self) -> list[MetadataRecord]:
        rows = self._db.execute(
            "SELECT key, etag, metadata, content_type FROM pending_meta ORDER BY created")
        return [MetadataRecord(r[0], r[1], json.loads(r[2]), r[3]) for r in rows.fetchall()]

    # -- old keys of renamed files ---------------------------------------------
    def put_old_key(self, key: str, etag: str) -> None:
        """Record that ``key``, holding the object ``etag``, is to be deleted (the
        rename that copied it away has returned). Committed before the rename
        returns, so a crash of the mount does not leave both names."""
        self._change("INSERT OR REPLACE INTO old_keys VALUES (?, ?, ?)",
                     (key, etag, time.time()))

    def remove_old_keys(self, keys: list[str]) -> None:
        """Forget the old keys whose DELETE has ended (a statement for up to 500)."""
        for i in range(0, len(keys), 500):  # under SQLite's limit of bound values
            chunk = keys[i:i + 500]
            self._change(f"DELETE FROM old_keys WHERE key IN ({','.join('?' * len(chunk))})",
                         tuple(chunk))

    def old_keys(self) -> list[tuple[str, str]]:
        """(key, etag) of every old key a crash left undeleted, oldest first."""
        rows = self._db.execute("SELECT key, etag FROM old_keys ORDER BY created, rowid")
        return [(r[0], r[1]) for r in rows.fetchall()]

    # -- renames whose copies are under way --------------------------------------
    def put_move(self, old: str, new: str, *, tree: bool) -> None:
        """Record that ``old`` (a key, or with ``tree`` every key under the prefix
        ``old``) is being copied to ``new`` (committed before the first copy)."""
        self._change("INSERT OR REPLACE INTO moves VALUES (?, ?, ?, ?)",
                     (old, new, int(tree), time.time()))

    def end_move(self, old: str, old_keys: Iterable[tuple[str, str]] = (),
                 staged: Iterable[StagedRecord] = ()) -> None:
        """In one transaction: forget the move of ``old``, record ``old_keys``
        ((key, etag) pairs) as keys to delete, and store the changed rows of
        ``staged`` files. So a crash leaves either the move to finish or the keys
        to delete, never neither."""
        with self._transaction():
            self._change("DELETE FROM moves WHERE old=?", (old,))
            for key, etag in old_keys:
                self.put_old_key(key, etag)
            for rec in staged:
                self.update_file(rec)

    def moves(self) -> list[tuple[str, str, bool]]:
        """(old, new, tree) of every rename a crash cut short, oldest first."""
        rows = self._db.execute("SELECT old, new, tree FROM moves ORDER BY created, rowid")
        return [(r[0], r[1], bool(r[2])) for r in rows.fetchall()]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._change("BEGIN IMMEDIATE")
        try:
            yield
            self._change("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # a failed COMMIT leaves it open
                self._db.execute("ROLLBACK")
            raise

    # -- multipart uploads -----------------------------------------------------
    def add_upload(self, upload_id: str, key: str, staged_id: int | None) -> None:
        self._change("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?)",
                     (upload_id, key, staged_id, time.time()))

    def remove_upload(self, upload_id: str) -> None:
        self._change("DELETE FROM uploads WHERE upload_id=?", (upload_id,))

    def uploads(self) -> list[UploadRecord]:
        rows = self._db.execute(
            "SELECT upload_id, key, staged_id, started FROM uploads ORDER BY started")
        return [UploadRecord(*r) for r in rows.fetchall()]


# One record: kind (b"W" write, b"T" truncate), two 64-bit numbers, CRC32 of the rest.
_RECORD = struct.Struct("<cQQI")
_WRITE, _TRUNCATE = b"W", b"T"


class ExtentLog:
    """Append-only log of the writes and truncates of one staging file.

    ``write(offset, length)`` and ``truncate(size)`` each append one record with a
    single ``write(2)`` (records are small, so a concurrent reader never sees half
    of one from a live process; a torn record after a power loss fails its CRC and
    ends the replay). :meth:`rewrite` replaces the log atomically (write a new file,
    rename it over the old one) once an upload made older records moot.
    Not thread-safe: the owning staged file serialises calls under its lock.
    """

    def __init__(self, path: Path, fd: int | None = None) -> None:
        """Open (create) the log at ``path``, or take ``fd``, an open empty log
        there (a spare of the write cache)."""
        self.path = path
        self.records = 0
        if fd is None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fd = fd

    def close(self) -> None:
        fd = self.detach()
        if fd >= 0:
            os.close(fd)

    def detach(self) -> int:
        """Give up the descriptor without closing it (-1 when already closed)."""
        fd, self._fd = self._fd, -1
        return fd

    def write(self, offset: int, length: int) -> None:
        self._append(_WRITE, offset, length)

    def truncate(self, size: int) -> None:
        self._append(_TRUNCATE, size, 0)

    def fsync(self) -> None:
        os.fsync(self._fd)

    def _append(self, kind: bytes, a: int, b: int) -> None:
        record = _pack(kind, a, b)
        written = os.write(self._fd, record)
        if written != len(record):
            # A full disk stored part of the record. Left there, it would fail its
            # CRC at replay and hide every record after it: cut it off, refuse.
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
            raise OSError(errno.ENOSPC, "no room in the cache for the write's log record")
        self.records += 1

    def rewrite(self, size: int, dirty: Iterable[tuple[int, int]]) -> None:
        """Replace the log with the shortest one giving ``size`` and ``dirty`` when
        replayed on the (new) base: one truncate, then one write per range."""
        tmp = self.path.with_name(self.path.name + ".new")
        records = [_pack(_TRUNCATE, size, 0)]
        records += [_pack(_WRITE, s, e - s) for s, e in dirty]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"".join(records))
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        # Swap, then close: the descriptor is never -1 in between.
        old, self._fd = self._fd, os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if old >= 0:
            os.close(old)
        self.records = len(records)

    def clear(self) -> None:
        """Forget every record (the staged file is clean again)."""
        os.ftruncate(self._fd, 0)
        self.records = 0

    @staticmethod
    def replay(path: Path, base_size: int) -> DirtyMap:
        """The dirty map the logged calls produce on a base of ``base_size`` bytes.
        A missing log means no call was logged."""
        dm = DirtyMap(base_size)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return dm
        for pos in range(0, len(raw) - _RECORD.size + 1, _RECORD.size):
            kind, a, b, crc = _RECORD.unpack_from(raw, pos)
            if zlib.crc32(raw[pos:pos + _RECORD.size - 4]) != crc:
                break  # torn by a power loss: nothing after it was acknowledged
            if kind == _WRITE:
                dm.write(a, b)
            elif kind == _TRUNCATE:
                dm.truncate(a)
        return dm


def _pack(kind: bytes, a: int, b: int) -> bytes:
    head = struct.pack("<cQQ", kind, a, b)
    return head + struct.pack("<I", zlib.crc32(head))
