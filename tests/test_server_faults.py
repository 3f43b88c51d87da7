"""Fault injection and request counters of cosfs-server, seen from real clients."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
import urllib3
from conftest import ServerProcess, make_sdk_client
from qcloud_cos.cos_exception import CosClientError, CosServiceError


@pytest.fixture
def sdk_fresh(fresh_server):
    return make_sdk_client(fresh_server)


def status_and_code(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(CosServiceError) as info:
        call(*args, **kwargs)
    return info.value.get_status_code(), info.value.get_error_code()


def test_error_rate_on_one_operation(fresh_server, sdk_fresh):
    bucket = fresh_server.bucket
    sdk_fresh.put_object(Bucket=bucket, Key="k", Body=b"data")
    fresh_server.reset_stats()
    fresh_server.set_faults("GetObject", error_rate=1.0)
    seen = {status_and_code(sdk_fresh.get_object, Bucket=bucket, Key="k") for _ in range(4)}
    assert seen == {(500, "InternalError"), (503, "SlowDown")}
    sdk_fresh.put_object(Bucket=bucket, Key="k2", Body=b"other operations are fine")
    stats = fresh_server.stats()["GetObject"]
    assert (stats["count"], stats["errors"], stats["injected"]) == (4, 4, 4)
    fresh_server.set_faults("GetObject", error_status=404)
    assert status_and_code(sdk_fresh.get_object, Bucket=bucket, Key="k")[0] == 404
    fresh_server.clear_faults()
    assert sdk_fresh.get_object(Bucket=bucket, Key="k")["Body"].get_raw_stream().read() == \
        b"data"


def test_latency(fresh_server, sdk_fresh):
    bucket = fresh_server.bucket
    sdk_fresh.put_object(Bucket=bucket, Key="k", Body=b"x")
    fresh_server.set_faults("HeadObject", latency_ms=300)
    start = time.monotonic()
    sdk_fresh.head_object(Bucket=bucket, Key="k")
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    sdk_fresh.get_object(Bucket=bucket, Key="k")["Body"].get_raw_stream().read()
    assert time.monotonic() - start < 0.3
    fresh_server.set_faults("*", latency_ms=200)  # HeadObject keeps its own 300 ms
    assert fresh_server.admin("GET", "faults")["faults"] == {
        "HeadObject": {"latency_ms": 300.0}, "*": {"latency_ms": 200.0}}
    start = time.monotonic()
    sdk_fresh.get_object(Bucket=bucket, Key="k")["Body"].get_raw_stream().read()
    assert time.monotonic() - start >= 0.2


def test_drop_cuts_a_download_mid_body(fresh_server, sdk_fresh):
    bucket = fresh_server.bucket
    sdk_fresh.put_object(Bucket=bucket, Key="k", Body=b"z" * 200_000)
    fresh_server.set_faults("GetObject", drop_rate=1.0)
    got = sdk_fresh.get_object(Bucket=bucket, Key="k")
    assert got["Content-Length"] == "200000"
    with pytest.raises(urllib3.exceptions.ProtocolError, match="IncompleteRead"):
        got["Body"].get_raw_stream().read()
    stats = fresh_server.stats()["GetObject"]
    assert stats["injected"] == 1 and stats["bytes_out"] == 100_000


def test_drop_cuts_an_upload_mid_body(fresh_server, sdk_fresh):
    bucket = fresh_server.bucket
    sdk_fresh.put_object(Bucket=bucket, Key="k", Body=b"old")
    fresh_server.reset_stats()
    fresh_server.set_faults("PutObject", drop_rate=1.0)
    with pytest.raises(CosClientError):
        sdk_fresh.put_object(Bucket=bucket, Key="k", Body=b"n" * 4_000_000)
    stats = fresh_server.stats()["PutObject"]
    assert stats["injected"] == 1 and 0 < stats["bytes_in"] <= 2_000_000
    fresh_server.clear_faults()
    assert sdk_fresh.get_object(Bucket=bucket, Key="k")["Body"].get_raw_stream().read() == \
        b"old"


def test_counters(fresh_server, sdk_fresh):
    bucket = fresh_server.bucket
    fresh_server.reset_stats()
    sdk_fresh.put_object(Bucket=bucket, Key="k", Body=b"a" * 1000)
    sdk_fresh.get_object(Bucket=bucket, Key="k", Range="bytes=0-99")["Body"] \
        .get_raw_stream().read()
    with pytest.raises(CosServiceError):
        sdk_fresh.get_object(Bucket=bucket, Key="missing")
    stats = fresh_server.stats()
    assert stats["PutObject"] == {"count": 1, "errors": 0, "bytes_in": 1000, "bytes_out": 0,
                                  "max_concurrent": 1, "injected": 0}
    assert stats["GetObject"]["count"] == 2 and stats["GetObject"]["errors"] == 1
    assert stats["GetObject"]["bytes_out"] > 100  # the range and the error document

    fresh_server.reset_stats()
    assert fresh_server.stats() == {}
    fresh_server.set_faults("HeadObject", latency_ms=400)
    threads = [threading.Thread(target=sdk_fresh.head_object,
                                kwargs={"Bucket": bucket, "Key": "k"}) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fresh_server.stats()["HeadObject"]["max_concurrent"] == 5


def test_admin_rejects_bad_settings(fresh_server):
    for body in ({"op": "NoSuchOp", "error_rate": 1}, {"error_rate": 3},
                 {"op": "*", "latency": 5}):
        with pytest.raises(urllib.error.HTTPError) as info:
            fresh_server.admin("POST", "faults", body)
        assert info.value.code == 400
        assert "error" in json.loads(info.value.read())
    with pytest.raises(urllib.error.HTTPError) as info:
        fresh_server.admin("GET", "nothing-here")
    assert info.value.code == 404
    assert fresh_server.admin("GET", "faults") == {"faults": {}}


def test_fault_flags_on_the_command_line(tmp_path):
    root = tmp_path / "root"
    server = ServerProcess(root, "--error-rate", "1", "--latency-ms", "150",
                           "--bucket", "flags-1250000000").start()
    try:
        sdk = make_sdk_client(server)
        start = time.monotonic()
        status, _ = status_and_code(sdk.head_bucket, Bucket="flags-1250000000")
        assert status in (500, 503) and time.monotonic() - start >= 0.15
        assert server.admin("GET", "faults")["faults"] == {
            "*": {"error_rate": 1.0, "latency_ms": 150.0}}
        server.clear_faults()
        sdk.head_bucket(Bucket="flags-1250000000")
    finally:
        server.stop()


def test_admin_creates_buckets(fresh_server, sdk_fresh):
    assert fresh_server.admin("POST", "buckets", {"name": "made-1250000000"}) == \
        {"name": "made-1250000000", "created": True}
    assert fresh_server.admin("POST", "buckets", {"name": "made-1250000000"})["created"] is False
    assert "made-1250000000" in fresh_server.admin("GET", "buckets")["buckets"]
    sdk_fresh.head_bucket(Bucket="made-1250000000")
    with pytest.raises(urllib.error.HTTPError):
        fresh_server.admin("POST", "buckets", {"name": "Bad_Name"})


def test_admin_requests_are_not_counted(fresh_server):
    fresh_server.reset_stats()
    with urllib.request.urlopen(f"{fresh_server.url}/_admin/stats", timeout=5) as answer:
        assert answer.headers["Content-Type"] == "application/json"
    assert fresh_server.stats() == {}
