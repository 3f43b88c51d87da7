"""Namespace copies against the real local server, without FUSE: the part-by-part
copy used above COS's 5 GB single-copy limit (exercised here with the threshold
lowered, not with 5 GB), and the copy of appendable objects COS cannot copy."""

from __future__ import annotations

import os
import stat

import pytest
import trio

from cosfs import meta, namespace
from cosfs.aio import AsyncClient
from cosfs.namespace import Namespace


@pytest.fixture
def ns(client) -> Namespace:
    return Namespace(AsyncClient(client, 8), "", meta.Defaults())


def test_part_by_part_copy_above_the_single_copy_limit(ns, client, cos_server, monkeypatch):
    monkeypatch.setattr(namespace, "COPY_LIMIT", 256 * 1024)
    monkeypatch.setattr(namespace, "COPY_PART", 100 * 1024)
    data = os.urandom(1024 * 1024 + 17)
    attr = meta.Attr(mode=stat.S_IFREG | 0o640, uid=3, gid=4, size=len(data))
    client.put_object("src", data, metadata=meta.metadata_for(attr))
    cos_server.reset_stats()
    etag = trio.run(ns.copy_object, "src", "dst", attr)
    assert client.get_object("dst") == data
    head = client.head_object("dst")
    assert head.etag == etag and head.metadata["mode"] == str(stat.S_IFREG | 0o640)
    stats = cos_server.stats()
    assert stats["UploadPartCopy"]["count"] == 11
    assert stats.get("PutObjectCopy", {}).get("count", 0) == 0
    assert client.list_multipart_uploads() == []


def test_appendable_objects_are_copied_by_appending(ns, client):
    client.append_object("log", 0, b"first line\n")
    client.append_object("log", 11, b"second line\n")
    info = client.head_object("log")
    attr = meta.attr_from_object(info, meta.Defaults())
    assert attr.appendable
    trio.run(ns.copy_object, "log", "log2", attr)
    assert client.get_object("log2") == b"first line\nsecond line\n"
    assert client.head_object("log2").appendable  # still appendable after the copy
