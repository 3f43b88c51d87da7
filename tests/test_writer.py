"""The write cache against the real cosfs-server: which requests each kind of upload
costs, byte-for-byte integrity (sequential, random, sparse, truncate), failure
handling, space limits, write-back and status."""

from __future__ import annotations

import errno
import os
import random

import pytest
import trio
from conftest import make_client
from datapath_util import KiB, MiB, md5, op_stat, small_tuning, with_cache

from cosfs import writer
from cosfs.writer import WriteCache


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` random-looking bytes; a repeated block (of an odd length, so parts
    differ) keeps 1 GiB cheap to make."""
    block = random.Random(seed).randbytes(min(size, MiB + 13))
    return (block * (size // len(block) + 1))[:size]


async def write_in_chunks(f, data: bytes, offset: int = 0, seed: int = 0,
                          max_chunk: int = 128 * KiB) -> None:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        n = rng.randrange(1, max_chunk + 1)
        assert await f.write(offset + pos, data[pos:pos + n]) == len(data[pos:pos + n])
        pos += n


def test_small_new_file_is_one_put(cos_server, bucket, client, tmp_path) -> None:
    data = random.randbytes(10 * KiB)

    async def body(cache: WriteCache):
        f = await cache.open(1, "small.txt", None)
        await f.write(0, data)
        cos_server.reset_stats()
        info = await f.flush({"mode": "33188"}, "text/plain")
        again = await f.flush({"mode": "33188"}, "text/plain")
        await cache.release(f)
        return info, again

    info, again = with_cache(cos_server, bucket, tmp_path / "c", body)
    assert again is None  # nothing changed since
    assert op_stat(cos_server, "PutObject") == 1
    assert op_stat(cos_server, "InitiateMultipartUpload") == 0
    head = client.head_object("small.txt")
    assert (info.size, info.etag) == (head.size, head.etag) == (len(data), head.etag)
    assert head.metadata == {"mode": "33188"} and head.content_type == "text/plain"
    assert client.get_object("small.txt") == data


def test_empty_new_file_is_created(cos_server, bucket, client, tmp_path) -> None:
    async def body(cache: WriteCache):
        f = await cache.open(1, "empty", None)
        assert f.dirty
        await f.flush()
        assert not f.dirty
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body)
    assert client.get_object("empty") == b""


@pytest.mark.parametrize("size", [6 * MiB + 77,
                                  pytest.param(1 << 30, marks=pytest.mark.slow)],
                         ids=["6MiB", "1GiB"])
def test_sequential_write_uploads_parts_in_background(cos_server, bucket, client, tmp_path,
                                                       size) -> None:
    t = small_tuning() if size < 100 * MiB else small_tuning(part_size=8 * MiB,
                                                              multipart_threshold=8 * MiB)
    data = pattern(size)

    async def body(cache: WriteCache):
        f = await cache.open(1, "seq.bin", None)
        cos_server.reset_stats()
        await write_in_chunks(f, data)
        before_flush = op_stat(cos_server, "UploadPart")
        info = await f.flush()
        await cache.release(f)
        return before_flush, info

    before_flush, info = with_cache(cos_server, bucket, tmp_path / "c", body, t)
    stats = cos_server.stats()
    parts = -(-size // t.part_size)
    assert stats["InitiateMultipartUpload"]["count"] == 1
    assert stats["UploadPart"]["count"] == parts  # each part exactly once
    assert stats["UploadPart"]["max_concurrent"] > 1
    assert before_flush > 0, "no part went up while the writer was still writing"
    assert stats["CompleteMultipartUpload"]["count"] == 1
    assert "PutObject" not in stats
    assert info.size == size and info.etag.endswith(f"-{parts}")
    got = client.get_object("seq.bin")
    assert len(got) == size and md5(got) == md5(data)


def test_rewrite_of_an_uploaded_part_uploads_it_again(cos_server, bucket, client,
                                                      tmp_path) -> None:
    t = small_tuning()
    data = bytearray(random.randbytes(2 * MiB))

    async def body(cache: WriteCache):
        f = await cache.open(1, "re.bin", None)
        cos_server.reset_stats()
        await write_in_chunks(f, bytes(data), max_chunk=64 * KiB)
        with trio.fail_after(10):  # let the background parts go up
            while op_stat(cos_server, "UploadPart") < 2 * MiB // t.part_size - 1:
                await trio.sleep(0.02)
        await f.write(200 * KiB, b"NEW")  # inside part 2, already uploaded
        data[200 * KiB:200 * KiB + 3] = b"NEW"
        await f.flush()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body, t)
    assert op_stat(cos_server, "UploadPart") == 2 * MiB // t.part_size + 1
    assert client.get_object("re.bin") == data


def test_append_to_appendable_object_is_one_append(cos_server, bucket, client,
                                                   tmp_path) -> None:
    head = random.randbytes(300 * KiB)
    client.append_object("log.txt", 0, head)
    base = client.head_object("log.txt")
    assert base.appendable
    tail = b"new line\n" * 5000

    async def body(cache: WriteCache):
        f = await cache.open(1, "log.txt", base)
        await write_in_chunks(f, tail, offset=base.size, max_chunk=4 * KiB)
        cos_server.reset_stats()
        info = await f.flush()
        await cache.release(f)
        return info

    info = with_cache(cos_server, bucket, tmp_path / "c", body)
    stats = cos_server.stats()
    assert stats["AppendObject"]["count"] == 1
    assert stats["AppendObject"]["bytes_in"] <= len(tail) + 4 * KiB  # only the new bytes
    for op in ("PutObject", "InitiateMultipartUpload", "UploadPart"):
        assert op not in stats
    assert info.appendable and info.size == len(head) + len(tail)
    assert info.etag == client.head_object("log.txt").etag
    assert client.get_object("log.txt") == head + tail


def test_edit_inside_appendable_object_rewrites_it(cos_server, bucket, client,
                                                   tmp_path) -> None:
    client.append_object("a.txt", 0, b"0123456789")
    base = client.head_object("a.txt")

    async def body(cache: WriteCache):
        f = await cache.open(1, "a.txt", base)
        await f.write(2, b"xx")
        await f.write(10, b"tail")
        cos_server.reset_stats()
        await f.flush()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body)
    assert op_stat(cos_server, "AppendObject") == 0
    assert client.get_object("a.txt") == b"01xx456789tail"


def test_append_to_normal_object_never_converts_it(cos_server, bucket, client,
                                                   tmp_path) -> None:
    client.put_object("n.txt", b"normal ")
    base = client.head_object("n.txt")

    async def body(cache: WriteCache):
        f = await cache.open(1, "n.txt", base)
        await f.write(base.size, b"object")
        cos_server.reset_stats()
        await f.flush()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body)
    assert op_stat(cos_server, "AppendObject") == 0
    head = client.head_object("n.txt")
    assert not head.appendable
    assert client.get_object("n.txt") == b"normal object"


def test_new_append_only_file_can_be_created_appendable(cos_server, bucket, client,
                                                        tmp_path) -> None:
    async def body(cache: WriteCache):
        f = await cache.open(1, "new.log", None, append_only=True)
        await f.write(0, b"first\n")
        info = await f.flush({"mode": "33188"}, "text/plain")
        await cache.release(f)
        f = await cache.open(1, "new.log", info, append_only=True)
        await f.write(info.size, b"second\n")
        cos_server.reset_stats()
        info = await f.flush({"mode": "33188"}, "text/plain")
        await cache.release(f)
        return info

    info = with_cache(cos_server, bucket, tmp_path / "c", body,
                      small_tuning(create_appendable=True))
    assert info.appendable
    assert op_stat(cos_server, "AppendObject") == 1
    assert client.get_object("new.log") == b"first\nsecond\n"
    assert client.head_object("new.log").metadata == {"mode": "33188"}


@pytest.mark.parametrize("size_mib", [64])
def test_one_byte_edit_in_large_object_copies_unchanged_parts(cos_server, bucket, client,
                                                              tmp_path, size_mib) -> None:
    size = size_mib * MiB
    data = bytearray(random.Random(3).randbytes(size))
    client.put_object("big.bin", bytes(data), metadata={"mode": "33188"})
    base = client.head_object("big.bin")
    t = small_tuning(part_size=1 * MiB, multipart_threshold=1 * MiB)
    edit_at = 30 * MiB + 12345

    async def body(cache: WriteCache):
        f = await cache.open(1, "big.bin", base)
        cos_server.reset_stats()
        await f.write(edit_at, b"!")
        info = await f.flush({"mode": "33188"})
        await cache.release(f)
        return info

    info = with_cache(cos_server, bucket, tmp_path / "c", body, t)
    data[edit_at] = ord("!")
    stats = cos_server.stats()
    parts = size // t.part_size
    assert stats["UploadPart"]["count"] == 1
    assert stats["UploadPart"]["bytes_in"] <= t.part_size + 64 * KiB
    assert stats["UploadPartCopy"]["count"] == parts - 1
    assert stats["GetObject"]["bytes_out"] <= t.part_size  # only to fill the edited part
    assert "PutObject" not in stats
    assert info.size == size
    got = client.get_object("big.bin")
    assert md5(got) == md5(bytes(data))


def test_random_writes_reads_and_truncates_match_a_model(cos_server, bucket, client,
                                                         tmp_path) -> None:
    rng = random.Random(11)
    model = bytearray(rng.randbytes(700 * KiB))
    client.put_object("r.bin", bytes(model))
    base = client.head_object("r.bin")

    async def body(cache: WriteCache):
        f = await cache.open(1, "r.bin", base)
        for step in range(150):
            op = rng.random()
            if op < 0.55:
                off = rng.randrange(len(model) + 100 * KiB)
                data = rng.randbytes(rng.randrange(1, 40 * KiB))
                await f.write(off, data)
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off:off + len(data)] = data
            elif op < 0.65:
                size = rng.randrange(len(model) * 3 // 2 + 1)
                await f.truncate(size)
                del model[size:]
                model.extend(bytes(size - len(model)))
            else:
                off = rng.randrange(len(model) + 10)
                n = rng.randrange(1, 100 * KiB)
                assert await f.read(off, n) == bytes(model[off:off + n]), step
            assert f.size == len(model)
            if step % 50 == 49:
                await f.flush()
                assert client.get_object("r.bin") == model
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body)


def test_sparse_writes_read_as_zeros(cos_server, bucket, client, tmp_path) -> None:
    async def body(cache: WriteCache):
        f = await cache.open(1, "sparse", None)
        await f.write(3 * MiB, b"end")
        await f.write(0, b"start")
        await f.write(1 * MiB, b"middle")
        assert await f.read(5, 10) == bytes(10)
        await f.flush()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body)
    expected = bytearray(3 * MiB + 3)
    expected[0:5] = b"start"
    expected[MiB:MiB + 6] = b"middle"
    expected[3 * MiB:] = b"end"
    assert client.get_object("sparse") == expected


@pytest.mark.parametrize("sizes", [(300 * KiB, 700 * KiB), (2 * MiB, 0, 5)],
                         ids=["down-up", "up-zero-up"])
def test_truncate_up_and_down(cos_server, bucket, client, tmp_path, sizes) -> None:
    original = random.randbytes(1 * MiB)
    client.put_object("t.bin", original)
    base = client.head_object("t.bin")

    async def body(cache: WriteCache):
        f = await cache.open(1, "t.bin", base)
        for size in sizes:
            await f.truncate(size)
        await f.flush()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body)
    expected = original
    for size in sizes:
        expected = expected[:size] + bytes(max(0, size - len(expected)))
    assert client.get_object("t.bin") == expected


def test_open_with_truncate_replaces_contents(cos_server, bucket, client, tmp_path) -> None:
    client.put_object("o.txt", b"old contents")
    base = client.head_object("o.txt")

    async def body(cache: WriteCache):
        f = await cache.open(1, "o.txt", base, truncate=True)
        assert f.size == 0 and f.dirty
        await f.write(0, b"new")
        await f.flush()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body)
    assert client.get_object("o.txt") == b"new"


def test_no_staging_file_is_closed_holding_data_written_after_an_emptying(
        cos_server, bucket, client, tmp_path, monkeypatch) -> None:
    """On ext4 a file truncated to size 0 is written out to disk when it is closed:
    each small file would cost a disk write and a slow unlink. So a staging file
    is created empty (O_TRUNC), and one emptied for reuse is emptied again before
    it is closed."""
    real = {name: getattr(os, name) for name in ("ftruncate", "pwrite", "write", "close")}
    emptied: set[int] = set()  # truncated to 0, nothing written since
    refilled: set[int] = set()  # written after such a truncate
    closed_full: list[int] = []

    def ftruncate(fd: int, size: int) -> None:
        real["ftruncate"](fd, size)
        refilled.discard(fd)
        (emptied.add if size == 0 else emptied.discard)(fd)

    def wrote(name: str):
        def spy(fd: int, *args):
            if fd in emptied:
                emptied.discard(fd)
                refilled.add(fd)
            return real[name](fd, *args)
        return spy

    def close(fd: int) -> None:
        if fd in refilled:
            closed_full.append(fd)
        emptied.discard(fd)
        refilled.discard(fd)
        real["close"](fd)

    monkeypatch.setattr(os, "ftruncate", ftruncate)
    monkeypatch.setattr(os, "pwrite", wrote("pwrite"))
    monkeypatch.setattr(os, "write", wrote("write"))
    monkeypatch.setattr(os, "close", close)

    async def body(cache: WriteCache):
        # Two rounds of more files at once than the cache keeps as spares. The
        # second round opens the spares first and releases them last, when no
        # more are kept: they are deleted.
        for ino in (1, 100):
            files = [await cache.open(ino + i, f"small-{ino + i}", None) for i in range(40)]
            for i, f in enumerate(files):
                await f.write(0, b"small %d" % (ino + i))
                await f.flush()
            for f in reversed(files):
                await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body, small_tuning(max_idle_files=0))
    assert closed_full == []
    assert client.get_object("small-139") == b"small 139"


def test_a_removed_staging_file_is_reused_empty(cos_server, bucket, client,
                                                tmp_path) -> None:
    """A new staged file takes the emptied files of one removed before it instead
    of creating two: none of the old bytes show through its hole."""
    names = []

    async def body(cache: WriteCache):
        for i, (offset, data) in enumerate([(0, b"old bytes " * 1000), (5, b"new")]):
            f = await cache.open(i + 1, f"f{i}", None)
            await f.write(offset, data)
            await f.flush()
            names.append(sorted(p.name for p in cache.staging_dir.iterdir()))
            await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body, small_tuning(max_idle_files=0))
    assert names[0] == names[1] and len(names[0]) == 2  # the same data file and log
    assert client.get_object("f1") == bytes(5) + b"new"


def test_a_new_staged_file_does_not_inherit_a_leftover(cos_server, bucket, client,
                                                        tmp_path, monkeypatch) -> None:
    """A stray staging file under the new file's name is emptied: the hole before
    a write past the end reads as zeros, not as the stray's bytes."""
    monkeypatch.setattr(writer.secrets, "token_hex", lambda n: "0123456789abcdef")

    async def body(cache: WriteCache):
        (cache.staging_dir / "0123456789abcdef").write_bytes(b"stale bytes!" * 4)
        f = await cache.open(1, "sparse.bin", None)
        await f.write(10, b"x")
        await f.flush()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body)
    assert client.get_object("sparse.bin") == bytes(10) + b"x"


def test_failed_multipart_is_aborted_and_old_object_survives(fresh_server, tmp_path) -> None:
    bucket = fresh_server.bucket
    client = make_client(fresh_server, bucket)
    client.put_object("keep.bin", b"previous version")
    base = client.head_object("keep.bin")
    fresh_server.set_faults("CompleteMultipartUpload", error_rate=1.0, error_status=400)

    async def body(cache: WriteCache):
        f = await cache.open(1, "keep.bin", base, truncate=True)
        await write_in_chunks(f, random.randbytes(1 * MiB))
        with pytest.raises(OSError) as exc:
            await f.flush()
        assert exc.value.errno == errno.EIO
        assert f.dirty  # still staged: a later flush may succeed
        assert client.get_object("keep.bin") == b"previous version"
        assert client.list_multipart_uploads() == []
        fresh_server.clear_faults()
        await f.flush()
        await cache.release(f)

    with_cache(fresh_server, bucket, tmp_path / "c", body, max_retries=0)
    assert len(client.get_object("keep.bin")) == 1 * MiB
    assert client.list_multipart_uploads() == []


def test_an_upload_whose_abort_failed_is_aborted_by_the_next_mount(fresh_server,
                                                                     tmp_path) -> None:
    """The abort of a failed multipart upload fails too: the journal keeps the
    upload, so its parts do not stay on the server (and billed) for good."""
    bucket = fresh_server.bucket
    client = make_client(fresh_server, bucket)
    for op in ("CompleteMultipartUpload", "AbortMultipartUpload"):
        fresh_server.set_faults(op, error_rate=1.0, error_status=503)

    async def body(cache: WriteCache):
        f = await cache.open(1, "big.bin", None)
        await write_in_chunks(f, random.randbytes(1 * MiB))
        with pytest.raises(OSError):
            await f.flush()
        await cache.tasks.wait_idle()
        assert [u.key for u in cache.journal.uploads()] == ["big.bin"]
        f.discard()  # unlinked: only the upload is left to clean up
        await cache.release(f)

    with_cache(fresh_server, bucket, tmp_path / "c", body, max_retries=0)
    assert len(client.list_multipart_uploads()) == 1
    fresh_server.clear_faults()

    async def nothing(cache: WriteCache):
        assert cache.journal.uploads() == []

    with_cache(fresh_server, bucket, tmp_path / "c", nothing)
    assert client.list_multipart_uploads() == []


@pytest.mark.slow
@pytest.mark.parametrize("size", [1 << 30])
def test_faults_large_upload_still_byte_identical(fresh_server, tmp_path, size) -> None:
    _faulty_round_trip(fresh_server, tmp_path, size, small_tuning(part_size=8 * MiB,
                                                                  multipart_threshold=8 * MiB))


def test_faults_uploads_still_byte_identical(fresh_server, tmp_path) -> None:
    _faulty_round_trip(fresh_server, tmp_path, 3 * MiB, small_tuning())


def _faulty_round_trip(server, tmp_path, size: int, t) -> None:
    bucket = server.bucket
    client = make_client(server, bucket)
    rng = random.Random(size)
    edited = bytearray(pattern(size, seed=1))
    client.put_object("edit.bin", bytes(edited))
    base = client.head_object("edit.bin")
    fresh = pattern(size, seed=2)
    small = rng.randbytes(50 * KiB)
    server.set_faults("*", error_rate=0.1)

    async def body(cache: WriteCache):
        f = await cache.open(1, "new.bin", None)
        await write_in_chunks(f, fresh)
        await f.flush()
        await cache.release(f)
        f = await cache.open(2, "edit.bin", base)
        for off in (5, size // 2, size - 3):
            await f.write(off, b"XYZ")
            edited[off:off + 3] = b"XYZ"
        await f.flush()
        await cache.release(f)
        f = await cache.open(3, "small.bin", None)
        await f.write(0, small)
        await f.flush()
        await cache.release(f)

    with_cache(server, bucket, tmp_path / "c", body, t, max_retries=8,
               retry_base_delay=0.01)
    injected = sum(op.get("injected", 0) for op in server.stats().values())
    server.clear_faults()
    assert injected > 0
    assert md5(client.get_object("new.bin")) == md5(fresh)
    assert md5(client.get_object("edit.bin")) == md5(bytes(edited))
    assert client.get_object("small.bin") == small
    assert client.list_multipart_uploads() == []


def test_cache_full_raises_enospc_and_keeps_what_was_written(cos_server, bucket, client,
                                                             tmp_path) -> None:
    t = small_tuning(cache_limit=1 * MiB)
    first = random.randbytes(700 * KiB)

    async def body(cache: WriteCache):
        # A clean staged file of a closed inode is evicted to make room.
        old = await cache.open(1, "old.bin", None)
        await old.write(0, random.randbytes(600 * KiB))
        await old.flush()
        await cache.release(old)
        f = await cache.open(2, "full.bin", None)
        await f.write(0, first)
        assert cache.status()["idle_files"] == 0
        with pytest.raises(OSError) as exc:
            await f.write(len(first), random.randbytes(400 * KiB))
        assert exc.value.errno == errno.ENOSPC
        assert f.size == len(first)
        await f.flush()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body, t)
    assert client.get_object("full.bin") == first


def test_writeback_flush_returns_before_upload_and_fsync_is_a_barrier(
        fresh_server, tmp_path) -> None:
    bucket = fresh_server.bucket
    client = make_client(fresh_server, bucket)
    data = random.randbytes(1 * MiB)
    fresh_server.set_faults("*", latency_ms=100)

    told = []

    async def body(cache: WriteCache):
        cache.on_upload = lambda f, info: told.append((f.ino, info.etag))
        f = await cache.open(1, "wb.bin", None)
        await f.write(0, data)
        with trio.fail_after(0.5):
            assert await f.flush() is None  # no upload waited for
        assert f.dirty
        await f.fsync()
        assert not f.dirty
        assert client.get_object("wb.bin") == data
        await f.write(0, b"changed")
        await f.flush()
        await cache.release(f)  # shutdown waits for this one

    with_cache(fresh_server, bucket, tmp_path / "c", body, small_tuning(writeback=True))
    fresh_server.clear_faults()
    assert client.get_object("wb.bin") == b"changed" + data[7:]
    # The namespace hears of the background upload's result (the last one at least).
    assert told and told[-1] == (1, client.head_object("wb.bin").etag)


def test_status_shows_upload_progress(fresh_server, tmp_path) -> None:
    bucket = fresh_server.bucket
    fresh_server.set_faults("UploadPart", latency_ms=300)
    size = 2 * MiB

    async def body(cache: WriteCache):
        f = await cache.open(1, "p.bin", None)
        await f.write(0, random.randbytes(size))
        seen = []
        done = trio.Event()

        async def flush() -> None:
            await f.flush()
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush)
            while not done.is_set():
                await trio.sleep(0.05)
                seen.append(cache.status())
        await cache.release(f)
        return seen

    seen = with_cache(fresh_server, bucket, tmp_path / "c", body)
    uploads = [s["uploads"][0] for s in seen if s["uploads"]]
    assert uploads and {u["key"] for u in uploads} == {"p.bin"}
    assert all(u["bytes_total"] == size for u in uploads)
    assert 0 < uploads[-1]["bytes_done"] <= size
    assert seen[-1]["uploads"] == []
    assert seen[-1]["used_bytes"] >= size and seen[-1]["limit_bytes"] > 0


def test_discarded_file_is_never_uploaded(cos_server, bucket, client, tmp_path) -> None:
    async def body(cache: WriteCache):
        f = await cache.open(1, "gone.txt", None)
        await f.write(0, random.randbytes(1 * MiB))  # parts may already be going up
        f.discard()
        assert await f.flush() is None
        await cache.release(f)
        return cache.status()

    status = with_cache(cos_server, bucket, tmp_path / "c", body)
    assert status["open_files"] == status["idle_files"] == 0
    assert client.list_objects().contents == []
    assert client.list_multipart_uploads() == []


def test_renamed_open_file_uploads_to_new_key(cos_server, bucket, client, tmp_path) -> None:
    async def body(cache: WriteCache):
        f = await cache.open(1, "before", None)
        await f.write(0, b"payload")
        f.key = "after"
        await f.flush()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body)
    assert [o.key for o in client.list_objects().contents] == ["after"]
    assert client.get_object("after") == b"payload"


def test_reopen_reuses_clean_staged_copy(cos_server, bucket, client, tmp_path) -> None:
    data = random.randbytes(500 * KiB)
    client.put_object("re.bin", data)
    base = client.head_object("re.bin")

    async def body(cache: WriteCache):
        f = await cache.open(1, "re.bin", base)
        assert await f.read(0, len(data)) == data
        await cache.release(f)
        cos_server.reset_stats()
        g = await cache.open(1, "re.bin", base)
        assert g is f and await g.read(0, len(data)) == data
        await cache.release(g)

    with_cache(cos_server, bucket, tmp_path / "c", body)
    assert op_stat(cos_server, "GetObject") == 0


def test_truncate_during_upload_then_flush_again(fresh_server, tmp_path) -> None:
    bucket = fresh_server.bucket
    client = make_client(fresh_server, bucket)
    data = pattern(2 * MiB, seed=5)
    fresh_server.set_faults("UploadPart", latency_ms=200)

    async def body(cache: WriteCache):
        f = await cache.open(1, "cut.bin", None)
        await f.write(0, data)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(f.flush)
            await trio.sleep(0.1)  # the parts are going up
            await f.truncate(300 * KiB)
        assert f.dirty  # the upload sent the longer file
        await f.flush()
        await cache.release(f)

    with_cache(fresh_server, bucket, tmp_path / "c", body)
    fresh_server.clear_faults()
    assert client.get_object("cut.bin") == data[:300 * KiB]


def test_free_space_guard_refuses_writes(cos_server, bucket, tmp_path) -> None:
    t = small_tuning(min_free_bytes=1 << 62, min_free_ratio=1.0)  # "keep everything free"

    async def body(cache: WriteCache):
        f = await cache.open(1, "nospace", None)
        with pytest.raises(OSError) as exc:
            await f.write(0, b"x" * 4096)
        assert exc.value.errno == errno.ENOSPC
        assert f.size == 0
        f.discard()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body, t)


def test_staged_read_of_replaced_object_fails_with_eio(cos_server, bucket, client,
                                                       tmp_path) -> None:
    client.put_object("v.bin", pattern(2 * MiB, seed=1))
    base = client.head_object("v.bin")

    async def body(cache: WriteCache):
        f = await cache.open(1, "v.bin", base)
        await f.write(0, b"mine")
        client.put_object("v.bin", pattern(2 * MiB, seed=2))  # someone else's version
        with pytest.raises(OSError) as exc:
            await f.read(MiB, 10)  # would need the old object's bytes
        assert exc.value.errno == errno.EIO
        assert await f.read(0, 4) == b"mine"  # what is staged still reads
        f.discard()
        await cache.release(f)

    with_cache(cos_server, bucket, tmp_path / "c", body)
