"""The client in SigV4 mode (``signature="s3"``) against a real moto S3 server, for the
operations S3 shares with COS."""

from __future__ import annotations

import io
import itertools
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosfs.cos import CosClient, CosConfig, CosError, PartInfo

REGION = "us-east-1"
KEYS = ["plain", "a b+c%d#e?f&g=h", "目录/文件 1.txt", "dir/", "x//y"]
_numbers = itertools.count()


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield _wait_for_url(proc, log_path)
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_for_url(proc: subprocess.Popen, log_path: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if found:
            return found.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"moto exited: {log_path.read_text()}")
        time.sleep(0.05)
    raise RuntimeError("moto did not start")


@pytest.fixture
def s3(moto_url: str) -> Iterator[CosClient]:
    boto3 = pytest.importorskip("boto3")
    bucket = f"cosfs-s3-{next(_numbers)}"
    boto3.client("s3", endpoint_url=moto_url, region_name=REGION, aws_access_key_id="id",
                 aws_secret_access_key="secret").create_bucket(Bucket=bucket)
    cfg = CosConfig(secret_id="id", secret_key="secret", bucket=bucket, region=REGION,
                    endpoint=moto_url, signature="s3", max_retries=1, retry_base_delay=0.01)
    with CosClient(cfg) as client:
        yield client


def test_put_get_head_range(s3: CosClient) -> None:
    for key in KEYS:
        body = f"body of {key}".encode()
        etag = s3.put_object(key, body, content_type="text/plain",
                             metadata={"mode": "33188", "uid": "0"})
        info = s3.head_object(key)
        assert (info.key, info.size, info.etag) == (key, len(body), etag)
        assert info.content_type == "text/plain"
        assert info.metadata == {"mode": "33188", "uid": "0"}
        assert s3.get_object(key) == body
        assert s3.get_object(key, 2, 5) == body[2:6]
        assert s3.get_object(key, 3) == body[3:]
        with s3.get_object_stream(key, chunk_size=4) as (sinfo, chunks):
            assert sinfo.size == len(body)
            assert b"".join(chunks) == body


def test_put_from_file_and_callable(s3: CosClient, tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"0123456789" * 1000)
    with open(path, "rb") as f:
        s3.put_object("from-file", f)
    s3.put_object("from-callable", lambda: open(path, "rb"))  # noqa: SIM115
    s3.put_object("empty", io.BytesIO())
    assert s3.get_object("from-file") == path.read_bytes()
    assert s3.get_object("from-callable") == path.read_bytes()
    assert s3.head_object("empty").size == 0


def test_errors(s3: CosClient) -> None:
    s3.put_object("k", b"abc")
    with pytest.raises(CosError) as e:
        s3.head_object("missing")
    assert (e.value.status, e.value.code) == (404, "NoSuchKey")
    with pytest.raises(CosError) as e:
        s3.get_object("missing")
    assert (e.value.status, e.value.code) == (404, "NoSuchKey")
    assert e.value.request_id
    with pytest.raises(CosError) as e:
        s3.get_object("k", if_match="0" * 32)
    assert e.value.status == 412
    with pytest.raises(CosError) as e:
        s3.head_object("k", if_match="0" * 32)
    assert e.value.status == 412
    assert s3.head_object("k", if_match=s3.head_object("k").etag).size == 3


def test_list_delimiter_and_pages(s3: CosClient) -> None:
    for key in KEYS:
        s3.put_object(key, b"")
    page = s3.list_objects(delimiter="/")
    assert sorted(c.key for c in page.contents) == ["a b+c%d#e?f&g=h", "plain"]
    assert sorted(page.common_prefixes) == ["dir/", "x/", "目录/"]
    keys = [c.key for p in s3.iter_list(max_keys=2) for c in p.contents]
    assert sorted(keys) == sorted(KEYS)
    assert [c.key for c in s3.list_objects(prefix="目录/").contents] == ["目录/文件 1.txt"]


def test_copy_and_delete(s3: CosClient) -> None:
    s3.put_object("src", b"payload", content_type="text/plain", metadata={"mode": "1"})
    s3.copy_object("src", "kept")
    assert s3.head_object("kept").metadata == {"mode": "1"}
    s3.copy_object("src", "replaced", metadata={"mode": "2"}, content_type="app/x")
    info = s3.head_object("replaced")
    assert (info.metadata, info.content_type) == ({"mode": "2"}, "app/x")
    assert s3.get_object("replaced") == b"payload"
    s3.copy_object("src", "src", metadata={"mode": "3"})  # change metadata in place
    assert s3.head_object("src").metadata == {"mode": "3"}

    s3.delete_object("kept")
    s3.delete_object("kept")  # missing is fine
    assert s3.delete_objects(["src", "replaced", "never-existed"]) == []
    assert s3.list_objects().contents == []


def test_multipart(s3: CosClient) -> None:
    part = 5 << 20
    s3.put_object("copy-source", b"S" * 100)
    key = "big object"
    upload_id = s3.create_multipart_upload(key, content_type="app/big", metadata={"mode": "7"})
    assert [(u.key, u.upload_id) for u in s3.list_multipart_uploads()] == [(key, upload_id)]
    parts = [
        PartInfo(1, s3.upload_part(key, upload_id, 1, b"a" * part)),
        PartInfo(2, s3.upload_part(key, upload_id, 2, io.BytesIO(b"b" * part))),
        PartInfo(3, s3.upload_part_copy(key, upload_id, 3, "copy-source", 10, 19)),
    ]
    listed = s3.list_parts(key, upload_id)
    assert [(p.part_number, p.etag, p.size) for p in listed] == [
        (1, parts[0].etag, part), (2, parts[1].etag, part), (3, parts[2].etag, 10)]
    etag = s3.complete_multipart_upload(key, upload_id, list(reversed(parts)))
    assert etag.endswith("-3")
    info = s3.head_object(key)
    assert (info.size, info.etag, info.metadata) == (2 * part + 10, etag, {"mode": "7"})
    assert s3.get_object(key, part - 2, part + 1) == b"aabb"
    assert s3.get_object(key, 2 * part) == b"S" * 10

    other = s3.create_multipart_upload("abandoned")
    s3.abort_multipart_upload("abandoned", other)
    assert s3.list_multipart_uploads() == []


def test_stats_count_operations(s3: CosClient) -> None:
    s3.put_object("k", b"12345")
    s3.get_object("k")
    with pytest.raises(CosError):
        s3.head_object("nope")
    stats = s3.stats()
    assert stats["PutObject"]["calls"] == 1 and stats["PutObject"]["bytes_sent"] == 5
    assert stats["GetObject"]["bytes_received"] == 5
    assert stats["HeadObject"]["errors"] == 1
    assert stats["total"]["calls"] == 3
