"""The crash journal: SQLite rows, the extent log, and recovery after a real SIGKILL
of a process that was writing (against the real cosfs-server)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from conftest import REGION, SECRET_ID, SECRET_KEY, _env, make_client
from datapath_util import KiB, small_tuning, with_cache

from cosfs.aio import AsyncClient
from cosfs.journal import ExtentLog, Journal, StagedRecord
from cosfs.ranges import DirtyMap
from cosfs.writer import WriteCache


def test_journal_rows_round_trip(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    rec = StagedRecord(ino=7, key="a/b", name="n1", base_key="a/b", base_etag="e1",
                       base_size=10, metadata={"mode": "33188"}, content_type="text/plain")
    rid = j.add_file(rec)
    j.add_upload("u1", "a/b", rid)
    rec.key, rec.base_etag = "a/c", "e2"
    j.update_file(rec)
    j.close()

    j = Journal(tmp_path / "j.sqlite")  # what a restarted mount sees
    (got,) = j.files()
    assert (got.id, got.key, got.base_etag, got.metadata) == (rid, "a/c", "e2",
                                                               {"mode": "33188"})
    assert [(u.upload_id, u.staged_id) for u in j.uploads()] == [("u1", rid)]
    j.remove_upload("u1")
    j.remove_file(rid)
    assert j.files() == [] and j.uploads() == []
    for i in range(1200):  # more than one statement's worth of keys to remove
        j.put_old_key(f"old/{i}", f"e{i}")
    j.put_old_key("old/0", "e-again")  # renamed away again: the newer object counts
    j.close()

    j = Journal(tmp_path / "j.sqlite")
    old = j.old_keys()
    assert len(old) == 1200 and old[0] == ("old/1", "e1") and old[-1] == ("old/0", "e-again")
    j.remove_old_keys([f"old/{i}" for i in range(1, 1200)])
    assert j.old_keys() == [("old/0", "e-again")]
    j.close()


def test_a_move_becomes_old_keys_in_one_transaction(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.put_move("a/", "b/", tree=True)
    rec = StagedRecord(ino=3, key="a/x", name="n1")
    j.add_file(rec)
    assert j.holds_changes() and j.moves() == [("a/", "b/", True)]
    rec.key = "b/x"
    j.end_move("a/", [("a/", "e0"), ("a/x", "e1")], [rec])
    j.close()

    j = Journal(tmp_path / "j.sqlite")
    assert j.moves() == []
    assert j.old_keys() == [("a/", "e0"), ("a/x", "e1")]
    assert [f.key for f in j.files()] == ["b/x"]
    j.put_move("c", "d", tree=False)
    with pytest.raises(sqlite3.IntegrityError):  # a bad row undoes the whole change
        j.end_move("c", [("c", None)])  # type: ignore[list-item]
    assert j.moves() == [("c", "d", False)]
    assert len(j.old_keys()) == 2
    j.put_old_key("after", "e")  # the journal goes on working
    j.close()


def test_extent_log_replays_to_the_live_state(tmp_path: Path) -> None:
    rng = random.Random(5)
    live = DirtyMap(1000)
    log = ExtentLog(tmp_path / "x.log")
    for _ in range(300):
        if rng.random() < 0.8:
            off, n = rng.randrange(3000), rng.randrange(1, 200)
            live.write(off, n)
            log.write(off, n)
        else:
            size = rng.randrange(3000)
            live.truncate(size)
            log.truncate(size)
    replayed = ExtentLog.replay(log.path, 1000)
    assert (replayed.size, replayed.dirty) == (live.size, live.dirty)

    log.rewrite(live.size, live.dirty)  # compaction keeps the meaning
    assert log.records == len(live.dirty) + 1
    log.write(5000, 1)
    live.write(5000, 1)
    replayed = ExtentLog.replay(log.path, 1000)
    assert (replayed.size, replayed.dirty) == (live.size, live.dirty)
    log.clear()
    assert not ExtentLog.replay(log.path, 1000).changed
    log.close()


def test_extent_log_stops_at_a_torn_record(tmp_path: Path) -> None:
    log = ExtentLog(tmp_path / "x.log")
    log.write(0, 10)
    log.write(100, 10)
    log.close()
    raw = bytearray((tmp_path / "x.log").read_bytes())
    raw[-1] ^= 0xFF  # the last record's CRC no longer matches
    (tmp_path / "x.log").write_bytes(bytes(raw) + b"\0" * 7)
    dm = ExtentLog.replay(tmp_path / "x.log", 0)
    assert list(dm.dirty) == [(0, 10)] and dm.size == 10
    assert not ExtentLog.replay(tmp_path / "missing.log", 5).changed


# -- SIGKILL of a writing process ------------------------------------------------------

WRITER = textwrap.dedent("""
    import json, os, sys, trio
    from cosfs.aio import AsyncClient
    from cosfs.cos import CosClient, CosConfig
    from cosfs.cos.types import ObjectInfo
    from cosfs.tuning import Tuning
    from cosfs.writer import WriteCache

    spec = json.loads(sys.argv[1])

    async def main():
        client = CosClient(CosConfig(**spec["config"]))
        cache = WriteCache(spec["cache"], AsyncClient(client), Tuning(**spec["tuning"]))
        base = client.head_object(spec["key"]) if spec["existing"] else None
        f = await cache.open(1, spec["key"], base)
        for off, n, seed in spec["writes"]:
            await f.write(off, bytes((seed + i) % 251 for i in range(n)))
        if spec["truncate"] is not None:
            await f.truncate(spec["truncate"])
        print("written", flush=True)
        await trio.sleep(3600)

    trio.run(main)
