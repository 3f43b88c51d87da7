"""Server-side copies (:mod:`cosfs.copies`) against the real local server, without
FUSE: the part-by-part copy used above COS's 5 GB single-copy limit (exercised here
with the threshold lowered, not with 5 GB), and the copy of appendable objects COS
cannot copy."""

from __future__ import annotations

import functools
import os
import stat
import time
from dataclasses import replace

import pytest
import trio

from cosfs import copies, meta
from cosfs.aio import AsyncClient
from cosfs.cos import CosError
from cosfs.journal import Journal
from cosfs.moves import Moves
from cosfs.old_keys import OldKeys


@pytest.fixture
def aclient(client) -> AsyncClient:
    return AsyncClient(client, 8)


def test_part_by_part_copy_above_the_single_copy_limit(aclient, client, cos_server,
                                                       monkeypatch):
    monkeypatch.setattr(copies, "COPY_LIMIT", 256 * 1024)
    monkeypatch.setattr(copies, "COPY_PART", 100 * 1024)
    data = os.urandom(1024 * 1024 + 17)
    attr = meta.Attr(mode=stat.S_IFREG | 0o640, uid=3, gid=4, size=len(data))
    client.put_object("src", data, metadata=meta.metadata_for(attr))
    cos_server.reset_stats()
    etag = trio.run(copies.copy_object, aclient, "src", "dst", attr)
    assert client.get_object("dst") == data
    head = client.head_object("dst")
    assert head.etag == etag and head.metadata["mode"] == str(stat.S_IFREG | 0o640)
    stats = cos_server.stats()
    assert stats["UploadPartCopy"]["count"] == 11
    assert stats.get("PutObjectCopy", {}).get("count", 0) == 0
    assert client.list_multipart_uploads() == []


def test_appendable_objects_are_copied_by_appending(aclient, client):
    client.append_object("log", 0, b"first line\n")
    client.append_object("log", 11, b"second line\n")
    info = client.head_object("log")
    attr = meta.attr_from_object(info, meta.Defaults())
    assert attr.appendable
    trio.run(copies.copy_object, aclient, "log", "log2", attr)
    assert client.get_object("log2") == b"first line\nsecond line\n"
    assert client.head_object("log2").appendable  # still appendable after the copy


def test_a_failed_part_aborts_the_copy_and_leaves_nothing(aclient, client, monkeypatch):
    monkeypatch.setattr(copies, "COPY_LIMIT", 256 * 1024)
    monkeypatch.setattr(copies, "COPY_PART", 100 * 1024)
    # The source went after it was listed: every Upload Part - Copy gets a 404.
    attr = meta.Attr(mode=stat.S_IFREG | 0o644, uid=0, gid=0, size=1024 * 1024, etag="0" * 32,
                     content_type="application/octet-stream")
    with pytest.raises(CosError) as err:
        trio.run(copies.copy_object, aclient, "gone", "dst", attr)
    assert err.value.status == 404
    assert client.list_multipart_uploads() == []
    assert client.list_objects().contents == []


def test_a_rewriting_copy_of_a_changed_object_fails_and_writes_nothing(aclient, client):
    old = client.put_object("src", b"one")
    client.put_object("src", b"two")  # another client replaced it meanwhile
    attr = meta.Attr(mode=stat.S_IFREG | 0o600, uid=0, gid=0, size=3, etag=old,
                     content_type="application/octet-stream")
    copy = functools.partial(copies.copy_object, aclient, "src", "dst", attr,
                             rewrite=True, if_match=old)
    with pytest.raises(CosError) as err:
        trio.run(copy)
    assert err.value.status == 412
    assert [o.key for o in client.list_objects().contents] == ["src"]


def test_a_big_file_rename_cut_short_is_finished_by_the_next_mount(aclient, client,
                                                                   tmp_path, monkeypatch):
    """A crash during a copy by parts leaves the move in the journal and an open
    multipart upload under the new name: the recovery aborts that upload, copies
    the file whole and hands the old key to the old-key recovery."""
    monkeypatch.setattr(copies, "COPY_LIMIT", 256 * 1024)
    monkeypatch.setattr(copies, "COPY_PART", 100 * 1024)
    data = os.urandom(300 * 1024)
    client.put_object("big", data)
    client.create_multipart_upload("big.1")  # what the dead mount's copy had begun
    journal = Journal(tmp_path / "journal.sqlite")
    journal.put_move("big", "big.1", tree=False)
    old_keys = OldKeys(aclient)
    old_keys.journal = journal
    moves = Moves(aclient, old_keys, meta.Defaults(), 4)

    async def recover() -> tuple[int, int]:
        return await moves.recover(), await old_keys.recover()

    assert trio.run(recover) == (1, 1)
    assert client.list_multipart_uploads() == []
    assert [o.key for o in client.list_objects().contents] == ["big.1"]
    assert client.get_object("big.1") == data
    assert journal.moves() == [] and journal.old_keys() == []
    journal.close()


def test_an_appendable_copy_cut_short_deletes_what_it_appended(aclient, client,
                                                               monkeypatch):
    """The source is shorter than its attributes say (another client replaced it
    after it was looked at): the copy fails once it has appended what there was,
    and takes that half back off the new name."""
    monkeypatch.setattr(copies, "_APPEND_CHUNK", 16)
    client.append_object("log", 0, b"first line\nsecond line\n")  # 23 bytes
    attr = meta.attr_from_object(client.head_object("log"), meta.Defaults())
    with pytest.raises(CosError):
        trio.run(copies.copy_object, aclient, "log", "log2", replace(attr, size=40))
    assert [o.key for o in client.list_objects().contents] == ["log"]


def test_a_recovery_whose_appendable_copy_is_cut_in_leaves_no_mixed_file(
        aclient, client, cos_server, tmp_path, monkeypatch):
    """The recovery of an appendable file's rename copies it again; an append of
    the dead mount still in flight lands in the middle, so the next append of
    the copy is refused (position mismatch). The file stays whole under its old
    name, and nothing is left under the new one: not half of it mixed with the
    late bytes."""
    monkeypatch.setattr(copies, "_APPEND_CHUNK", 16)
    data = os.urandom(40)
    client.append_object("log", 0, data)
    client.put_object("log.1", b"what the dead mount had appended")
    journal = Journal(tmp_path / "journal.sqlite")
    journal.put_move("log", "log.1", tree=False)
    old_keys = OldKeys(aclient)
    old_keys.journal = journal
    moves = Moves(aclient, old_keys, meta.Defaults(), 4)
    cos_server.set_faults("GetObject", latency_ms=300)

    def late_append() -> None:
        deadline = time.monotonic() + 20  # a thread cannot be cancelled: bounded
        while time.monotonic() < deadline:  # until the recovery appended its first chunk
            try:
                if client.head_object("log.1").size == 16:
                    client.append_object("log.1", 16, b"late")
                    return
            except CosError:
                pass
            time.sleep(0.01)

    async def recover() -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, late_append)
                await moves.recover()

    trio.run(recover)
    assert [o.key for o in client.list_objects().contents] == ["log"]
    assert client.get_object("log") == data
    assert journal.moves() == []
    journal.close()
