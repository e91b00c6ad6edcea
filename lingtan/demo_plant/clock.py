"""The demo's simulated clock: site time that runs `speed` times faster than the wall clock.

Everything that stamps or schedules in plant time reads this clock: the simulated meters (their
counters advance in simulated time), the edge agent's poll ticks and Sample timestamps, the MQTT
gateway's payload time, and the alert engine. Transport timeouts, retries and the broker stay on
the wall clock: a Modbus answer takes as long as it takes, whatever the speed.
"""

from __future__ import annotations

import asyncio
import time


class SimClock:
    """Simulated epoch seconds; stands still at `start_s` until `start()`."""

    def __init__(self, start_s: float, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, not {speed}")
        self.start_s = start_s
        self.speed = speed
        self._mono0: float | None = None

    def start(self) -> None:
        """Let time run from `start_s`."""
        if self._mono0 is None:
            self._mono0 = time.monotonic()

    @property
    def running(self) -> bool:
        """Whether `start()` was called."""
        return self._mono0 is not None

    def now(self) -> float:
        """Simulated epoch seconds."""
        if self._mono0 is None:
            return self.start_s
        return self.start_s + (time.monotonic() - self._mono0) * self.speed

    def now_ms(self) -> int:
        """Simulated epoch milliseconds (the alert engine's clock)."""
        return int(self.now() * 1000)

    def wall_seconds(self, sim_s: float) -> float:
        """How long `sim_s` simulated seconds take on the wall clock."""
        return sim_s / self.speed

    def wall_time_of(self, sim_t: float) -> float:
        """The wall-clock epoch seconds at which simulated time reaches `sim_t`."""
        return time.time() + (sim_t - self.now()) / self.speed

    async def sleep_until(self, sim_t: float) -> None:
        """Sleep until simulated time reaches `sim_t`."""
        delay = (sim_t - self.now()) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)
