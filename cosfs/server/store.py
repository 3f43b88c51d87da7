"""Buckets, objects and multipart uploads of one server root.

Metadata lives in one SQLite database (``<root>/meta.sqlite3``), object and part bytes
in blob files (``blobs.py``). Keys are stored as BLOBs of UTF-8, so SQLite orders them
bytewise, which is the listing order of COS.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .blobs import BlobDir, BlobReader, BlobWriter, join_segments, segments
from .errors import CosServerError
from .listing import ListResult, list_page, successor

SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key BLOB NOT NULL, blob TEXT NOT NULL, size INTEGER NOT NULL,
    etag TEXT NOT NULL, mtime REAL NOT NULL, appendable INTEGER NOT NULL,
    storage_class TEXT NOT NULL, headers TEXT NOT NULL, meta TEXT NOT NULL,
    PRIMARY KEY (bucket, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key BLOB NOT NULL,
    initiated REAL NOT NULL, storage_class TEXT NOT NULL, headers TEXT NOT NULL,
    meta TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, upload_id);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL, number INTEGER NOT NULL, blob TEXT NOT NULL,
    size INTEGER NOT NULL, etag TEXT NOT NULL, mtime REAL NOT NULL,
    PRIMARY KEY (upload_id, number)) WITHOUT ROWID;
"""
_OBJECT_COLUMNS = "bucket, key, blob, size, etag, mtime, appendable, storage_class, headers, meta"


@dataclass
class Attributes:
    """What a writer chooses about a new object: stored response headers
    (``content-type`` and the like, lower-case names), user metadata (bare lower-case
    names, no ``x-cos-meta-``) and the storage class."""

    headers: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    storage_class: str = "STANDARD"


@dataclass
class ObjectRecord:
    bucket: str
    key: bytes
    blob: str  # a blob reference (see blobs.py): one blob, or the parts of an upload
    size: int
    etag: str  # without quotes
    mtime: float
    appendable: bool
    attrs: Attributes

    @property
    def name(self) -> str:
        return self.key.decode("utf-8")

    @classmethod
    def from_row(cls, row: tuple) -> ObjectRecord:
        bucket, key, blob, size, etag, mtime, appendable, storage_class, headers, meta = row
        return cls(bucket, key, blob, size, etag, mtime, bool(appendable),
                   Attributes(json.loads(headers), json.loads(meta), storage_class))


@dataclass
class UploadRecord:
    upload_id: str
    bucket: str
    key: bytes
    initiated: float
    attrs: Attributes

    @property
    def name(self) -> str:
        return self.key.decode("utf-8")


@dataclass
class PartRecord:
    number: int
    blob: str
    size: int
    etag: str
    mtime: float


@dataclass
class UploadPage:
    uploads: list[UploadRecord]
    common_prefixes: list[bytes]
    is_truncated: bool
    next_key_marker: bytes | None
    next_upload_id_marker: str | None


def multipart_etag(part_etags: list[str]) -> str:
    """``md5(concatenated binary part MD5s)-N``, the ETag of a completed upload."""
    digest = hashlib.md5(b"".join(bytes.fromhex(etag) for etag in part_etags)).hexdigest()
    return f"{digest}-{len(part_etags)}"


def chained_etag(previous: str, chunk_md5: str) -> str:
    """ETag of an appendable object after an append: cheap to compute (no re-read of
    the object) and different whenever the content changes."""
    return hashlib.md5(f"{previous}:{chunk_md5}".encode()).hexdigest()


