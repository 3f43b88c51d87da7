"""ObjectReader against the real cosfs-server: request costs of small and sequential
reads, read-ahead concurrency, random access, the memory budget, If-Match, faults."""

from __future__ import annotations

import errno
import random

import pytest
import trio
from conftest import make_client
from datapath_util import KiB, MiB, md5, op_stat, small_tuning

from cosfs.aio import AsyncClient
from cosfs.reader import ObjectReader, ReadBudget
from cosfs.tuning import Tuning


def put_random(client, key: str, size: int, seed: int = 0) -> tuple[bytes, str]:
    data = random.Random(seed).randbytes(size)
    return data, client.put_object(key, data)


def read_all(reader: ObjectReader, step: int = 128 * KiB) -> bytes:
    async def main() -> bytes:
        out = bytearray()
        while chunk := await reader.read(len(out), step):
            out += chunk
        await reader.close()
        return bytes(out)

    return trio.run(main)


def test_first_small_read_costs_one_small_get(cos_server, bucket, client) -> None:
    data, etag = put_random(client, "large.bin", 16 * MiB)
    budget = ReadBudget(Tuning().read_budget)

    async def main() -> bytes:
        r = ObjectReader(AsyncClient(client), "large.bin", len(data), etag, budget, Tuning())
        cos_server.reset_stats()
        got = await r.read(0, 4 * KiB)
        await r.close()
        return got

    assert trio.run(main) == data[:4 * KiB]
    stats = cos_server.stats()
    assert stats["GetObject"]["count"] == 1
    assert stats["GetObject"]["bytes_out"] <= 256 * KiB


@pytest.mark.parametrize("size", [40 * MiB + 5, pytest.param(1 << 30, marks=pytest.mark.slow)],
                         ids=["40MiB", "1GiB"])
