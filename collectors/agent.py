"""The edge agent: one task per device polls on its own clock; the outbox decouples the broker."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from collectors.config import DeviceConfig, EdgeConfig, device_profile
from collectors.modbus import ModbusTcpReader, ReadError
from collectors.outbox import Outbox
from collectors.publisher import OutboxPublisher
from telemetry import topics
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.mqtt import connect_async, make_client
from telemetry.timeutil import now_ms

log = logging.getLogger(__name__)


@dataclass
class DeviceHealth:
    """What the agent knows about one device, for status and the live view."""

    online: bool | None = None
    polls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_values: dict[str, float] = field(default_factory=dict)
    last_ts: int = 0


class EdgeAgent:
    """Polls every configured device and publishes through the outbox."""

    def __init__(
        self,
        site: SiteInfo,
        broker: BrokerConfig,
        edge: EdgeConfig,
        *,
        base_dir: Path | None = None,
    ) -> None:
        self.site = site
        self.broker = broker
        self.edge = edge
        self.base_dir = base_dir
        state_dir = (
            edge.state_dir
            if edge.state_dir.is_absolute() or base_dir is None
            else base_dir / edge.state_dir
        )
        self.outbox = Outbox(state_dir / "outbox.sqlite")
        self.health: dict[str, DeviceHealth] = {d.id: DeviceHealth() for d in edge.devices}
        self._readers: dict[tuple[str, int], ModbusTcpReader] = {}
        self.publisher: OutboxPublisher | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and publish until `stop` is set."""
        client = make_client(
            self.broker, f"lingtan-edge-{self.site.id}-{self.edge.agent_id}", persistent=False
        )
        agent_status = topics.status(self.site.id, self.edge.agent_id)
        client.will_set(agent_status, orjson.dumps({"state": "offline"}), qos=1, retain=True)
        client.on_connect = lambda c, *_: c.publish(
            agent_status, orjson.dumps({"state": "online", "ts": now_ms()}), qos=1, retain=True
        )
        connect_async(client, self.broker, persistent=False)
        self.publisher = OutboxPublisher(self.outbox, client, window=self.edge.publish_window)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.publisher.run(stop), name="edge-publisher")
                for dev in self.edge.devices:
                    tg.create_task(self._poll_loop(dev, client, stop), name=f"poll-{dev.id}")
        finally:
            client.publish(
                agent_status, orjson.dumps({"state": "offline", "ts": now_ms()}), qos=1, retain=True
            ).wait_for_publish(timeout=2)
            client.disconnect()
            client.loop_stop()
            for reader in self._readers.values():
                reader.close()
            self.outbox.close()

    def _reader(self, dev: DeviceConfig) -> ModbusTcpReader:
        # Devices behind one gateway share its connection; the reader serialises requests.
        key = (dev.transport.host, dev.transport.port)
        if key not in self._readers:
            self._readers[key] = ModbusTcpReader(
                dev.transport.host, dev.transport.port, timeout_s=dev.timeout_s
            )
        return self._readers[key]

    async def _poll_loop(self, dev: DeviceConfig, client: object, stop: asyncio.Event) -> None:
        profile = device_profile(dev, self.base_dir)
        plan = profile.plan()
        reader = self._reader(dev)
        health = self.health[dev.id]
        # Spread devices over the interval so they do not all fire in the same millisecond.
        next_at = time.monotonic() + random.uniform(0, min(dev.interval_s, 1.0))  # noqa: S311
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            ts = now_ms()
            health.polls += 1
            try:
                words = await reader.read(dev.unit_id, plan)
                values = profile.decode(words)
            except (ReadError, ValueError) as exc:
                self._failed(dev, health, str(exc))
            else:
                if values:
                    self.outbox.append(self.site.id, dev.id, ts, values)
                    assert self.publisher is not None
                    self.publisher.wake()
                health.last_values, health.last_ts = values, ts
                health.consecutive_failures = 0
                if health.online is not True:
                    health.online = True
                    self._status(dev.id, "online")
            next_at += dev.interval_s
            if next_at < time.monotonic():  # overran: skip missed ticks rather than burst
                missed = int((time.monotonic() - next_at) // dev.interval_s) + 1
                next_at += missed * dev.interval_s

    def _failed(self, dev: DeviceConfig, health: DeviceHealth, error: str) -> None:
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error = error
        log.warning("poll %s failed (%d in a row): %s", dev.id, health.consecutive_failures, error)
        if health.consecutive_failures >= self.edge.offline_after and health.online is not False:
            health.online = False
            self._status(dev.id, "offline", error)

    def _status(self, device: str, state: str, error: str = "") -> None:
        assert self.publisher is not None
        body: dict[str, object] = {"state": state, "ts": now_ms()}
        if error:
            body["error"] = error
        self.publisher.client.publish(
            topics.status(self.site.id, device), orjson.dumps(body), qos=1, retain=True
        )