class _KeyedLocks:
    """One lock per name, created on demand and dropped when nobody holds it."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[object, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, name: object) -> Iterator[None]:
        with self._mutex:
            lock, users = self._locks.get(name, (threading.Lock(), 0))
            self._locks[name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._mutex:
                lock, users = self._locks[name]
                if users == 1:
                    del self._locks[name]
                else:
                    self._locks[name] = (lock, users - 1)


def _no_such_key(key: bytes) -> CosServerError:
    return CosServerError("NoSuchKey", f"The specified key does not exist: "
                          f"{key.decode('utf-8', 'replace')}")


def _no_such_upload(upload_id: str) -> CosServerError:
    return CosServerError("NoSuchUpload", f"The specified upload does not exist: {upload_id}")


class Store:
    """The buckets of one server root.

    Invariants: every object or part row names a blob file holding at least ``size``
    bytes; blobs of normal objects and of parts are never modified (so a copy may hard
    link them); an appendable object's blob only grows beyond the recorded ``size``
    before its row is updated, so a reader that reads ``size`` bytes always sees a
    whole object. A row changes only after its new blob is complete, and an old blob is
    unlinked only after the row stops naming it and no reader holds it (``open``
    pins it); a crash leaves at worst unreferenced blobs, swept at the next start.

    Concurrency: thread-safe. One SQLite connection guarded by ``_lock``; bytes are
    copied outside the lock. Appends to the same key are serialised by a per-key lock
    held for the whole request. Only one server may use a root at a time (``flock``).
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(root / ".lock", "a+b")  # noqa: SIM115 - held while open
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(f"another cosfs-server is using {root}") from None
        self.blobs = BlobDir(root)
        self._lock = threading.RLock()
        self._append_locks = _KeyedLocks()
        # Blob references open for reading, with their readers; those whose row went
        # away meanwhile are unlinked by the last reader's close.
        self._pins: dict[str, int] = {}
        self._unpinned_removal: set[str] = set()
        self._db = sqlite3.connect(root / "meta.sqlite3", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._sweep()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._lock_file.close()

    def _sweep(self) -> None:
        rows = self._db.execute("SELECT blob FROM objects UNION ALL SELECT blob FROM parts")
        self.blobs.sweep({blob for (ref,) in rows for blob, _ in segments(ref)})

    # -- buckets -------------------------------------------------------------------

    def create_bucket(self, name: str) -> bool:
        """Create ``name``; ``False`` when it already exists."""
        with self._lock, self._db:
            cursor = self._db.execute("INSERT OR IGNORE INTO buckets VALUES (?, ?)",
                                      (name, time.time()))
            return cursor.rowcount == 1

    def require_bucket(self, name: str) -> None:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM buckets WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise CosServerError("NoSuchBucket", f"The specified bucket does not exist: {name}")

    def list_buckets(self) -> list[tuple[str, float]]:
        with self._lock:
            return self._db.execute("SELECT name, created FROM buckets ORDER BY name").fetchall()

    def delete_bucket(self, name: str) -> None:
        """Delete an empty bucket and its unfinished uploads."""
        with self._lock:
            self.require_bucket(name)
            if self._db.execute("SELECT 1 FROM objects WHERE bucket = ? LIMIT 1",
                                (name,)).fetchone():
                raise CosServerError("BucketNotEmpty", "The bucket you tried to delete is "
                                     "not empty")
            uploads = [u for (u,) in self._db.execute(
                "SELECT upload_id FROM uploads WHERE bucket = ?", (name,))]
            for upload_id in uploads:
                self._drop_upload(upload_id)
            with self._db:
                self._db.execute("DELETE FROM buckets WHERE name = ?", (name,))

    # -- objects -------------------------------------------------------------------

    def _find(self, bucket: str, key: bytes) -> ObjectRecord | None:
        row = self._db.execute(f"SELECT {_OBJECT_COLUMNS} FROM objects "
                               "WHERE bucket = ? AND key = ?", (bucket, key)).fetchone()
        return ObjectRecord.from_row(row) if row else None

    def head(self, bucket: str, key: bytes) -> ObjectRecord:
        with self._lock:
            self.require_bucket(bucket)
            record = self._find(bucket, key)
        if record is None:
            raise _no_such_key(key)
        return record

    def open(self, bucket: str, key: bytes) -> tuple[ObjectRecord, BlobReader]:
        """The record and a reader of its bytes, taken together: a concurrent
        overwrite or delete leaves the blobs in place until the reader is closed."""
        with self._lock:
            record = self.head(bucket, key)
            ref = record.blob
            self._pins[ref] = self._pins.get(ref, 0) + 1
        return record, self.blobs.reader(ref, record.size, lambda: self._unpin(ref))

    def _unpin(self, ref: str) -> None:
        with self._lock:
            users = self._pins.pop(ref) - 1
            if users:
                self._pins[ref] = users
                return
            if ref not in self._unpinned_removal:
                return
            self._unpinned_removal.discard(ref)
        self.blobs.remove(ref)

    def _drop_blob(self, ref: str) -> None:
        """Unlink the blobs of a reference no row names any more, now or (while a
        reader holds them) at its close. Caller holds ``_lock``."""
        if ref in self._pins:
            self._unpinned_removal.add(ref)
        else:
            self.blobs.remove(ref)

    def _replace(self, record: ObjectRecord) -> None:
        """Insert or overwrite the row of ``record``; unlink the blob it replaces.
        Caller holds ``_lock``."""
        old = self._find(record.bucket, record.key)
        with self._db:
            self._db.execute(
                f"INSERT OR REPLACE INTO objects ({_OBJECT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.bucket, record.key, record.blob, record.size, record.etag,
                 record.mtime, int(record.appendable), record.attrs.storage_class,
                 json.dumps(record.attrs.headers), json.dumps(record.attrs.meta)))
        if old is not None and old.blob != record.blob:
            self._drop_blob(old.blob)

    def put(self, bucket: str, key: bytes, writer: BlobWriter, etag: str,
            attrs: Attributes) -> ObjectRecord:
        """Make the finished ``writer`` the object ``key`` (a normal object)."""
        blob = writer.commit()
        record = ObjectRecord(bucket, key, blob, writer.size, etag, time.time(), False, attrs)
        with self._lock:
            try:
                self.require_bucket(bucket)
                self._replace(record)
            except BaseException:
                self.blobs.remove(blob)
                raise
        return record

    def copy(self, src_bucket: str, src_key: bytes, bucket: str, key: bytes,
             attrs_of: Callable[[ObjectRecord], Attributes]) -> ObjectRecord:
        """Copy an object; ``attrs_of(source)`` checks the source (raising to refuse)
        and chooses the new object's attributes. Shares the source's bytes."""
        with self._lock:
            self.require_bucket(bucket)
            source = self.head(src_bucket, src_key)
            attrs = attrs_of(source)
            blob = self.blobs.link(source.blob)
            record = ObjectRecord(bucket, key, blob, source.size, source.etag, time.time(),
                                  False, attrs)
            self._replace(record)
            return record

    def delete(self, bucket: str, key: bytes) -> bool:
        """Delete ``key``; ``False`` when it did not exist."""
        with self._lock:
            self.require_bucket(bucket)
            old = self._find(bucket, key)
            if old is None:
                return False
            with self._db:
                self._db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?",
                                 (bucket, key))
            self._drop_blob(old.blob)
            return True

    def list(self, bucket: str, prefix: bytes, delimiter: bytes, marker: bytes,
             max_keys: int) -> ListResult:
        def fetch(start: bytes, inclusive: bool, stop: bytes | None,
                  limit: int) -> list[ObjectRecord]:
            sql = (f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND "
                   f"key {'>=' if inclusive else '>'} ?")
            args: list = [bucket, start]
            if stop is not None:
                sql += " AND key < ?"
                args.append(stop)
            rows = self._db.execute(sql + " ORDER BY key LIMIT ?", (*args, limit))
            return [ObjectRecord.from_row(row) for row in rows]

        with self._lock:
            self.require_bucket(bucket)
            return list_page(fetch, prefix, delimiter, marker, max_keys)

    # -- append --------------------------------------------------------------------

    @contextmanager
    def appending(self, bucket: str, key: bytes, position: int,
                  attrs: Attributes) -> Iterator[AppendSession]:
        """An append of bytes at ``position``, committed by ``session.commit``.
        Refuses normal objects (ObjectNotAppendable) and a position other than the
        current length (AppendPositionErr)."""
        with self._append_locks.hold((bucket, key)):
            with self._lock:  # the blob is opened before an overwrite can unlink it
                self.require_bucket(bucket)
                current = self._find(bucket, key)
                _check_append(current, key, position)
                session = AppendSession(self, bucket, key, position, current, attrs)
            try:
                yield session
            finally:
                session.close()

    def _commit_append(self, session: AppendSession, chunk_md5: str) -> ObjectRecord:
        with self._lock:
            now = self._find(session.bucket, session.key)
            before = session.current
            if (now is None) != (before is None) or (
                    now is not None and (now.blob, now.size) != (before.blob, before.size)):
                raise CosServerError("AppendPositionErr", "The object changed during the "
                                     "append; retry with its current length")
            if before is None:
                blob, size, etag = session.writer.commit(), session.writer.size, chunk_md5
                attrs = session.attrs
            else:
                blob, size = before.blob, session.position + session.written
                etag, attrs = chained_etag(before.etag, chunk_md5), before.attrs
            record = ObjectRecord(session.bucket, session.key, blob, size, etag, time.time(),
                                  True, attrs)
            self._replace(record)
            return record

    # -- multipart -----------------------------------------------------------------

    def create_upload(self, bucket: str, key: bytes, attrs: Attributes) -> UploadRecord:
        # Upload ids sort by creation time, which orders List Multipart Uploads.
        upload_id = f"{time.time_ns() // 1000:016x}{secrets.token_hex(16)}"
        record = UploadRecord(upload_id, bucket, key, time.time(), attrs)
        with self._lock:
            self.require_bucket(bucket)
            with self._db:
                self._db.execute("INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (upload_id, bucket, key, record.initiated,
                                  attrs.storage_class, json.dumps(attrs.headers),
                                  json.dumps(attrs.meta)))
        return record

    def _upload(self, bucket: str, key: bytes, upload_id: str) -> UploadRecord:
        row = self._db.execute(
            "SELECT upload_id, bucket, key, initiated, storage_class, headers, meta "
            "FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone()
        if row is None or row[1] != bucket or row[2] != key:
            raise _no_such_upload(upload_id)
        return UploadRecord(row[0], row[1], row[2], row[3],
                            Attributes(json.loads(row[5]), json.loads(row[6]), row[4]))

    def get_upload(self, bucket: str, key: bytes, upload_id: str) -> UploadRecord:
        with self._lock:
            self.require_bucket(bucket)
            return self._upload(bucket, key, upload_id)

    def put_part(self, bucket: str, key: bytes, upload_id: str, number: int,
                 writer: BlobWriter, etag: str) -> PartRecord:
        blob = writer.commit()
        part = PartRecord(number, blob, writer.size, etag, time.time())
        with self._lock:
            try:
                self.require_bucket(bucket)
                self._upload(bucket, key, upload_id)
            except BaseException:
                self.blobs.remove(blob)
                raise
            old = self._db.execute("SELECT blob FROM parts WHERE upload_id = ? AND number = ?",
                                   (upload_id, number)).fetchone()
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?)",
                                 (upload_id, number, blob, part.size, etag, part.mtime))
            if old is not None:
                self.blobs.remove(old[0])
        return part

    def list_parts(self, bucket: str, key: bytes, upload_id: str, marker: int = 0,
                   max_parts: int = 1000) -> tuple[UploadRecord, list[PartRecord], bool]:
        """(upload, parts after ``marker``, truncated)."""
        with self._lock:
            self.require_bucket(bucket)
            upload = self._upload(bucket, key, upload_id)
            rows = self._db.execute(
                "SELECT number, blob, size, etag, mtime FROM parts WHERE upload_id = ? "
                "AND number > ? ORDER BY number LIMIT ?", (upload_id, marker, max_parts + 1))
            parts = [PartRecord(*row) for row in rows]
        return upload, parts[:max_parts], len(parts) > max_parts

    def complete(self, bucket: str, key: bytes, upload_id: str,
                 requested: list[tuple[int, str]], min_part_size: int) -> ObjectRecord:
        """Make the listed parts the object ``key``. Their blobs become the object's
        as they are (see blobs.py): nothing is copied, so this is quick whatever the
        size; the parts not listed are deleted with the upload."""
        with self._lock:
            self.require_bucket(bucket)
            upload = self._upload(bucket, key, upload_id)
            stored = {row[0]: PartRecord(*row) for row in self._db.execute(
                "SELECT number, blob, size, etag, mtime FROM parts WHERE upload_id = ?",
                (upload_id,))}
            parts = _choose_parts(stored, requested, min_part_size)
            ref = join_segments([(p.blob, p.size) for p in parts])
            record = ObjectRecord(bucket, key, ref, sum(p.size for p in parts),
                                  multipart_etag([p.etag for p in parts]), time.time(), False,
                                  upload.attrs)
            with self._db:  # one transaction: the parts move from the upload to the object
                self._db.executemany("DELETE FROM parts WHERE upload_id = ? AND number = ?",
                                     [(upload_id, p.number) for p in parts])
                self._replace(record)
            self._drop_upload(upload_id)
        return record

    def abort(self, bucket: str, key: bytes, upload_id: str) -> None:
        with self._lock:
            self.require_bucket(bucket)
            self._upload(bucket, key, upload_id)
            self._drop_upload(upload_id)

    def _drop_upload(self, upload_id: str) -> None:
        """Delete an upload, its parts and their blobs. Caller holds ``_lock``."""
        blobs = [b for (b,) in self._db.execute("SELECT blob FROM parts WHERE upload_id = ?",
                                                (upload_id,))]
        with self._db:
            self._db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        for blob in blobs:
            self.blobs.remove(blob)

    def list_uploads(self, bucket: str, prefix: bytes = b"", delimiter: bytes = b"",
                     key_marker: bytes = b"", upload_id_marker: str = "",
                     max_uploads: int = 1000) -> UploadPage:
        """Unfinished uploads in key then upload-id (= creation) order, after the
        markers; with a delimiter, keys roll up into common prefixes."""
        sql = ("SELECT upload_id, bucket, key, initiated, storage_class, headers, meta "
               "FROM uploads WHERE bucket = ? AND key >= ?")
        args: list = [bucket, prefix]
        stop = successor(prefix) if prefix else None
        if stop is not None:
            sql += " AND key < ?"
            args.append(stop)
        with self._lock:
            self.require_bucket(bucket)
            rows = self._db.execute(sql + " ORDER BY key, upload_id", args).fetchall()
        uploads = [UploadRecord(r[0], r[1], r[2], r[3],
                                Attributes(json.loads(r[5]), json.loads(r[6]), r[4]))
                   for r in rows]
        return _upload_page(uploads, prefix, delimiter, key_marker, upload_id_marker,
                            max_uploads)


