"""The COS client against the real local ``cosfs-server`` process: every operation,
every error path, and behaviour under injected faults."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import APPID, SECRET_KEY, make_client

from cosfs.cos import CosClient, CosError, FileSlice, PartInfo

SPECIAL_KEYS = [
    "plain.txt",
    "with space",
    "100% sure",
    "c++/a+b",
    "hash#tag",
    "what?",
    "a&b=c;d",
    "腾讯云/对象 (1).txt",
    "emoji-🙂",
    "folder/",
    "deep/er/",
    "tilde~_-.",
    "'quotes\"",
]
PART = 65536  # the servers in conftest accept parts down to this size


def rand(n: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(f"{seed}".encode()).digest(n)


# -- plain operations -----------------------------------------------------------------


def test_head_bucket(cos_server, client: CosClient) -> None:
    client.head_bucket()
    missing = make_client(cos_server, f"missing-{APPID}")
    with pytest.raises(CosError) as e:
        missing.head_bucket()
    assert (e.value.status, e.value.code) == (404, "NoSuchBucket")
    with pytest.raises(CosError) as e:
        missing.list_objects()
    assert (e.value.status, e.value.code) == (404, "NoSuchBucket")


@pytest.mark.parametrize("key", SPECIAL_KEYS)
def test_any_utf8_key_round_trips(client: CosClient, key: str) -> None:
    body = f"content of {key}".encode()
    etag = client.put_object(key, body, content_type="text/plain",
                             metadata={"mode": "33188", "x-attr": "v%20w"})
    assert etag == hashlib.md5(body).hexdigest()
    info = client.head_object(key)
    assert (info.key, info.size, info.etag, info.content_type) == (
        key, len(body), etag, "text/plain")
    assert info.metadata == {"mode": "33188", "x-attr": "v%20w"}
    assert not info.appendable and info.storage_class == "STANDARD"
    assert info.last_modified > 1.6e9
    assert client.get_object(key) == body
    [entry] = client.list_objects(prefix=key).contents
    assert (entry.key, entry.size, entry.etag) == (key, len(body), etag)
    client.copy_object(key, key + ".copy")
    assert client.get_object(key + ".copy") == body
    client.delete_object(key)
    with pytest.raises(CosError) as e:
        client.head_object(key)
    assert (e.value.status, e.value.code) == (404, "NoSuchKey")


def test_ranges_and_conditions(client: CosClient) -> None:
    body = rand(1000)
    etag = client.put_object("r", body)
    assert client.get_object("r", 0, 0) == body[:1]
    assert client.get_object("r", 10, 19) == body[10:20]
    assert client.get_object("r", 990) == body[990:]
    assert client.get_object("r", 990, 5000) == body[990:]
    assert client.get_object("r", if_match=etag) == body
    assert client.head_object("r", if_match=etag).size == 1000
    with pytest.raises(CosError) as e:
        client.get_object("r", 1000)
    assert (e.value.status, e.value.code) == (416, "InvalidRange")
    with pytest.raises(CosError) as e:
        client.get_object("r", 0, 9, if_match="0" * 32)
    assert (e.value.status, e.value.code) == (412, "PreconditionFailed")
    with pytest.raises(CosError) as e:
        client.head_object("r", if_match="0" * 32)
    assert (e.value.status, e.value.code) == (412, "PreconditionFailed")  # bodiless HEAD
    with pytest.raises(CosError) as e:
        client.get_object("missing")
    assert (e.value.status, e.value.code) == (404, "NoSuchKey")
    assert e.value.request_id and e.value.operation == "GetObject" and e.value.key == "missing"


def test_stream_yields_bounded_chunks(client: CosClient) -> None:
    body = rand(3 << 20, seed=1)
    client.put_object("big", body)
    sizes = []
    digest = hashlib.md5()
    with client.get_object_stream("big", chunk_size=64 << 10) as (info, chunks):
        assert info.size == len(body) and info.etag == hashlib.md5(body).hexdigest()
        for chunk in chunks:
            sizes.append(len(chunk))
            digest.update(chunk)
    assert max(sizes) <= 64 << 10 and sum(sizes) == len(body)
    assert digest.hexdigest() == info.etag
    with client.get_object_stream("big", 100, 199) as (info, chunks):
        assert info.size == len(body)  # the object's size, not the range's
        assert b"".join(chunks) == body[100:200]
    with client.get_object_stream("big") as (_, chunks):  # leaving early is fine
        next(chunks)
    assert client.get_object("big", 5, 9) == body[5:10]  # the pool still works


def test_put_bodies(client: CosClient, tmp_path: Path) -> None:
    path = tmp_path / "data"
    data = rand(200_000, seed=2)
    path.write_bytes(data)
    with open(path, "rb") as f:
        f.seek(1000)
        client.put_object("from-file", f)  # sent from where the file stood
    assert client.get_object("from-file") == data[1000:]
    client.put_object("from-callable", lambda: open(path, "rb"))  # noqa: SIM115
    assert client.get_object("from-callable") == data
    client.put_object("from-iterable", lambda: (data[i:i + 7000] for i in range(0, 70000, 7000)))
    assert client.get_object("from-iterable") == data[:70000]
    fd = os.open(path, os.O_RDONLY)
    try:
        client.put_object("from-slice", FileSlice(fd, 5, 100))
    finally:
        os.close(fd)
    assert client.get_object("from-slice") == data[5:105]
    client.put_object("empty", b"")
    client.put_object("empty-file", io.BytesIO())
    assert client.head_object("empty").size == client.head_object("empty-file").size == 0
    assert client.get_object("empty") == b""


def test_listing_pages_prefixes_and_encoding(client: CosClient) -> None:
    keys = sorted(["a+b", "a b", "a%2B", "dir/x", "dir/y/z", "dir/y/", "é", "z"])
    for key in keys:
        client.put_object(key, b"")
    listed = [c.key for page in client.iter_list(max_keys=3) for c in page.contents]
    assert listed == sorted(keys, key=lambda k: k.encode())
    page = client.list_objects(delimiter="/")
    assert page.common_prefixes == ["dir/"]
    assert [c.key for c in page.contents] == ["a b", "a%2B", "a+b", "z", "é"]
    page = client.list_objects(prefix="dir/", delimiter="/")
    assert (page.prefix, [c.key for c in page.contents], page.common_prefixes) == (
        "dir/", ["dir/x"], ["dir/y/"])
    pages = list(client.iter_list(prefix="dir/", delimiter="/", max_keys=1))
    assert [(p.contents[0].key if p.contents else p.common_prefixes[0]) for p in pages] == [
        "dir/x", "dir/y/"]
    assert client.list_objects(marker="a+b").contents[0].key == "dir/x"  # exclusive marker


def test_append(client: CosClient) -> None:
    assert client.append_object("log", 0, b"hello ", content_type="text/plain",
                                metadata={"mode": "33188"}) == 6
    assert client.append_object("log", 6, io.BytesIO(b"world")) == 11
    info = client.head_object("log")
    assert info.appendable and info.size == 11 and info.metadata == {"mode": "33188"}
    assert client.get_object("log") == b"hello world"
    with pytest.raises(CosError) as e:
        client.append_object("log", 3, b"x")
    assert (e.value.status, e.value.code) == (409, "AppendPositionErr")
    client.put_object("normal", b"abc")
    with pytest.raises(CosError) as e:
        client.append_object("normal", 3, b"d")
    assert (e.value.status, e.value.code) == (409, "ObjectNotAppendable")


def test_copy(client: CosClient) -> None:
    etag = client.put_object("src", b"payload", content_type="text/plain",
                             metadata={"mode": "1"})
    assert client.copy_object("src", "same-meta") == etag
    info = client.head_object("same-meta")
    assert (info.metadata, info.content_type) == ({"mode": "1"}, "text/plain")
    client.copy_object("src", "new-meta", metadata={"mode": "2"}, content_type="app/x")
    info = client.head_object("new-meta")
    assert (info.metadata, info.content_type) == ({"mode": "2"}, "app/x")
    client.copy_object("src", "src", metadata={"mode": "3"})  # in place: Replaced
    assert client.head_object("src").metadata == {"mode": "3"}
    assert client.copy_object("src", "guarded", if_match=etag) == etag
    with pytest.raises(CosError) as e:
        client.copy_object("src", "guarded", if_match="0" * 32)
    assert e.value.status == 412
    with pytest.raises(CosError) as e:
        client.copy_object("no-such-source", "dst")
    assert e.value.status == 404


def test_a_copy_keeps_the_storage_class_and_headers_it_is_given(client: CosClient) -> None:
    client.put_object("ia", b"cold")
    client.copy_object("ia", "ia", metadata={}, storage_class="STANDARD_IA",
                       content_headers={"Cache-Control": "max-age=5",
                                        "Content-Disposition": "inline"})
    info = client.head_object("ia")
    assert info.storage_class == "STANDARD_IA"
    assert info.content_headers == {"Cache-Control": "max-age=5",
                                    "Content-Disposition": "inline"}
    # COS makes a copy STANDARD and a Replaced copy drops the headers, unless told.
    client.copy_object("ia", "plain", metadata={})
    info = client.head_object("plain")
    assert (info.storage_class, info.content_headers) == ("STANDARD", {})
    client.copy_object("ia", "kept", storage_class="STANDARD_IA")
    info = client.head_object("kept")
    assert info.storage_class == "STANDARD_IA"
    assert info.content_headers["Cache-Control"] == "max-age=5"
    with pytest.raises(ValueError):
        client.copy_object("ia", "ia", metadata={}, content_headers={"X-Other": "1"})


def test_head_objects_answers_each_key_in_order(client: CosClient) -> None:
    client.put_object("h/a", b"1", metadata={"mode": "1"})
    client.put_object("h/c", b"333")
    found = client.head_objects(["h/c", "h/missing", "h/a"])
    assert [type(f).__name__ for f in found] == ["ObjectInfo", "CosError", "ObjectInfo"]
    assert (found[0].size, found[2].metadata) == (3, {"mode": "1"})
    assert found[1].status == 404
    assert client.head_objects([]) == []


def test_delete_and_delete_multiple_in_batches(cos_server, client: CosClient) -> None:
    client.delete_object("never-existed")
    existing = [f"k{i:04d} +%" for i in range(0, 2100, 100)]
    for key in existing:
        client.put_object(key, b"x")
    client.put_object("kept", b"x")
    # Missing keys delete quietly, so most of the 2100 need not exist to fill batches.
    keys = [f"k{i:04d} +%" for i in range(2100)]
    cos_server.reset_stats()
    assert client.delete_objects(keys) == []
    assert cos_server.count("DeleteMultipleObjects") == 3  # 1000 + 1000 + 100
    assert [c.key for c in client.list_objects().contents] == ["kept"]
    assert client.delete_objects([]) == []


def test_keys_a_delete_multiple_refuses_are_returned_and_counted(client: CosClient) -> None:
    client.put_object("plain", b"x")
    too_long = "k" * 900  # over the 850 bytes COS stores: refused alone, in the answer
    failed = client.delete_objects(["plain", too_long])
    assert [(e.key, e.code) for e in failed] == [(too_long, "KeyTooLong")]
    assert client.list_objects(prefix="plain").contents == []
    counters = client.stats()["DeleteMultipleObjects"]
    assert (counters["calls"], counters["errors"]) == (1, 1)


def test_multipart_every_operation(client: CosClient, tmp_path: Path) -> None:
    src = rand(3 * PART, seed=3)
    client.put_object("copy-source", src)
    key = "assembled ü+"
    upload_id = client.create_multipart_upload(key, content_type="app/big",
                                               metadata={"mode": "9"})
    other = client.create_multipart_upload("other")
    assert {(u.key, u.upload_id) for u in client.list_multipart_uploads()} == {
        (key, upload_id), ("other", other)}
    assert [u.key for u in client.list_multipart_uploads(prefix="assembled")] == [key]
    path = tmp_path / "staging"
    part2 = rand(PART, seed=4)
    path.write_bytes(b"-" * 10 + part2)
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = [
            PartInfo(1, client.upload_part(key, upload_id, 1, rand(PART, seed=5))),
            PartInfo(2, client.upload_part(key, upload_id, 2, FileSlice(fd, 10, PART))),
            PartInfo(3, client.upload_part_copy(key, upload_id, 3, "copy-source",
                                                PART, 2 * PART - 1)),
            PartInfo(4, client.upload_part(key, upload_id, 4, b"tail")),
        ]
    finally:
        os.close(fd)
    assert parts[1].etag == hashlib.md5(part2).hexdigest()
    listed = client.list_parts(key, upload_id)
    assert [(p.part_number, p.etag, p.size) for p in listed] == [
        (p.part_number, p.etag, s) for p, s in zip(parts, [PART, PART, PART, 4], strict=True)]
    etag = client.complete_multipart_upload(key, upload_id, parts[::-1])
    assert etag.endswith("-4")
    info = client.head_object(key)
    assert (info.size, info.etag, info.metadata, info.content_type) == (
        3 * PART + 4, etag, {"mode": "9"}, "app/big")
    expected = rand(PART, seed=5) + part2 + src[PART:2 * PART] + b"tail"
    assert client.get_object(key) == expected
    client.abort_multipart_upload("other", other)
    assert client.list_multipart_uploads() == []
    for call in (lambda: client.upload_part("other", other, 1, b"x"),
                 lambda: client.list_parts("other", other),
                 lambda: client.abort_multipart_upload("other", other),
                 lambda: client.complete_multipart_upload("other", other, parts)):
        with pytest.raises(CosError) as e:
            call()
        assert (e.value.status, e.value.code) == (404, "NoSuchUpload")


def test_multipart_rejections(client: CosClient) -> None:
    upload_id = client.create_multipart_upload("bad")
    small = client.upload_part("bad", upload_id, 1, b"too small")
    last = client.upload_part("bad", upload_id, 2, b"last")
    with pytest.raises(CosError) as e:
        client.complete_multipart_upload("bad", upload_id, [PartInfo(1, small), PartInfo(2, last)])
    assert (e.value.status, e.value.code) == (400, "EntityTooSmall")
    with pytest.raises(CosError) as e:
        client.complete_multipart_upload("bad", upload_id, [PartInfo(1, "0" * 32)])
    assert (e.value.status, e.value.code) == (400, "InvalidPart")
    client.abort_multipart_upload("bad", upload_id)


def test_sigv4_mode_is_verified_by_the_server(cos_server, bucket: str) -> None:
    """moto does not check signatures; cosfs-server does, for SigV4 as for COS."""
    s3 = make_client(cos_server, bucket, signature="s3")
    for key in ("a b+c%d#e?f&g=h", "目录/x", "d/"):
        s3.put_object(key, b"hello", content_type="text/x", metadata={"mode": "1"})
        info = s3.head_object(key)
        assert (info.size, info.content_type, info.metadata) == (5, "text/x", {"mode": "1"})
        assert s3.get_object(key, 1, 2) == b"el"
    page = s3.list_objects(delimiter="/")
    assert ([c.key for c in page.contents], page.common_prefixes) == (
        ["a b+c%d#e?f&g=h"], ["d/", "目录/"])
    s3.copy_object("目录/x", "kept")
    s3.copy_object("d/", "replaced", metadata={"mode": "2"})
    assert s3.head_object("kept").metadata == {"mode": "1"}
    assert s3.head_object("replaced").metadata == {"mode": "2"}
    upload_id = s3.create_multipart_upload("mp")
    parts = [PartInfo(1, s3.upload_part("mp", upload_id, 1, rand(PART))),
             PartInfo(2, s3.upload_part_copy("mp", upload_id, 2, "kept", 0, 4))]
    assert [p.part_number for p in s3.list_parts("mp", upload_id)] == [1, 2]
    assert s3.complete_multipart_upload("mp", upload_id, parts).endswith("-2")
    assert s3.get_object("mp") == rand(PART) + b"hello"
    assert s3.delete_objects(["kept", "replaced", "mp"]) == []
    cos_server.reset_stats()
    wrong = make_client(cos_server, bucket, signature="s3", secret_key="bad", max_retries=4)
    with pytest.raises(CosError) as e:
        wrong.get_object("d/")
    assert (e.value.status, e.value.code) == (403, "SignatureDoesNotMatch")
    assert cos_server.count("GetObject") == 1


# -- credentials and secrets --------------------------------------------------------------


def test_wrong_secret_is_not_retried(cos_server, bucket: str, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = make_client(cos_server, bucket, secret_key="not-the-key", max_retries=5)
    cos_server.reset_stats()
    with pytest.raises(CosError) as e:
        wrong.put_object("k", b"x")
    assert (e.value.status, e.value.code) == (403, "SignatureDoesNotMatch")
    assert cos_server.count("PutObject") == 1
    with pytest.raises(CosError) as e:
        wrong.head_object("k")  # a HEAD answer has no body: the code comes from the status
    assert (e.value.status, e.value.code) == (403, "AccessDenied")
    assert cos_server.count("HeadObject") == 1
    stats = wrong.stats()
    assert stats["PutObject"]["retries"] == stats["HeadObject"]["retries"] == 0
    text = caplog.text + str(e.value) + repr(e.value) + repr(wrong)
    assert "not-the-key" not in text and "q-signature" not in text
    assert SECRET_KEY not in text


def test_no_secret_in_logs_or_errors(cos_server, bucket: str, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(cos_server, bucket, token="temporary-session-token")
    try:  # the local server may or may not honour session tokens; either way...
        client.put_object("k", b"x")
    except CosError as err:
        assert "temporary-session-token" not in str(err)
    for record in caplog.records:
        message = record.getMessage()
        assert SECRET_KEY not in message and "temporary-session-token" not in message
        assert "Authorization" not in message and "q-signature" not in message


def test_connection_refused_is_a_transport_error(cos_server, bucket: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the client tries it
    client = make_client(cos_server, bucket, endpoint=f"http://127.0.0.1:{port}",
                         max_retries=2, retry_base_delay=0.001)
    with pytest.raises(CosError) as e:
        client.head_object("k")
    assert (e.value.status, e.value.code) == (0, "ConnectionError")
    assert e.value.is_transport
    assert client.stats()["HeadObject"]["requests"] == 3


# -- concurrency ----------------------------------------------------------------------------


def test_many_threads_share_one_client(client: CosClient) -> None:
    def work(n: int) -> None:
        for i in range(10):
            key = f"t{n}/{i}"
            body = rand(1000 + n, seed=n * 100 + i)
            client.put_object(key, body)
            assert client.get_object(key, 0, 99) == body[:100]

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(16)))
    stats = client.stats()
    assert stats["PutObject"]["calls"] == stats["GetObject"]["calls"] == 160
    assert stats["total"]["errors"] == 0
    assert sum(len(p.contents) for p in client.iter_list()) == 160


# -- faults -----------------------------------------------------------------------------------


def fault_client(server, **overrides) -> CosClient:
    settings = dict(max_retries=10, retry_base_delay=0.005, retry_max_delay=0.05)
    settings.update(overrides)
    return make_client(server, server.bucket, **settings)


def test_503_and_500_are_retried_until_the_budget_ends(fresh_server) -> None:
    client = fault_client(fresh_server, max_retries=3)
    client.put_object("k", b"v")
    fresh_server.set_faults("GetObject", error_rate=1.0, error_status=503)
    fresh_server.reset_stats()
    with pytest.raises(CosError) as e:
        client.get_object("k")
    assert e.value.status == 503
    assert fresh_server.count("GetObject") == 4  # the first try and 3 retries
    assert client.stats()["GetObject"]["retries"] == 3
    fresh_server.set_faults("GetObject", error_rate=1.0, error_status=404)
    fresh_server.reset_stats()
    with pytest.raises(CosError):
        client.get_object("k")
    assert fresh_server.count("GetObject") == 1  # a 4xx is final


def test_timeouts_are_retried(fresh_server) -> None:
    client = fault_client(fresh_server, read_timeout=0.3, max_retries=2)
    client.put_object("k", b"v")
    fresh_server.set_faults("HeadObject", latency_ms=1500)
    with pytest.raises(CosError) as e:
        client.head_object("k")
    assert (e.value.status, e.value.code) == (0, "Timeout")
    assert client.stats()["HeadObject"]["requests"] == 3
    fresh_server.clear_faults()
    assert client.head_object("k").size == 1


def test_every_operation_survives_errors_and_drops(fresh_server) -> None:
    client = fault_client(fresh_server)
    fresh_server.set_faults("*", error_rate=0.2, drop_rate=0.1)
    body = rand(3 * PART + 5, seed=7)
    for _ in range(2):  # two rounds: ~40 calls, so faults surely hit some of them
        client.head_bucket()
        client.put_object("a", body, metadata={"mode": "1"})
        assert client.get_object("a") == body
        assert client.get_object("a", PART, 2 * PART) == body[PART:2 * PART + 1]
        assert client.head_object("a").size == len(body)
        client.copy_object("a", "b")
        upload_id = client.create_multipart_upload("mp")
        parts = [PartInfo(1, client.upload_part("mp", upload_id, 1, body[:PART])),
                 PartInfo(2, client.upload_part_copy("mp", upload_id, 2, "b", PART,
                                                     len(body) - 1))]
        assert len(client.list_parts("mp", upload_id)) == 2
        # A lost answer to Initiate may leave an orphan upload beside ours.
        assert upload_id in [u.upload_id for u in client.list_multipart_uploads()]
        client.complete_multipart_upload("mp", upload_id, parts)
        assert client.get_object("mp") == body
        client.abort_multipart_upload("gone", client.create_multipart_upload("gone"))
        assert client.delete_objects(["a", "b"]) == []
        client.delete_object("mp")
        assert client.list_objects().contents == []
    stats = client.stats()
    assert stats["total"]["retries"] > 0 and stats["total"]["errors"] == 0


def test_append_with_drops_never_appends_twice(fresh_server) -> None:
    client = fault_client(fresh_server)
    fresh_server.set_faults("AppendObject", drop_rate=0.3, error_rate=0.1)
    fresh_server.set_faults("HeadObject", error_rate=0.1)
    expected = b""
    for i in range(60):
        chunk = f"<{i}>".encode()
        assert client.append_object("log", len(expected), chunk) == len(expected) + len(chunk)
        expected += chunk
    fresh_server.clear_faults()
    assert client.get_object("log") == expected
    assert client.stats()["AppendObject"]["retries"] > 0


def test_append_that_landed_after_a_timeout_is_not_repeated(fresh_server) -> None:
    """Every append waits 0.8 s on the server, the client gives up after 0.3 s: the
    first attempt lands while the client is retrying, and later attempts arrive at a
    position that is no longer the end. The client must notice, and nothing may be
    written twice."""
    client = fault_client(fresh_server, read_timeout=0.3, retry_base_delay=0.001,
                          retry_max_delay=0.01)
    client.append_object("log", 0, b"first;")
    fresh_server.set_faults("AppendObject", latency_ms=800)
    assert client.append_object("log", 6, b"second;") == 13
    stats = client.stats()["AppendObject"]
    assert stats["retries"] >= 1 and stats["errors"] == 0
    time.sleep(1.0)  # let the abandoned attempts reach the server and be refused
    fresh_server.clear_faults()
    assert client.get_object("log") == b"first;second;"
    assert fresh_server.stats()["AppendObject"]["errors"] >= 1  # AppendPositionErr


def test_complete_with_drops_succeeds_once(fresh_server) -> None:
    client = fault_client(fresh_server)
    for attempt in range(8):
        key = f"mp{attempt}"
        upload_id = client.create_multipart_upload(key)
        parts = [PartInfo(n, client.upload_part(key, upload_id, n, rand(PART, seed=n)))
                 for n in (1, 2)]
        fresh_server.set_faults("CompleteMultipartUpload", drop_rate=0.5)
        etag = client.complete_multipart_upload(key, upload_id, parts)
        fresh_server.clear_faults()
        assert etag.endswith("-2") and client.head_object(key).etag == etag
        assert client.get_object(key) == rand(PART, seed=1) + rand(PART, seed=2)


def test_stream_resumes_after_drops(fresh_server) -> None:
    # Half the answers are cut: 11 cuts in a row (1 read in 2,048, 16 reads here)
    # would spend a budget of 10; 30 makes that a one-in-a-billion event.
    client = fault_client(fresh_server, max_retries=30)
    body = rand(2 << 20, seed=8)
    client.put_object("s", body)
    fresh_server.set_faults("GetObject", drop_rate=0.5)
    for _ in range(8):
        with client.get_object_stream("s", chunk_size=128 << 10) as (info, chunks):
            assert b"".join(chunks) == body and info.size == len(body)
        assert client.get_object("s", 1000, 700_000) == body[1000:700_001]
    assert client.stats()["GetObject"]["retries"] > 0


def test_resume_never_mixes_versions(fresh_server) -> None:
    """Every answer is cut halfway; the object is replaced while we read the first half,
    so the resume must be refused (412) rather than deliver the new version's bytes."""
    client = fault_client(fresh_server)
    old = rand(1 << 20, seed=9)
    client.put_object("v", old)
    fresh_server.set_faults("GetObject", drop_rate=1.0)
    received = b""
    with client.get_object_stream("v", chunk_size=64 << 10) as (_, chunks):
        received += next(chunks)
        client.put_object("v", rand(1 << 20, seed=10))
        with pytest.raises(CosError) as e:
            for chunk in chunks:
                received += chunk
    assert (e.value.status, e.value.code) == (412, "PreconditionFailed")
    assert received == old[:len(received)] and 0 < len(received) < len(old)


