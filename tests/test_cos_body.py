"""Re-sendable request bodies and file slices (pure, local files only)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

import pytest

from cosfs.cos import FileSlice
from cosfs.cos.body import Payload


def read_all(data) -> bytes:
    return data if isinstance(data, bytes) else data.read()


def test_bytes_payload_and_md5() -> None:
    p = Payload(bytearray(b"hello"))
    for _ in range(2):
        with p.open() as (data, length):
            assert (read_all(data), length) == (b"hello", 5)
    assert p.in_memory == b"hello"
    assert p.content_md5 == base64.b64encode(hashlib.md5(b"hello").digest()).decode()


def test_file_payload_rewinds_to_its_starting_position() -> None:
    f = io.BytesIO(b"skip|body")
    f.seek(5)
    p = Payload(f)
    assert p.in_memory is None and p.content_md5 is None
    for _ in range(3):  # a retry after a partial send starts over at the same place
        with p.open() as (data, length):
            assert length == 4
            assert data.read(2) == b"bo"
    with p.open() as (data, _):
        assert data.read() == b"body"
    assert p.last_length == 4


def test_callable_payload_fresh_per_attempt(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    opened = []

    def factory():
        f = open(path, "rb")  # noqa: SIM115 - the payload closes it
        opened.append(f)
        return f

    p = Payload(factory)
    for _ in range(2):
        with p.open() as (data, length):
            assert (data.read(), length) == (b"x" * 10, 10)
    assert len(opened) == 2 and all(f.closed for f in opened)


def test_callable_returning_an_iterable_is_spooled() -> None:
    p = Payload(lambda: (bytes([i]) * 3 for i in range(4)))
    with p.open() as (data, length):
        assert length == 12
        assert data.read() == b"\0\0\0\1\1\1\2\2\2\3\3\3"
    p = Payload(lambda: b"raw")
    with p.open() as (data, length):
        assert (read_all(data), length) == (b"raw", 3)


@pytest.mark.parametrize("bad", ["text", 42, iter([b"once"])])
def test_unsendable_bodies_are_refused(bad) -> None:
    with pytest.raises(TypeError):
        Payload(bad)


def test_file_slice_reads_a_window_without_moving_the_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "staging"
    path.write_bytes(bytes(range(256)) * 4)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 7, os.SEEK_SET)
        s = FileSlice(fd, 100, 50)
        assert len(s) == 50
        assert s.read(10) == bytes(range(100, 110))
        assert s.tell() == 10
        assert s.read() == bytes(range(110, 150))
        assert s.read(5) == b""
        assert s.seek(0, io.SEEK_END) == 50
        s.seek(-5, io.SEEK_END)
        assert s.read() == bytes(range(145, 150))
        assert os.lseek(fd, 0, os.SEEK_CUR) == 7
        with Payload(lambda: FileSlice(fd, 1020, 4)).open() as (data, length):
            assert (data.read(), length) == (bytes(range(252, 256)), 4)
        with pytest.raises(ValueError):
            FileSlice(fd, 1020, 5)
    finally:
        os.close(fd)
