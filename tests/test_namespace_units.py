"""Pure helpers of cosfs.namespace, without a server."""

from __future__ import annotations

from cosfs.namespace import ChildIndex, chunked


def test_chunked_keeps_order_and_every_item():
    items = list(range(1000))
    for parallel, most in ((48, 8), (24, 8), (1, 8), (7, 3)):
        chunks = chunked(items, parallel, most)
        assert [x for c in chunks for x in c] == items
        assert max(map(len, chunks)) <= most


def test_chunked_sends_few_items_one_per_slot():
    assert chunked(list(range(7)), 24, 8) == [[i] for i in range(7)]
    assert chunked([], 24, 8) == []


def test_chunked_fills_every_round_evenly():
    # 512 HEADs, 48 slots, at most 8 per call: two rounds are needed; chunks of 6
    # fill both (86 chunks), where chunks of 8 would leave 32 slots idle in the
    # second round (64 chunks) and take 16 round trips instead of 12.
    chunks = chunked(list(range(512)), 48, 8)
    assert {len(c) for c in chunks[:-1]} == {6}
    assert len(chunks) == 86
    # Enough for one round: as small as keeps every slot busy.
    assert {len(c) for c in chunked(list(range(96)), 48, 8)} == {2}


def test_child_index_binds_names_per_directory():
    index = ChildIndex()
    index.bind(1, "a", 10)
    index.bind(1, "b", 11)
    index.bind(2, "a", 12)
    assert index.get(1, "a") == 10 and index.get(2, "a") == 12
    assert index.get(3, "a") is None and index.get(1, "c") is None
    assert index.of(1) == {"a": 10, "b": 11}
    index.bind(1, "a", 13)  # the name now stands for another inode
    assert index.of(1) == {"a": 13, "b": 11}


def test_child_index_unbinds_and_forgets_empty_directories():
    index = ChildIndex()
    index.bind(1, "a", 10)
    held = index.of(1)
    assert index.unbind(1, "a") == 10
    assert index.unbind(1, "a") is None and index.unbind(5, "x") is None
    assert index.of(1) == {} and held == {"a": 10}  # what was read stays as read
    assert not index._dirs  # no entry is left behind for a directory with no names