""")


def _expected(base: bytes, writes, truncate) -> bytes:
    data = bytearray(base)
    for off, n, seed in writes:
        if off > len(data):
            data += bytes(off - len(data))
        data[off:off + n] = bytes((seed + i) % 251 for i in range(n))
    if truncate is not None:
        data = data[:truncate] + bytes(max(0, truncate - len(data)))
    return bytes(data)


def _write_and_kill(server, bucket: str, cache: Path, key: str, existing: bool, writes,
                    truncate=None) -> None:
    t = small_tuning()
    spec = {
        "config": dict(secret_id=SECRET_ID, secret_key=SECRET_KEY, bucket=bucket,
                       region=REGION, endpoint=server.url),
        "cache": str(cache), "key": key, "existing": existing, "writes": writes,
        "truncate": truncate,
        "tuning": {k: getattr(t, k) for k in ("part_size", "multipart_threshold",
                                               "fill_block", "read_chunk")},
    }
    proc = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(spec)],
                            stdout=subprocess.PIPE, env=_env(), text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _recover(server, bucket: str, cache: Path):
    client = make_client(server, bucket)

    async def main():
        wc = WriteCache(cache, AsyncClient(client), small_tuning())
        report = await wc.recover()
        status = wc.status()
        await wc.shutdown()
        return report, status

    return trio.run(main)


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "edited-file"])
def test_sigkill_after_write_recovers_every_accepted_byte(cos_server, bucket, tmp_path,
                                                          existing) -> None:
    client = make_client(cos_server, bucket)
    base = random.Random(1).randbytes(900 * KiB) if existing else b""
    if existing:
        client.put_object("dir/file.bin", base)
    writes = [(0, 70 * KiB, 1), (300 * KiB, 5, 2), (850 * KiB, 200 * KiB, 3),
              (1300 * KiB, 10, 4)]  # the last one leaves a hole
    _write_and_kill(cos_server, bucket, tmp_path / "cache", "dir/file.bin", existing, writes)

    cos_server.reset_stats()
    report, status = _recover(cos_server, bucket, tmp_path / "cache")
    assert report.uploaded == ["dir/file.bin"] and not report.preserved
    assert client.get_object("dir/file.bin") == _expected(base, writes, None)
    if existing:  # unchanged ranges came from the old object, not from the upload
        stats = cos_server.stats()
        assert stats.get("UploadPartCopy", {}).get("count", 0) >= 1
    assert status["dirty_files"] == 0 and status["uploads"] == []
    # Nothing is left to do a second time.
    report, _ = _recover(cos_server, bucket, tmp_path / "cache")
    assert not report
    assert sorted(os.listdir(tmp_path / "cache" / "staging")) == []


def test_sigkill_after_truncate_recovers_the_truncation(cos_server, bucket, tmp_path) -> None:
    client = make_client(cos_server, bucket)
    base = random.Random(2).randbytes(300 * KiB)
    client.put_object("t.bin", base)
    writes = [(10, 3, 9)]
    _write_and_kill(cos_server, bucket, tmp_path / "cache", "t.bin", True, writes,
                    truncate=100 * KiB)
    report, _ = _recover(cos_server, bucket, tmp_path / "cache")
    assert report.uploaded == ["t.bin"]
    assert client.get_object("t.bin") == _expected(base, writes, 100 * KiB)


def test_object_changed_meanwhile_is_kept_locally_not_overwritten(cos_server, bucket,
                                                                  tmp_path) -> None:
    client = make_client(cos_server, bucket)
    client.put_object("c/x.txt", b"old contents " * 100)
    writes = [(0, 20, 7)]
    _write_and_kill(cos_server, bucket, tmp_path / "cache", "c/x.txt", True, writes)
    client.put_object("c/x.txt", b"someone else's version")

    report, _ = _recover(cos_server, bucket, tmp_path / "cache")
    assert report.uploaded == []
    ((key, path),) = report.preserved
    assert key == "c/x.txt" and path.is_relative_to(tmp_path / "cache" / "recovered")
    assert path.name == "x.txt" and path.read_bytes()[:20] == _expected(b"", writes, None)
    assert client.get_object("c/x.txt") == b"someone else's version"


def test_new_file_created_meanwhile_is_kept_locally(cos_server, bucket, tmp_path) -> None:
    client = make_client(cos_server, bucket)
    writes = [(0, 1000, 3)]
    _write_and_kill(cos_server, bucket, tmp_path / "cache", "n.txt", False, writes)
    client.put_object("n.txt", b"theirs")
    report, _ = _recover(cos_server, bucket, tmp_path / "cache")
    assert [k for k, _ in report.preserved] == ["n.txt"]
    assert report.preserved[0][1].read_bytes() == _expected(b"", writes, None)
    assert client.get_object("n.txt") == b"theirs"


def test_recover_aborts_uploads_the_journal_knows(cos_server, bucket, tmp_path) -> None:
    client = make_client(cos_server, bucket)
    upload_id = client.create_multipart_upload("big.bin")
    client.upload_part("big.bin", upload_id, 1, b"x" * 70 * KiB)
    (tmp_path / "cache").mkdir()
    j = Journal(tmp_path / "cache" / "journal.sqlite")
    j.add_upload(upload_id, "big.bin", None)
    j.close()
    other = client.create_multipart_upload("other.bin")  # not ours: left alone
    report, _ = _recover(cos_server, bucket, tmp_path / "cache")
    assert report.aborted_uploads == 1
    assert [u.upload_id for u in client.list_multipart_uploads()] == [other]


def test_cache_directory_is_exclusive(cos_server, bucket, tmp_path) -> None:
    client = AsyncClient(make_client(cos_server, bucket))

    async def main():
        first = WriteCache(tmp_path / "c", client, small_tuning())
        with pytest.raises(RuntimeError, match="used by another mount"):
            WriteCache(tmp_path / "c", client, small_tuning())
        await first.shutdown()
        second = WriteCache(tmp_path / "c", client, small_tuning())
        await second.shutdown()

    trio.run(main)



def test_long_lived_file_keeps_a_short_log_and_survives_shutdown(cos_server, bucket,
                                                                 tmp_path, monkeypatch):
    from cosfs import writer

    monkeypatch.setattr(writer, "_LOG_COMPACT_AT", 50)
    client = make_client(cos_server, bucket)
    rng = random.Random(4)
    model = bytearray(64 * KiB)

    async def write_without_flush(cache: WriteCache) -> int:
        f = await cache.open(1, "db.bin", None)
        await f.write(0, bytes(model))
        for _ in range(1000):
            off = rng.randrange(len(model) - 100)
            data = rng.randbytes(rng.randrange(1, 100))
            model[off:off + len(data)] = data
            await f.write(off, data)
        return (tmp_path / "c" / "staging" / f"{f.name}.log").stat().st_size

    log_size = with_cache(cos_server, bucket, tmp_path / "c", write_without_flush)
    assert log_size < 200 * 21  # compacted, not 1001 records
    assert client.list_objects().contents == []  # shut down without a flush...
    report, _ = _recover(cos_server, bucket, tmp_path / "c")
    assert report.uploaded == ["db.bin"]  # ...and uploaded at the next start
    assert client.get_object("db.bin") == model


def test_recover_can_abort_stale_uploads_under_the_prefix(cos_server, bucket, tmp_path):
    client = make_client(cos_server, bucket)
    ours = client.create_multipart_upload("mnt/stale.bin")
    client.create_multipart_upload("elsewhere/keep.bin")
    t = small_tuning(abort_stale_uploads=True, stale_upload_age=0, upload_prefix="mnt/")

    async def nothing(cache: WriteCache) -> None:
        pass

    with_cache(cos_server, bucket, tmp_path / "c", nothing, t)
    left = {u.key: u.upload_id for u in client.list_multipart_uploads()}
    assert left.keys() == {"elsewhere/keep.bin"} and ours not in left.values()
