"""The dedupe window: every seq classified as a set of all seen seqs would, within its bounds."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.dedupe import Seen, SeenWindow

K = ("s1", "m1")


def _window(path: Path, max_ranges: int = 1000) -> SeenWindow:
    return SeenWindow(sqlite3.connect(path, isolation_level=None), max_ranges=max_ranges)


def test_in_order_device_keeps_one_range_and_survives_a_restart(tmp_path: Path) -> None:
    w = _window(tmp_path / "s.sqlite")
    for seq in range(100, 200):
        assert w.check(K, seq) is Seen.NEW
        w.add(K, seq)
    w.save()
    assert w.ranges(K) == [(100, 199)]
    again = _window(tmp_path / "s.sqlite")
    assert again.ranges(K) == [(100, 199)]
    assert again.check(K, 150) is Seen.DUPLICATE
    assert again.check(K, 200) is Seen.NEW
    assert again.check(K, 99) is Seen.NEW  # never seen: below the first range, not forgotten
    assert again.check(("s1", "other"), 150) is Seen.NEW


def test_gaps_fill_and_ranges_merge(tmp_path: Path) -> None:
    w = _window(tmp_path / "s.sqlite")
    for seq in (1, 2, 3, 7, 8, 5):
        w.add(K, seq)
    assert w.ranges(K) == [(1, 3), (5, 5), (7, 8)]
    w.add(K, 4)
    w.add(K, 6)
    w.save()
    assert w.ranges(K) == [(1, 8)]
    assert _window(tmp_path / "s.sqlite").ranges(K) == [(1, 8)]


def test_past_the_bound_the_oldest_range_is_forgotten_and_said_so(tmp_path: Path) -> None:
    w = _window(tmp_path / "s.sqlite", max_ranges=3)
    for seq in (0, 10, 20, 30):  # four ranges: the first is dropped
        w.add(K, seq)
    w.save()
    assert w.ranges(K) == [(10, 10), (20, 20), (30, 30)]
    assert w.check(K, 0) is Seen.OUTSIDE  # seen, but the window no longer knows
    assert w.check(K, 5) is Seen.NEW      # above everything forgotten: still decidable
    reopened = _window(tmp_path / "s.sqlite", max_ranges=3)
    assert reopened.check(K, 0) is Seen.OUTSIDE
    assert reopened.check(K, 20) is Seen.DUPLICATE


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=120), st.integers(1, 8))
def test_window_agrees_with_a_plain_set(tmp_path_factory: object, seqs: list[int],
                                        max_ranges: int) -> None:
    w = SeenWindow(sqlite3.connect(":memory:", isolation_level=None), max_ranges=max_ranges)
    seen: set[int] = set()
    for seq in seqs:
        verdict = w.check(K, seq)
        if verdict is Seen.DUPLICATE:
            assert seq in seen
        elif verdict is Seen.NEW:
            assert seq not in seen
        w.add(K, seq)
        seen.add(seq)
        ranges = w.ranges(K)
        assert len(ranges) <= max_ranges
        # sorted, disjoint and not touching
        assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(ranges))
    if max_ranges >= len(seqs):
        assert {s for lo, hi in w.ranges(K) for s in range(lo, hi + 1)} == seen
