"""cosfs-server as a process: command line, restart and crash safety, concurrency,
streaming (memory does not grow with object size) and throughput."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import REPO, SECRET_ID, SECRET_KEY, ServerProcess, make_sdk_client
from server_util import bucket_host, cos_request, sdk_complete, sdk_upload_parts

from cosfs.server.cli import build_parser


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cosfs.server", *args]


def test_help_documents_every_flag():
    out = subprocess.run(server_command("--help"), capture_output=True, text=True, check=True,
                         cwd=REPO).stdout
    flags = [flag for action in build_parser()._actions for flag in action.option_strings]
    assert len(flags) >= 15
    for flag in flags:
        assert flag in out
    for word in ("COS_SECRET_ID", "/_admin/faults", "listening on"):
        assert word in out


def test_refuses_to_start_without_a_key_pair(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COS_SECRET")}
    result = subprocess.run(server_command("--root", str(tmp_path / "r")), env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "no key pair" in result.stderr


def test_anonymous_server_and_host_suffix(tmp_path):
    server = ServerProcess(tmp_path / "r", "--anonymous", "--bucket", "anon-1250000000",
                           "--host-suffix", "cos.local.test")
    server.start()
    try:
        url = f"{server.url}/anon-1250000000/k"
        assert requests.put(url, data=b"hi", timeout=10).status_code == 200
        assert requests.get(url, timeout=10).content == b"hi"
        by_host = requests.get(f"{server.url}/k", timeout=10,
                               headers={"Host": f"anon-1250000000.cos.local.test:{server.port}"})
        assert by_host.content == b"hi"
    finally:
        server.stop()


def test_one_server_per_root(fresh_server):
    result = subprocess.run(server_command("--root", str(fresh_server.root)),
                            capture_output=True, text=True, timeout=30,
                            env={**os.environ, "COS_SECRET_ID": SECRET_ID,
                                 "COS_SECRET_KEY": SECRET_KEY})
    assert result.returncode == 2 and "another cosfs-server" in result.stderr


def test_restart_keeps_everything(fresh_server):
    bucket = fresh_server.bucket
    sdk = make_sdk_client(fresh_server)
    fresh_server.create_bucket("second-1250000000")
    sdk.put_object(Bucket=bucket, Key="dir/obj", Body=b"kept", Metadata={"x-cos-meta-m": "1"})
    sdk.append_object(Bucket=bucket, Key="log", Position=0, Data=b"first,")
    upload_id = sdk.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = sdk.upload_part(Bucket=bucket, Key="mp", Body=b"p" * 70_000, PartNumber=1,
                           UploadId=upload_id)["ETag"]
    before = sdk.head_object(Bucket=bucket, Key="dir/obj")

    fresh_server.restart()
    sdk = make_sdk_client(fresh_server)
    after = sdk.head_object(Bucket=bucket, Key="dir/obj")
    assert (after["ETag"], after["Last-Modified"], after["x-cos-meta-m"]) == \
        (before["ETag"], before["Last-Modified"], "1")
    sdk.head_bucket(Bucket="second-1250000000")
    sdk.append_object(Bucket=bucket, Key="log", Position=6, Data=b"second")
    assert sdk.get_object(Bucket=bucket, Key="log")["Body"].get_raw_stream().read() == \
        b"first,second"
    sdk.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id,
                                  MultipartUpload={"Part": [{"PartNumber": 1, "ETag": etag}]})
    assert len(sdk.get_object(Bucket=bucket, Key="mp")["Body"].get_raw_stream().read()) == \
        70_000


def _blob_count(root) -> int:
    return sum(len(os.listdir(root / "blobs" / sub)) for sub in os.listdir(root / "blobs"))


def test_crash_mid_upload_leaves_the_old_object(fresh_server):
    bucket, root = fresh_server.bucket, fresh_server.root
    sdk = make_sdk_client(fresh_server)
    sdk.put_object(Bucket=bucket, Key="k", Body=b"version 1")
    # Half of a 4 MB PUT, then the server dies.
    host = bucket_host(bucket)
    headers = {"Host": host, "Content-Length": str(4 << 20)}
    auth = sdk.get_auth(Method="PUT", Bucket=bucket, Key="k", Headers=headers)
    sock = socket.create_connection(("127.0.0.1", fresh_server.port))
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Authorization": auth}.items())
    sock.sendall(f"PUT /k HTTP/1.1\r\n{head}\r\n".encode() + b"2" * (2 << 20))
    deadline = time.monotonic() + 10
    while not any(p.stat().st_size for p in (root / "tmp").iterdir()):
        assert time.monotonic() < deadline, "the upload never reached the disk"
        time.sleep(0.01)
    fresh_server.proc.kill()
    fresh_server.proc.wait()
    sock.close()
    assert list((root / "tmp").iterdir())  # the half-written temp file is there

    fresh_server.start(fresh_server.port)
    sdk = make_sdk_client(fresh_server)
    assert sdk.get_object(Bucket=bucket, Key="k")["Body"].get_raw_stream().read() == \
        b"version 1"
    assert list((root / "tmp").iterdir()) == [] and _blob_count(root) == 1


def test_a_read_keeps_the_parts_it_reads_and_restarts_keep_completed_parts(fresh_server):
    """A completed upload is its parts' blobs: a GET under way when the object is
    deleted still sends every byte, the blobs go once it ends, and a restart's sweep
    keeps the parts of live objects."""
    bucket, root = fresh_server.bucket, fresh_server.root
    sdk = make_sdk_client(fresh_server)
    part = 4 << 20
    chunks = [os.urandom(part) for _ in range(3)]  # more than the socket buffers hold

    for key in ("kept", "doomed"):
        sdk_complete(sdk, bucket, key, *sdk_upload_parts(sdk, bucket, key, chunks))
    whole = b"".join(chunks)
    assert _blob_count(root) == 6
    stream = sdk.get_object(Bucket=bucket, Key="doomed")["Body"].get_raw_stream()
    first = stream.read(1)
    sdk.delete_object(Bucket=bucket, Key="doomed")
    assert first + stream.read() == whole
    stream.close()
    deadline = time.monotonic() + 10
    while _blob_count(root) != 3:
        assert time.monotonic() < deadline, "the deleted object's parts stayed"
        time.sleep(0.05)

    fresh_server.stop()
    fresh_server.start(fresh_server.port)
    sdk = make_sdk_client(fresh_server)
    assert _blob_count(root) == 3
    got = sdk.get_object(Bucket=bucket, Key="kept")["Body"].get_raw_stream().read()
    assert got == whole


def test_readers_never_see_a_partial_object(cos_server, sdk, bucket):
    size, versions = 1 << 20, b"abcdefgh"
    sdk.put_object(Bucket=bucket, Key="hot", Body=b"a" * size)
    cos_server.reset_stats()
    stop, problems = threading.Event(), []

    def writer(letters: bytes) -> None:
        while not stop.is_set():
            for letter in letters:
                sdk.put_object(Bucket=bucket, Key="hot", Body=bytes([letter]) * size)

    def reader() -> None:
        while not stop.is_set():
            data = sdk.get_object(Bucket=bucket, Key="hot")["Body"].get_raw_stream().read()
            if len(data) != size or data.count(data[:1]) != size:
                problems.append((len(data), data[:1], data[-1:]))

    threads = [threading.Thread(target=writer, args=(versions[:4],)),
               threading.Thread(target=writer, args=(versions[4:],))] + \
        [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join()
    assert problems == []
    assert cos_server.stats()["GetObject"]["max_concurrent"] >= 2


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_large_bodies_stream_without_buffering(fresh_server):
    bucket = fresh_server.bucket
    sdk = make_sdk_client(fresh_server)
    size, block = 256 << 20, os.urandom(1 << 20)
    before = _peak_rss(fresh_server.proc.pid)
    digest = hashlib.md5()

    def blocks():
        for _ in range(size // len(block)):
            digest.update(block)
            yield block

    answer = cos_request(fresh_server, sdk, "PUT", bucket, "huge", data=blocks())
    assert answer.status_code == 200, answer.text
    got, received = hashlib.md5(), 0
    with cos_request(fresh_server, sdk, "GET", bucket, "huge", stream=True) as answer:
        for chunk in answer.iter_content(1 << 20):
            got.update(chunk)
            received += len(chunk)
    assert (received, got.hexdigest()) == (size, digest.hexdigest())
    grown = _peak_rss(fresh_server.proc.pid) - before
    assert grown < 48 << 20, f"the server grew by {grown >> 20} MiB for a 256 MiB object"


@pytest.mark.slow
def test_gigabyte_throughput(fresh_server, tmp_path):
    bucket = fresh_server.bucket
    sdk = make_sdk_client(fresh_server)
    size, block = 1 << 30, os.urandom(8 << 20)
    start = time.monotonic()
    answer = cos_request(fresh_server, sdk, "PUT", bucket, "gig",
                         data=(block for _ in range(size // len(block))))
    put_rate = size / (time.monotonic() - start) / 2**20
    assert answer.status_code == 200
    start, received = time.monotonic(), 0
    with cos_request(fresh_server, sdk, "GET", bucket, "gig", stream=True) as answer:
        for chunk in answer.raw.stream(8 << 20, decode_content=False):
            received += len(chunk)
    get_rate = size / (time.monotonic() - start) / 2**20
    print(f"1 GiB PUT {put_rate:.0f} MiB/s, GET {get_rate:.0f} MiB/s, "
          f"server peak RSS {_peak_rss(fresh_server.proc.pid) >> 20} MiB")
    assert received == size
    assert get_rate > 200 and _peak_rss(fresh_server.proc.pid) < 200 << 20


def _raw_put(server, sdk, bucket: str, key: str, body: bytes, secret_ok: bool = True):
    """A PUT over a raw socket with ``Expect: 100-continue``: the body is sent only
    after "100 Continue". Returns (the socket, the first bytes the server answered)."""
    host = bucket_host(bucket)
    headers = {"Host": host, "Content-Length": str(len(body))}
    auth = sdk.get_auth(Method="PUT", Bucket=bucket, Key=key, Headers=dict(headers))
    if not secret_ok:
        auth = auth[:-4] + "0000"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    lines = {**headers, "Expect": "100-continue", "Authorization": auth}
    sock.sendall(f"PUT /{key} HTTP/1.1\r\n".encode() +
                 "".join(f"{k}: {v}\r\n" for k, v in lines.items()).encode() + b"\r\n")
    return sock, _read_answer(sock)


def _read_answer(sock: socket.socket) -> bytes:
    """One interim or final answer: the head, and the body its Content-Length names."""
    def more() -> bytes:
        data = sock.recv(65536)
        assert data, "the server closed the connection mid-answer"
        return data

    data = b""
    while b"\r\n\r\n" not in data:
        data += more()
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += more()
    return head + b"\r\n\r\n" + body


def test_expect_100_continue(cos_server, sdk, bucket):
    sock, first = _raw_put(cos_server, sdk, bucket, "expect", b"body")
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"body")
    assert _read_answer(sock).startswith(b"HTTP/1.1 200 ")
    sock.close()
    # Refused before the body: the answer comes at once, then the server closes the
    # connection rather than wait for a body the client will not send.
    sock, first = _raw_put(cos_server, sdk, bucket, "expect", b"other", secret_ok=False)
    assert first.startswith(b"HTTP/1.1 403 ") and b"SignatureDoesNotMatch" in first
    assert b"\r\nConnection: close\r\n" in first
    start = time.monotonic()
    assert sock.recv(65536) == b""
    assert time.monotonic() - start < 5
    sock.close()
    assert sdk.get_object(Bucket=bucket, Key="expect")["Body"].get_raw_stream().read() == \
        b"body"


def test_bad_content_length_closes_the_connection(cos_server, bucket):
    sock = socket.create_connection(("127.0.0.1", cos_server.port), timeout=10)
    sock.sendall(f"PUT /{bucket}/k HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n"
                 "some body".encode())
    answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in answer
    assert sock.recv(100) == b""
    sock.close()


@pytest.mark.parametrize("request_line, status", [(b"GET /a b HTTP/1.1", 400),
                                                  (b"GET /a HTTP/7.0", 505),
                                                  (b"BREW /pot HTTP/1.1", 501)])
def test_parser_errors_have_the_cos_shape(cos_server, request_line, status):
    sock = socket.create_connection(("127.0.0.1", cos_server.port), timeout=10)
    sock.sendall(request_line + b"\r\nHost: x\r\n\r\n")
    answer = _read_answer(sock)
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"x-cos-request-id: " in head and b"Content-Type: application/xml" in head
    assert body.startswith(b"<?xml version='1.0' encoding='utf-8' ?><Error><Code>")


def test_racing_appends_at_one_position(sdk, bucket):
    from qcloud_cos.cos_exception import CosServiceError

    results, barrier = [], threading.Barrier(6)

    def append(n: int) -> None:
        barrier.wait()
        try:
            sdk.append_object(Bucket=bucket, Key="race", Position=0,
                              Data=bytes([65 + n]) * 300_000)
            results.append(("ok", n))
        except CosServiceError as exc:
            results.append((exc.get_error_code(), n))

    threads = [threading.Thread(target=append, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [n for outcome, n in results if outcome == "ok"]
    assert len(winners) == 1
    assert sorted(outcome for outcome, _ in results) == ["AppendPositionErr"] * 5 + ["ok"]
    data = sdk.get_object(Bucket=bucket, Key="race")["Body"].get_raw_stream().read()
    assert data == bytes([65 + winners[0]]) * 300_000
