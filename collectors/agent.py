"""The edge agent: one task per device polls on its own clock; the outbox decouples the broker."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho

from collectors.config import DeviceConfig, EdgeConfig, device_profile
from collectors.modbus import ModbusReader, ReadError, resolve
from collectors.mqtt_devices import MqttDeviceConfig, MqttDeviceListener
from collectors.outbox import Outbox
from collectors.profile import AnyProfile, Profile
from collectors.publisher import OutboxPublisher
from telemetry import topics
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.mqtt import LoopDriver, make_client, wait_published
from telemetry.timeutil import now_ms

log = logging.getLogger(__name__)


@dataclass
class DeviceHealth:
    """What the agent knows about one device, for status, health Samples and the live view."""

    online: bool | None = None
    polls: int = 0
    ok: int = 0
    failures: int = 0
    missed: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_duration_ms: float = 0.0
    last_jitter_ms: float = 0.0
    max_jitter_ms: float = 0.0
    last_values: dict[str, float] = field(default_factory=dict)
    last_ts: int = 0


async def _sleep_until(wall: float) -> None:
    """Sleep until wall-clock time `wall` (workers are cancelled to stop them)."""
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and return once every one has ended.

    A cancel can be lost: on Python 3.11, asyncio.wait_for (pymodbus waits for each answer
    with it) returns the answer when the cancel arrives in the same loop turn as the answer,
    and the worker polls on as if never asked to stop. So the cancel is repeated until the
    task has ended; a worker that took one ends at its next await.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)


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
        self.outbox = Outbox(state_dir / "outbox.sqlite", max_samples=edge.max_outbox_samples)
        self.mqtt_devices = edge.mqtt.devices if edge.mqtt is not None else []
        ids = [d.id for d in edge.devices] + [d.id for d in self.mqtt_devices]
        self.health: dict[str, DeviceHealth] = {i: DeviceHealth() for i in ids}
        self.profiles: dict[str, AnyProfile] = {
            d.id: device_profile(d, base_dir) for d in edge.devices
        }
        # the register map each device is polled with (discovered, for SunSpec devices)
        self.maps: dict[str, Profile] = {
            i: p for i, p in self.profiles.items() if isinstance(p, Profile)
        }
        self._readers: dict[str, ModbusReader] = {}
        self.publisher: OutboxPublisher | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and publish until `stop` is set."""
        client = make_client(
            self.broker, f"lingtan-edge-{self.site.id}-{self.edge.agent_id}", persistent=False
        )
        agent_status = topics.status(self.site.id, self.edge.agent_id)
        client.will_set(agent_status, orjson.dumps({"state": "offline"}), qos=1, retain=True)
        url = self.broker.url

        def on_connect(c: paho.Client, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
            if reason.is_failure:  # a wrong password, an ACL, a full broker: say so, retry
                log.error("broker %s refused connection: %s", url, reason)
                return
            log.info("connected to %s", url)
            c.publish(
                agent_status, orjson.dumps({"state": "online", "ts": now_ms()}), qos=1, retain=True
            )

        def on_disconnect(_c: paho.Client, _ud: Any, _flags: Any, reason: Any, _p: Any) -> None:
            if not stop.is_set():
                log.warning("disconnected from %s: %s; the outbox keeps the readings", url, reason)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        # paho's I/O on this loop, not in its own thread: a sixth less CPU at 500 devices
        driver = LoopDriver(client, self.broker, persistent=False)
        network_stop = asyncio.Event()
        network = asyncio.create_task(driver.run(network_stop), name="edge-mqtt")
        self.publisher = OutboxPublisher(self.outbox, client, window=self.edge.publish_window)
        listener = self._mqtt_listener()
        try:
            publishing = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.publisher.run(publishing), name="edge-publisher")
                workers = [
                    tg.create_task(self._poll_loop(dev), name=f"poll-{dev.id}")
                    for dev in self.edge.devices
                ]
                if listener is not None:
                    listener.start()
                    workers.append(tg.create_task(self._mqtt_watch(), name="mqtt-devices-watch"))
                if self.edge.health_interval_s > 0:
                    workers.append(tg.create_task(self._health_loop(), name="edge-health"))
                # Workers sleep without watching `stop` (cheaper at hundreds of devices):
                # cancel them. A cancelled poll appends nothing; an append is never half done.
                await stop.wait()
                await _cancel_all(workers)
                # a clean stop hands the last readings over before it goes
                if not await self.publisher.drain(self.edge.drain_s):
                    log.warning(
                        "stopping with %d Samples in the outbox; they go out at the next start",
                        self.outbox.cached_depth,
                    )
                publishing.set()
        finally:
            if listener is not None:
                listener.stop()
            if client.is_connected():  # else the broker has the will, or never heard of us
                offline = orjson.dumps({"state": "offline", "ts": now_ms()})
                await wait_published(client.publish(agent_status, offline, qos=1, retain=True), 2)
            await driver.disconnect()
            network_stop.set()
            await network
            for reader in self._readers.values():
                reader.close()
            self.outbox.close()

    def _mqtt_listener(self) -> MqttDeviceListener | None:
        src = self.edge.mqtt
        if src is None or not src.devices:
            return None
        loop = asyncio.get_running_loop()
        return MqttDeviceListener(
            src.broker or self.broker,
            src.client_id or f"lingtan-edge-{self.site.id}-{self.edge.agent_id}-devices",
            src.devices,
            tz=self.site.timezone,
            dispatch=loop.call_soon_threadsafe,
            on_reading=self._mqtt_reading,
            on_error=self._mqtt_error,
        )

    def _mqtt_reading(self, dev: MqttDeviceConfig, ts: int, values: dict[str, float]) -> None:
        h = self.health[dev.id]
        h.polls += 1
        h.ok += 1
        h.consecutive_failures = 0
        self.outbox.append(self.site.id, dev.id, ts, values)
        assert self.publisher is not None
        self.publisher.wake()
        h.last_values, h.last_ts = values, now_ms()
        if h.online is not True:
            h.online = True
            self._status(dev.id, "online")

    def _mqtt_error(self, dev: MqttDeviceConfig, reason: str) -> None:
        h = self.health[dev.id]
        h.polls += 1
        h.failures += 1
        h.last_error = reason
        log.warning("device %s sent a payload that does not fit its mapping: %s", dev.id, reason)

    async def _mqtt_watch(self) -> None:
        # a device that stops publishing is offline once its silence passes the limit
        while True:
            await asyncio.sleep(1.0)
            for dev in self.mqtt_devices:
                h = self.health[dev.id]
                silent_s = (now_ms() - h.last_ts) / 1000 if h.last_ts else None
                if h.online and silent_s is not None and silent_s > dev.offline_after_s:
                    h.online = False
                    self._status(dev.id, "offline", f"no message for {silent_s:.0f} s")

    def _reader(self, dev: DeviceConfig) -> ModbusReader:
        # Devices behind one gateway or on one serial line share it, one request at a time.
        key = dev.transport.key
        if key not in self._readers:
            self._readers[key] = ModbusReader(dev.transport, timeout_s=dev.timeout_s)
        return self._readers[key]

    async def _poll_loop(self, dev: DeviceConfig) -> None:
        reader = self._reader(dev)
        health = self.health[dev.id]
        interval = dev.interval_s
        tick = math.floor(time.time() / interval + 1) * interval
        while True:
            await _sleep_until(tick)
            started = time.time()
            health.last_jitter_ms = (started - tick) * 1000
            health.max_jitter_ms = max(health.max_jitter_ms, health.last_jitter_ms)
            health.polls += 1
            values, error = await self._read(dev, reader, tick + interval)
            health.last_duration_ms = (time.time() - started) * 1000
            if error is None:
                self._succeeded(dev, health, int(started * 1000), values)
            else:
                self._failed(dev, health, error)
            tick += interval
            late = time.time() - tick
            if late > 0:  # overran: skip the ticks that passed rather than burst
                skipped = math.floor(late / interval) + 1
                health.missed += skipped
                tick += skipped * interval

    async def _read(
        self, dev: DeviceConfig, reader: ModbusReader, deadline: float
    ) -> tuple[dict[str, float], str | None]:
        error = ""
        for attempt in range(dev.retries + 1):
            try:
                fixed = self.maps.get(dev.id)
                if fixed is None:
                    fixed = self.maps[dev.id] = await resolve(
                        reader, dev.unit_id, self.profiles[dev.id]
                    )
                return fixed.decode(await reader.read(dev.unit_id, fixed.plan())), None
            except (ReadError, ValueError) as exc:
                error = str(exc)
            pause = random.uniform(0.05, 0.15) * 2**attempt  # noqa: S311
            if attempt == dev.retries or time.time() + pause + dev.timeout_s > deadline:
                break
            await asyncio.sleep(pause)
        return {}, error

    def _succeeded(
        self, dev: DeviceConfig, health: DeviceHealth, ts: int, values: dict[str, float]
    ) -> None:
        health.ok += 1
        if values:
            self.outbox.append(self.site.id, dev.id, ts, values)
            assert self.publisher is not None
            self.publisher.wake()
        health.last_values, health.last_ts = values, ts
        health.consecutive_failures = 0
        if health.online is not True:
            health.online = True
            self._status(dev.id, "online")

    def _failed(self, dev: DeviceConfig, health: DeviceHealth, error: str) -> None:
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error = error
        log.warning("poll %s failed (%d in a row): %s", dev.id, health.consecutive_failures, error)
        if health.consecutive_failures >= self.edge.offline_after:
            if not isinstance(self.profiles[dev.id], Profile):
                self.maps.pop(dev.id, None)  # rediscover: the device may have been replaced
            if health.online is not False:
                health.online = False
                self._status(dev.id, "offline", error)

    def _status(self, device: str, state: str, error: str = "") -> None:
        assert self.publisher is not None
        body: dict[str, object] = {"state": state, "ts": now_ms()}
        if error:
            body["error"] = error
        counters = self.maps[device].counters() if device in self.maps else {}
        if counters:
            # where each counter register wraps, so rules can tell a rollover from a reset
            body["counters_max"] = counters
        self.publisher.client.publish(
            topics.status(self.site.id, device), orjson.dumps(body), qos=1, retain=True
        )

    async def _health_loop(self) -> None:
        interval = self.edge.health_interval_s
        tick = math.floor(time.time() / interval + 1) * interval
        while True:
            await _sleep_until(tick)
            self.report_health(int(tick * 1000))
            tick = max(tick + interval, math.floor(time.time() / interval) * interval)

    def report_health(self, ts: int) -> None:
        """Append the agent's own figures as Samples: per device, and of the agent itself."""
        for dev_id, h in self.health.items():
            self.outbox.append(
                self.site.id,
                dev_id,
                ts,
                {
                    "poll_ok_count": float(h.ok),
                    "poll_failed_count": float(h.failures),
                    "poll_missed_count": float(h.missed),
                    "poll_duration_ms": round(h.last_duration_ms, 3),
                },
            )
        oldest = self.outbox.oldest_ms()
        online = sum(1 for h in self.health.values() if h.online)
        self.outbox.append(
            self.site.id,
            self.edge.agent_id,
            ts,
            {
                "outbox_depth_count": float(self.outbox.cached_depth),
                "outbox_age_s": 0.0 if oldest is None else max(0.0, (now_ms() - oldest) / 1000),
                "outbox_dropped_count": float(self.outbox.dropped()),
                "devices_online_count": float(online),
                "devices_offline_count": float(len(self.health) - online),
            },
        )
        if self.publisher is not None:
            self.publisher.wake()
