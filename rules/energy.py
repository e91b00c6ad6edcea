"""Energy from counters: deltas of cumulative registers, split across interval boundaries."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CounterEvent(StrEnum):
    """What happened between two readings of a counter, besides normal growth."""

    ROLLOVER = "rollover"
    RESET = "reset"


@dataclass(frozen=True)
class Delta:
    """Energy between two readings, and what was done to get it."""

    amount: float
    event: CounterEvent | None = None
    detail: str = ""


def counter_delta(prev: float, cur: float, counter_max: float | None) -> Delta:
    """The increase from `prev` to `cur`.

    A decrease is a rollover when the register has a known maximum and the previous reading was
    in its top tenth while the new one is in its bottom tenth: the delta runs through the
    maximum. Any other decrease is a reset (meter replaced or cleared): the energy between the
    two reads is unknown, so nothing is counted for that step and the event says so.
    """
    if cur >= prev:
        return Delta(cur - prev)
    if counter_max is not None and prev > 0.9 * counter_max and cur < 0.1 * counter_max:
        amount = (counter_max - prev) + cur
        return Delta(
            amount,
            CounterEvent.ROLLOVER,
            f"counter rolled over at {counter_max:g}: {prev:g} -> {cur:g}, counted {amount:g}",
        )
    return Delta(
        0.0,
        CounterEvent.RESET,
        f"counter went down {prev:g} -> {cur:g}: treated as a reset; new baseline "
        f"{cur:g}, energy between these two reads not counted",
    )


def split(start_ms: int, end_ms: int, amount: float, interval_ms: int) -> list[tuple[int, float]]:
    """Share `amount`, accrued over (start_ms, end_ms], among the intervals it spans, by time."""
    if end_ms <= start_ms:
        raise ValueError(f"end {end_ms} is not after start {start_ms}")
    span = end_ms - start_ms
    out: list[tuple[int, float]] = []
    t = start_ms
    while t < end_ms:
        bucket = t - t % interval_ms
        nxt = min(bucket + interval_ms, end_ms)
        out.append((bucket, amount * (nxt - t) / span))
        t = nxt
    return out