class AppendSession:
    """One APPEND request in progress (see ``Store.appending``): bytes go to the end of
    the existing blob, or to a new blob for a new key. Owned by one thread."""

    def __init__(self, store: Store, bucket: str, key: bytes, position: int,
                 current: ObjectRecord | None, attrs: Attributes) -> None:
        self.store, self.bucket, self.key = store, bucket, key
        self.position, self.current, self.attrs = position, current, attrs
        self.written = 0
        self.writer: BlobWriter | None = None
        self._fd: int | None = None
        self._done = False
        if current is None:
            self.writer = store.blobs.writer()
        else:
            self._fd = os.open(store.blobs.path(current.blob), os.O_WRONLY)
            # Bytes past the recorded size are leftovers of a failed append.
            os.ftruncate(self._fd, position)

    def write(self, data: bytes) -> None:
        if self.writer is not None:
            self.writer.write(data)
        else:
            view = memoryview(data)
            while view:
                n = os.pwrite(self._fd, view, self.position + self.written)
                view = view[n:]
                self.written += n
            return
        self.written += len(data)

    def commit(self, chunk_md5: str) -> ObjectRecord:
        record = self.store._commit_append(self, chunk_md5)
        self._done = True
        return record

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.writer is not None and not self._done:
            self.writer.discard()