def test_large_multipart_upload_under_faults(fresh_server) -> None:
    """100 MB in 2 MB parts from four threads with 20% of requests failing."""
    client = fault_client(fresh_server)
    size, part = 100 << 20, 2 << 20
    data = rand(size, seed=11)
    fresh_server.set_faults("*", error_rate=0.2)
    upload_id = client.create_multipart_upload("hundred")

    def send(n: int) -> PartInfo:
        view = memoryview(data)[(n - 1) * part:n * part]
        return PartInfo(n, client.upload_part("hundred", upload_id, n, lambda: view))

    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(send, range(1, (size + part - 1) // part + 1)))
    etag = client.complete_multipart_upload("hundred", upload_id, parts)
    assert etag.endswith(f"-{len(parts)}")
    digest = hashlib.md5()
    with client.get_object_stream("hundred") as (info, chunks):
        for chunk in chunks:
            digest.update(chunk)
    assert info.size == size and digest.digest() == hashlib.md5(data).digest()
    stats = client.stats()
    # 50 parts: all of them passing at the first try would be a 1 in 70,000 event.
    assert stats["UploadPart"]["retries"] > 0 and stats["total"]["errors"] == 0


@pytest.mark.parametrize("count", [600, pytest.param(5000, marks=pytest.mark.slow)])
def test_listing_under_faults(fresh_server, count: int) -> None:
    client = fault_client(fresh_server)
    keys = [f"dir{i % 7}/file {i:05d}+" for i in range(count)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(k, b""), keys))
    fresh_server.set_faults("*", error_rate=0.2, drop_rate=0.05)
    listed = [c.key for page in client.iter_list(max_keys=count // 50) for c in page.contents]
    assert listed == sorted(keys)
    top = [p for page in client.iter_list(delimiter="/", max_keys=3)
           for p in page.common_prefixes]
    assert top == [f"dir{i}/" for i in range(7)]
    assert client.stats()["ListObjects"]["retries"] > 0


def test_threads_under_faults_keep_stats_consistent(fresh_server) -> None:
    client = fault_client(fresh_server)
    fresh_server.set_faults("*", error_rate=0.2)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            for i in range(5):
                client.put_object(f"{n}-{i}", b"x" * n)
                assert client.get_object(f"{n}-{i}") == b"x" * n
        except BaseException as e:  # collected: a thread's assert must fail the test
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    put = client.stats()["PutObject"]
    assert put["calls"] == 60 and put["requests"] == 60 + put["retries"]