def test_sequential_read_grows_parallel_read_ahead(cos_server, bucket, client, size) -> None:
    if size > 100 * MiB:  # a repeating pattern keeps 1 GiB cheap to make
        block = random.randbytes(MiB + 7)
        data = (block * (size // len(block) + 1))[:size]
        client.put_object("seq.bin", data)
        etag = client.head_object("seq.bin").etag
    else:
        data, etag = put_random(client, "seq.bin", size)
    t = Tuning(kernel_readahead=0)  # no kernel in front: the reader reads ahead alone
    budget = ReadBudget(t.read_budget)
    r = ObjectReader(AsyncClient(client), "seq.bin", size, etag, budget, t)
    cos_server.reset_stats()
    got = read_all(r)
    assert len(got) == size and md5(got) == md5(data)
    stats = cos_server.stats()["GetObject"]
    assert stats["max_concurrent"] > 1, "read-ahead never had two GETs in flight"
    # The window grows to 8 MiB chunks: far fewer GETs than reads.
    assert stats["count"] <= size // (4 * MiB) + 12
    assert stats["bytes_out"] <= size + 2 * MiB  # nothing fetched twice
    assert r.hits > r.misses
    # The trio run ended, so every GET has ended and given its budget back.
    assert budget.used == 0 and budget.readers == 0


def test_random_reads_match_and_stay_small(cos_server, bucket, client) -> None:
    size = 12 * MiB
    data, etag = put_random(client, "rand.bin", size, seed=4)
    t = small_tuning()
    rng = random.Random(9)
    reads = [(rng.randrange(size + 1000), rng.randrange(1, 64 * KiB)) for _ in range(200)]

    async def main() -> None:
        r = ObjectReader(AsyncClient(client), "rand.bin", size, etag, ReadBudget(t.read_budget),
                         t)
        for off, n in reads:
            assert await r.read(off, n) == data[off:off + n], (off, n)
        await r.close()

    cos_server.reset_stats()
    trio.run(main)
    stats = cos_server.stats()["GetObject"]
    wanted = sum(len(data[o:o + n]) for o, n in reads)
    # One GET per read, give or take a read that happened to follow the one before.
    assert stats["count"] <= 210
    # Random access falls back to small GETs: no read-ahead windows are fetched.
    assert stats["bytes_out"] <= wanted + 200 * t.read_min_fetch


def test_concurrent_out_of_order_reads_of_one_handle(cos_server, bucket, client) -> None:
    size = 6 * MiB + 3
    data, etag = put_random(client, "ooo.bin", size, seed=5)
    t = small_tuning()

    async def main() -> None:
        r = ObjectReader(AsyncClient(client), "ooo.bin", size, etag, ReadBudget(t.read_budget),
                         t)
        step = 128 * KiB
        for batch in range(0, size, 4 * step):  # the kernel sends a few reads at once
            offsets = [batch + i * step for i in (1, 0, 3, 2)]
            results = {}

            async def one(off: int, results=results) -> None:
                results[off] = await r.read(off, step)

            async with trio.open_nursery() as nursery:
                for off in offsets:
                    nursery.start_soon(one, off)
            for off in offsets:
                assert results[off] == data[off:off + step]
        await r.close()

    trio.run(main)


def test_many_readers_share_the_budget(cos_server, bucket, client) -> None:
    size = 4 * MiB
    files = {f"m{i}": put_random(client, f"m{i}", size, seed=i) for i in range(6)}
    t = small_tuning(readahead_max=4 * MiB, read_budget=3 * MiB)
    budget = ReadBudget(t.read_budget, min_window=t.readahead_initial)
    peak = 0

    async def reader(key: str, data: bytes, etag: str) -> None:
        nonlocal peak
        r = ObjectReader(AsyncClient(client), key, size, etag, budget, t)
        out = bytearray()
        while chunk := await r.read(len(out), 64 * KiB):
            out += chunk
            peak = max(peak, budget.used)
            assert r._window <= budget.window_cap(t.readahead_max)
        assert bytes(out) == data
        await r.close()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for key, (data, etag) in files.items():
                nursery.start_soon(reader, key, data, etag)
        with trio.fail_after(10):
            while budget.used:
                await trio.sleep(0.01)

    trio.run(main)
    # Read-ahead stays within the budget; reads in progress may add their own bytes.
    assert peak <= t.read_budget + 2 * 6 * (64 * KiB + t.read_min_fetch)
    assert budget.readers == 0


def test_replaced_object_fails_with_eio_not_mixed_bytes(cos_server, bucket, client) -> None:
    size = 4 * MiB
    data, etag = put_random(client, "r.bin", size, seed=1)
    t = small_tuning()

    async def main() -> None:
        r = ObjectReader(AsyncClient(client), "r.bin", size, etag, ReadBudget(t.read_budget), t)
        assert await r.read(0, 4 * KiB) == data[:4 * KiB]
        client.put_object("r.bin", random.randbytes(size))  # same size, new content
        with pytest.raises(OSError) as exc:
            await r.read(3 * MiB, 4 * KiB)
        assert exc.value.errno == errno.EIO
        await r.close()

    trio.run(main)
    assert op_stat(cos_server, "GetObject", "errors") >= 1


def test_reads_at_and_past_the_end(cos_server, bucket, client) -> None:
    data, etag = put_random(client, "e.bin", 100 * KiB + 1)
    t = small_tuning()

    async def main() -> None:
        r = ObjectReader(AsyncClient(client), "e.bin", len(data), etag,
                         ReadBudget(t.read_budget), t)
        assert await r.read(len(data) - 10, 100) == data[-10:]
        assert await r.read(len(data), 100) == b""
        assert await r.read(len(data) + 5, 1) == b""
        assert await r.read(0, 0) == b""
        await r.close()
        with pytest.raises(OSError):
            await r.read(0, 1)

    trio.run(main)


def test_faults_reads_still_byte_identical(fresh_server) -> None:
    client = make_client(fresh_server, fresh_server.bucket, max_retries=8,
                         retry_base_delay=0.01)
    size = 8 * MiB
    data, etag = put_random(client, "f.bin", size, seed=8)
    t = small_tuning()
    fresh_server.set_faults("*", error_rate=0.1)
    rng = random.Random(2)

    async def main() -> None:
        budget = ReadBudget(t.read_budget)
        r = ObjectReader(AsyncClient(client), "f.bin", size, etag, budget, t)
        out = bytearray()
        while chunk := await r.read(len(out), 128 * KiB):
            out += chunk
        assert md5(bytes(out)) == md5(data)
        for _ in range(100):
            off, n = rng.randrange(size), rng.randrange(1, 300 * KiB)
            assert await r.read(off, n) == data[off:off + n]
        await r.close()

    trio.run(main)
    assert fresh_server.stats()["GetObject"]["injected"] > 0


def test_chunk_buffers_are_recycled_and_freed_with_the_last_reader(cos_server, bucket,
                                                                    client) -> None:
    """Read-ahead reuses the buffers of consumed chunks (new pages cost a kernel
    zeroing each), keeps at most ``max_spares`` of them, and frees them all when
    the last reader closes; two readers of different objects stay correct."""
    size = 40 * MiB + 5
    one, etag_one = put_random(client, "one.bin", size, seed=1)
    two, etag_two = put_random(client, "two.bin", size, seed=2)
    t = Tuning()
    budget = ReadBudget(t.read_budget, max_spares=2)

    async def main() -> tuple[bytes, bytes, int]:
        a = ObjectReader(AsyncClient(client), "one.bin", size, etag_one, budget, t)
        b = ObjectReader(AsyncClient(client), "two.bin", size, etag_two, budget, t)
        got_a, got_b = bytearray(), bytearray()
        while len(got_a) < size or len(got_b) < size:  # interleaved, both sequential
            got_a += await a.read(len(got_a), 512 * KiB)
            got_b += await b.read(len(got_b), 512 * KiB)
            assert len(budget._spares) <= 2
        spares = len(budget._spares)
        await a.close()
        await b.close()
        return bytes(got_a), bytes(got_b), spares

    got_a, got_b, spares = trio.run(main)
    assert md5(got_a) == md5(one) and md5(got_b) == md5(two)
    assert spares > 0, "no buffer was ever recycled"
    assert budget._spares == [] and budget.used == 0 and budget.readers == 0
