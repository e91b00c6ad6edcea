"""The edge agent on the demo's simulated clock.

The agent polls on the boundaries of each device's interval and stamps a Sample with the time
of the read, both from the wall clock. In the demo a poll interval is simulated time (a
60-second interval is one wall second at speed 60) and a Sample's `ts` is the simulated time of
the read: the meters' counters advance in simulated time, so a wall-clock stamp would make every
step look `speed` times too fast (a spike to the accounts). Read timeouts, retries and the
publisher stay on the wall clock.

`collectors.agent.EdgeAgent` has no clock parameter, so this subclass re-states its poll and
health loops with the simulated clock and reuses everything else (reads, outbox, status, MQTT
devices). A clock seam in EdgeAgent would make this file go away.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from collectors.agent import EdgeAgent
from collectors.config import DeviceConfig, EdgeConfig
from lingtan.demo_plant.clock import SimClock
from telemetry.config import BrokerConfig, SiteInfo


class SimClockAgent(EdgeAgent):
    """`EdgeAgent` whose poll ticks and Sample timestamps follow `clock`."""

    def __init__(
        self,
        site: SiteInfo,
        broker: BrokerConfig,
        edge: EdgeConfig,
        *,
        clock: SimClock,
        base_dir: Path | None = None,
    ) -> None:
        super().__init__(site, broker, edge, base_dir=base_dir)
        self.clock = clock

    async def _poll_loop(self, dev: DeviceConfig) -> None:
        clock = self.clock
        reader = self._reader(dev)
        health = self.health[dev.id]
        interval = dev.interval_s  # simulated seconds
        tick = math.floor(clock.now() / interval + 1) * interval
        while True:
            await clock.sleep_until(tick)
            started = clock.now()
            wall_started = time.monotonic()
            health.last_jitter_ms = (started - tick) * 1000
            health.max_jitter_ms = max(health.max_jitter_ms, health.last_jitter_ms)
            health.polls += 1
            # the read may take until the next tick, in wall time
            values, error = await self._read(dev, reader, clock.wall_time_of(tick + interval))
            health.last_duration_ms = (time.monotonic() - wall_started) * 1000
            if error is None:
                self._succeeded(dev, health, int(started * 1000), values)
            else:
                self._failed(dev, health, error)
            tick += interval
            late = clock.now() - tick
            if late > 0:  # overran: skip the ticks that passed rather than burst
                skipped = math.floor(late / interval) + 1
                health.missed += skipped
                tick += skipped * interval

    async def _health_loop(self) -> None:
        clock = self.clock
        interval = self.edge.health_interval_s
        tick = math.floor(clock.now() / interval + 1) * interval
        while True:
            await clock.sleep_until(tick)
            self.report_health(int(tick * 1000))
            tick = max(tick + interval, math.floor(clock.now() / interval) * interval)
