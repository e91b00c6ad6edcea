"""Energy from counters: deltas, rollovers, resets, and splitting across intervals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.energy import CounterEvent, counter_delta, split
from telemetry.timeutil import QUARTER_HOUR_MS

T0 = 1_764_000_000_000 - 1_764_000_000_000 % QUARTER_HOUR_MS  # a quarter-hour boundary


def test_growth_is_the_difference() -> None:
    d = counter_delta(100.0, 112.5, None)
    assert (d.amount, d.event) == (12.5, None)


def test_a_rollover_runs_through_the_register_maximum() -> None:
    # a uint32 Wh register read as kWh wraps at 4294967.296 kWh
    d = counter_delta(4_294_960.0, 3.0, 4_294_967.296)
    assert d.event is CounterEvent.ROLLOVER
    assert d.amount == pytest.approx(7.296 + 3.0)
    assert "rolled over" in d.detail


def test_a_decrease_far_from_the_maximum_is_a_reset_and_counts_nothing() -> None:
    d = counter_delta(48_210.0, 12.0, 4_294_967.296)
    assert (d.amount, d.event) == (0.0, CounterEvent.RESET)
    assert "not counted" in d.detail


def test_without_a_known_maximum_any_decrease_is_a_reset() -> None:
    assert counter_delta(10.0, 9.0, None).event is CounterEvent.RESET


def test_a_delta_inside_one_interval_stays_there() -> None:
    assert split(T0 + 1000, T0 + 61_000, 5.0, QUARTER_HOUR_MS) == [(T0, 5.0)]


def test_a_delta_across_a_boundary_is_split_by_time() -> None:
    # 10 minutes before the boundary and 5 after: two thirds and one third
    parts = split(T0 + 5 * 60_000, T0 + 20 * 60_000, 9.0, QUARTER_HOUR_MS)
    assert parts == [(T0, pytest.approx(6.0)), (T0 + QUARTER_HOUR_MS, pytest.approx(3.0))]


def test_a_long_gap_is_spread_over_every_interval_it_covers() -> None:
    parts = split(T0, T0 + 4 * QUARTER_HOUR_MS, 8.0, QUARTER_HOUR_MS)
    assert [p[0] for p in parts] == [T0 + i * QUARTER_HOUR_MS for i in range(4)]
    assert [p[1] for p in parts] == [2.0, 2.0, 2.0, 2.0]


def test_a_reading_exactly_on_the_boundary_belongs_to_the_interval_it_ends() -> None:
    # (start, end]: energy accrued up to the boundary is in the earlier interval
    assert split(T0 - 60_000, T0, 1.0, QUARTER_HOUR_MS) == [(T0 - QUARTER_HOUR_MS, 1.0)]


def test_an_empty_span_is_an_error() -> None:
    with pytest.raises(ValueError, match="not after"):
        split(T0, T0, 1.0, QUARTER_HOUR_MS)


@given(st.integers(0, 10**13), st.integers(1, 10**9), st.floats(0, 1e9))
def test_split_conserves_energy(start: int, span: int, amount: float) -> None:
    parts = split(start, start + span, amount, QUARTER_HOUR_MS)
    assert sum(p[1] for p in parts) == pytest.approx(amount, rel=1e-9, abs=1e-9)
    assert all(p[0] % QUARTER_HOUR_MS == 0 for p in parts)
