"""Deferred metadata (:mod:`cosfs.deferred_meta`) against the real local server,
without FUSE: changes that share one copy, an object changed meanwhile, and the
recovery of changes a crash left in the journal."""

from __future__ import annotations

import stat

import pytest
import trio

from cosfs import meta
from cosfs.aio import AsyncClient
from cosfs.deferred_meta import DeferredMetadata
from cosfs.journal import Journal

DELAY = 0.05


class Seen:
    """What the deferred metadata told its owner."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, str]] = []
        self.obsolete: list[int] = []

    def deferred(self, client, journal: Journal | None) -> DeferredMetadata:
        d = DeferredMetadata(AsyncClient(client, 4), DELAY,
                             lambda key, etag, attr: self.stored.append((key, etag)),
                             self.obsolete.append)
        d.journal = journal
        return d


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def file_attr(client, key: str, mode: int) -> meta.Attr:
    attr = meta.attr_from_object(client.head_object(key), meta.Defaults())
    attr.mode = stat.S_IFREG | mode
    return attr


def test_changes_within_the_delay_share_one_copy(client, cos_server, journal):
    client.put_object("f", b"data")
    seen = Seen()

    async def main() -> None:
        d = seen.deferred(client, journal)
        d.defer(7, "f", file_attr(client, "f", 0o600), "text/plain", known_type=True)
        assert [r.key for r in journal.metadata()] == ["f"]  # before it returns
        later = file_attr(client, "f", 0o640)
        later.mtime_ns, later.mtime_set = 5 * 10**9, True
        d.defer(7, "f", later, "text/plain", known_type=True)
        cos_server.reset_stats()
        await trio.sleep(DELAY * 4)
        await d.settle(7)
        assert 7 not in d

    trio.run(main)
    assert cos_server.stats()["PutObjectCopy"]["count"] == 1
    head = client.head_object("f")
    assert head.metadata["mode"] == str(stat.S_IFREG | 0o640)
    assert head.metadata["mtime"] == "5"
    assert seen.stored == [("f", head.etag)] and seen.obsolete == []
    assert journal.metadata() == []
    assert client.get_object("f") == b"data"


def test_an_object_replaced_meanwhile_keeps_its_own_metadata(client, journal):
    client.put_object("f", b"old", metadata={"mode": str(stat.S_IFREG | 0o644)})
    attr = file_attr(client, "f", 0o600)
    seen = Seen()

    async def main() -> None:
        d = seen.deferred(client, journal)
        d.defer(3, "f", attr, "text/plain", known_type=True)
        client.put_object("f", b"new", metadata={"mode": str(stat.S_IFREG | 0o755)})
        await d.apply(3)

    trio.run(main)
    assert client.get_object("f") == b"new"
    assert client.head_object("f").metadata["mode"] == str(stat.S_IFREG | 0o755)
    assert seen.obsolete == [3] and seen.stored == []
    assert journal.metadata() == []


def test_a_change_left_by_a_crash_is_stored_at_the_next_mount(client, journal):
    client.put_object("kept", b"1")
    client.put_object("replaced", b"2")
    seen = Seen()

    async def crashed() -> None:
        d = seen.deferred(client, journal)
        d.delay = 3600.0  # the mount dies long before the copy would go
        d.defer(1, "kept", file_attr(client, "kept", 0o600), "text/plain", known_type=True)
        d.defer(2, "replaced", file_attr(client, "replaced", 0o600), "text/plain",
                known_type=True)

    trio.run(crashed)
    client.put_object("replaced", b"3")  # by another client, before the next mount
    stored = trio.run(seen.deferred(client, journal).recover)
    assert stored == 1
    assert client.head_object("kept").metadata["mode"] == str(stat.S_IFREG | 0o600)
    assert "mode" not in client.head_object("replaced").metadata
    assert journal.metadata() == []