def _check_append(current: ObjectRecord | None, key: bytes, position: int) -> None:
    if current is not None and not current.appendable:
        raise CosServerError("ObjectNotAppendable", "The object is not appendable: "
                             f"{key.decode('utf-8', 'replace')}")
    length = current.size if current is not None else 0
    if position != length:
        raise CosServerError("AppendPositionErr", f"Position {position} does not match the "
                             f"object length {length}",
                             headers={"x-cos-next-append-position": str(length)})


def _choose_parts(stored: dict[int, PartRecord], requested: list[tuple[int, str]],
                  min_part_size: int) -> list[PartRecord]:
    """The parts a Complete request lists, checked against what was uploaded."""
    numbers = [number for number, _ in requested]
    if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
        raise CosServerError("InvalidPartOrder", "The list of parts was not in ascending "
                             "order. Parts must be ordered by part number.")
    parts = []
    for number, etag in requested:
        part = stored.get(number)
        if part is None or part.etag != etag.strip('"'):
            raise CosServerError("InvalidPart", f"Part {number} was not uploaded or its "
                                 "ETag does not match")
        parts.append(part)
    for part in parts[:-1]:
        if part.size < min_part_size:
            raise CosServerError("EntityTooSmall", f"Part {part.number} is {part.size} "
                                 f"bytes; every part but the last must be at least "
                                 f"{min_part_size} bytes")
    return parts


def _upload_page(uploads: list[UploadRecord], prefix: bytes, delimiter: bytes,
                 key_marker: bytes, upload_id_marker: str, max_uploads: int) -> UploadPage:
    def after_markers(u: UploadRecord) -> bool:
        if not key_marker:
            return True
        if upload_id_marker and u.key == key_marker:
            return u.upload_id > upload_id_marker
        return u.key > key_marker

    page = UploadPage([], [], False, None, None)
    last: UploadRecord | bytes | None = None
    for upload in filter(after_markers, uploads):
        rest = upload.key[len(prefix):]
        cut = rest.find(delimiter) if delimiter else -1
        common = prefix + rest[: cut + len(delimiter)] if cut >= 0 else None
        if common is not None and (common in page.common_prefixes or common <= key_marker):
            continue
        if len(page.uploads) + len(page.common_prefixes) == max_uploads:
            page.is_truncated = True
            break
        if common is not None:
            page.common_prefixes.append(common)
            last = common
        else:
            page.uploads.append(upload)
            last = upload
    if page.is_truncated:
        if isinstance(last, UploadRecord):
            page.next_key_marker, page.next_upload_id_marker = last.key, last.upload_id
        else:
            page.next_key_marker = last
    return page
