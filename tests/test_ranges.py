"""Unit tests of the pure range bookkeeping: RangeSet against a plain set of offsets,
DirtyMap against a byte-level model, and the multipart part layout."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosfs.ranges import DirtyMap, PartLayout, RangeSet

SPAN = 64
ranges = st.tuples(st.integers(0, SPAN), st.integers(0, SPAN)).map(sorted).map(tuple)
ops = st.lists(st.tuples(st.sampled_from(["add", "remove", "truncate"]), ranges),
               max_size=30)


def offsets(rs: RangeSet) -> set[int]:
    return {i for s, e in rs for i in range(s, e)}


@settings(max_examples=300)
@given(ops, ranges)
def test_rangeset_matches_a_set_of_offsets(operations, probe) -> None:
    rs, model = RangeSet(), set()
    for op, (a, b) in operations:
        if op == "add":
            rs.add(a, b)
            model |= set(range(a, b))
        elif op == "remove":
            rs.remove(a, b)
            model -= set(range(a, b))
        else:
            rs.truncate(a)
            model = {i for i in model if i < a}
        assert offsets(rs) == model
    pairs = list(rs)
    # Disjoint, sorted, never touching, never empty.
    for (s1, e1), (s2, _) in zip(pairs, pairs[1:], strict=False):
        assert s1 < e1 < s2
    assert all(s < e for s, e in pairs)
    a, b = probe
    window = set(range(a, b))
    assert rs.total == len(model)
    assert rs.count(a, b) == len(window & model)
    assert rs.covers(a, b) == window.issubset(model)
    assert rs.intersects(a, b) == bool(window & model)
    assert offsets(RangeSet(rs.overlapping(a, b))) == window & model
    gaps = rs.missing(a, b)
    assert offsets(RangeSet(gaps)) == window - model
    assert len(gaps) == len(RangeSet(gaps))  # gaps come out merged


def test_rangeset_merges_touching_ranges() -> None:
    rs = RangeSet([(0, 4), (8, 12)])
    rs.add(4, 8)
    assert list(rs) == [(0, 12)]
    rs.remove(2, 3)
    assert list(rs) == [(0, 2), (3, 12)]
    assert rs.first == 0
    copy = rs.copy()
    copy.remove(0, 100)
    assert not copy and list(rs) == [(0, 2), (3, 12)]


dirty_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 80), st.integers(0, 20)),
        st.tuples(st.just("truncate"), st.integers(0, 80), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=300)
@given(st.integers(0, 40), dirty_ops)
def test_dirty_map_invariant(base_size, operations) -> None:
    """Model the file as a list where each byte is "base[i]" or "new": the map's
    clean offsets must be exactly those still holding base[i] at offset i."""
    model: list[object] = list(range(base_size))  # int i = base byte i
    dm = DirtyMap(base_size)
    for op, a, n in operations:
        if op == "write" and n == 0:
            dm.write(a, n)  # a zero-length write never extends a file
        elif op == "write":
            if a > len(model):
                model += ["zero"] * (a - len(model))
            for i in range(a, a + n):
                if i < len(model):
                    model[i] = "new"
                else:
                    model.append("new")
            dm.write(a, n)
        else:
            model = model[:a] + ["zero"] * (a - len(model))
            dm.truncate(a)
        assert dm.size == len(model)
        clean = {i for i, v in enumerate(model) if v == i}
        assert set(range(dm.size)) - offsets(dm.dirty) == clean
        assert dm.dirty.total == 0 or max(offsets(dm.dirty)) < dm.size
    only_appended = (len(model) > base_size
                     and all(model[i] == i for i in range(base_size)))
    assert dm.append_only == only_appended
    assert dm.changed == (model != list(range(base_size)))


def test_dirty_map_append_detection() -> None:
    dm = DirtyMap(100)
    dm.write(100, 50)
    assert dm.append_only
    dm.truncate(50)
    dm.truncate(150)
    assert not dm.append_only  # bytes 50..100 are now zeros, not the old ones
    assert DirtyMap(0, 10).append_only
    assert not DirtyMap(10).changed


def test_part_layout_tiers() -> None:
    layout = PartLayout(first_size=10, per_tier=3, max_part_size=40, max_parts=10)
    sizes = [layout.bounds(n)[1] - layout.bounds(n)[0] for n in range(1, 11)]
    assert sizes == [10, 10, 10, 20, 20, 20, 40, 40, 40, 40]
    assert layout.max_size == sum(sizes)
    pos = 0
    for n in range(1, 11):
        start, end = layout.bounds(n)
        assert start == pos
        assert layout.index(start) == n and layout.index(end - 1) == n
        pos = end
    with pytest.raises(ValueError):
        layout.index(layout.max_size)
    assert layout.parts(0) == []
    assert layout.parts(35) == [(1, 0, 10), (2, 10, 20), (3, 20, 30), (4, 30, 35)]
    assert list(layout.numbers_touching(9, 31)) == [1, 2, 3, 4]
    assert list(layout.numbers_touching(5, 5)) == []


def test_default_layout_reaches_multi_terabyte_files() -> None:
    from cosfs.tuning import GiB, MiB, Tuning

    t = Tuning()
    layout = PartLayout(t.part_size, t.parts_per_tier, t.max_part_size)
    assert layout.bounds(1) == (0, 8 * MiB)
    assert layout.index(7 * GiB) == 7 * 1024 // 8 + 1  # 8 MiB parts for a few GB
    assert layout.max_size > 5 * 1024 * GiB
    assert all(e - s <= t.max_part_size for s, e in map(layout.bounds, range(1, 10_001)))
