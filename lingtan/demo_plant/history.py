"""The demo's past: a month of the plant's 15-minute readings, sent down the live pipeline.

The readings go into the edge agent's own outbox, so they take the device's seq numbers (the
live readings continue from them), then out to the broker at QoS 1, as an edge box that comes
back after a month offline sends its backlog; ingest stores them and rules accounts for them
exactly as it does live readings. The only difference is the batching: up to `per_message`
Samples of one device in a message (the wire format allows a list), so a month goes through the
embedded broker in a few seconds rather than a few minutes.
"""

from __future__ import annotations

import collections
import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from collectors.outbox import Outbox
from lingtan.demo_plant.model import DAY_S, PV_WRAP_KWH, Plant, PlantSpec, dropout_windows
from telemetry.config import BrokerConfig
from telemetry.mqtt import connect_async, make_client

STEP_S = 900  # a logger's 15-minute record


class Ahead:
    """How far the history may run ahead of what the pipeline has taken: `room(sent)`.

    The embedded broker (amqtt) waits 5 seconds for a subscriber's PUBACK, then drops the
    message for that subscriber; ingest and rules acknowledge a message once what it caused is
    on disk, after every message before it. So the Samples sent and not yet taken are kept to
    `ahead_s` seconds of what the pipeline has taken in the last `rate_s` (at least `least`, so
    it starts and never stalls, at most `most`). With a fixed 8000, the slowest PUBACK of a
    month's history came after 1.8 s on a quiet 2-core machine and after 4.3 s with four busy
    processes and a disk writer beside it (a timed-out message never arrives, and the demo
    waited for it); with a second ahead, after 1.7 s and 1.9 s, the history taking 9 s and 17 s.
    """

    def __init__(
        self,
        taken: Callable[[], int],
        *,
        ahead_s: float = 1.0,
        least: int = 1000,
        most: int = 8000,
        rate_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.taken = taken
        self.ahead_s, self.least, self.most, self.rate_s = ahead_s, least, most, rate_s
        self.clock = clock
        self.limit = least  # the Samples that may be ahead now
        self._marks: collections.deque[tuple[float, int]] = collections.deque()

    def room(self, sent: int) -> bool:
        """Whether the next message may go, with `sent` Samples sent so far."""
        now, taken = self.clock(), self.taken()
        marks = self._marks
        marks.append((now, taken))
        while len(marks) > 2 and now - marks[1][0] >= self.rate_s:
            marks.popleft()
        t0, n0 = marks[0]
        rate = (taken - n0) / (now - t0) if now > t0 else 0.0
        self.limit = int(min(self.most, max(self.least, rate * self.ahead_s)))
        return sent - taken < self.limit


@dataclass(frozen=True)
class Reading:
    """One device's record at one time."""

    device: str
    ts_ms: int
    values: dict[str, float]


def rollover_offset(kwh_at_wrap: float) -> float:
    """The inverter's lifetime yield before the simulation, so that it wraps at `kwh_at_wrap`.

    Half a kWh past the wrap: a register reading exactly 0 is SunSpec's "not implemented".
    """
    return PV_WRAP_KWH - kwh_at_wrap + 0.5


def generate(
    plant: Plant,
    devices: list[str],
    end_s: float,
    *,
    days: float,
    quantize: Callable[[str, dict[str, float]], dict[str, float]] | None = None,
) -> list[Reading]:
    """The plant's readings every 15 minutes from `days` before `end_s` to `end_s`.

    `plant` starts at the first record's time and ends at `end_s` (the live part continues
    from there). A dropped-out meter has no records in its dropouts. The inverter's lifetime
    counter is set so that it wraps `rollover_days_ago` before `end_s` at noon (later if the
    history is shorter). `quantize`:
    the values as the device's registers hold them (what a live poll of it would read).
    """
    spec = plant.spec
    start = math.floor((end_s - days * DAY_S) / STEP_S) * STEP_S
    times = [float(t) for t in range(int(start), int(end_s), STEP_S)]
    if not times or times[-1] < end_s:
        times.append(end_s)
    gaps = {m.device: dropout_windows(m, start, end_s, None) for m in spec.meters}
    pv = next((m for m in spec.meters if m.kind == "pv"), None)
    wrap_at = _wrap_time(plant, spec, end_s, start) if pv is not None else None
    pv_at_wrap = 0.0
    out: list[Reading] = []
    for t in times:
        plant.advance(t, max_step_s=300)
        if wrap_at is not None and pv is not None and t <= wrap_at:
            pv_at_wrap = plant.state[pv.device].counters["energy_export_kwh"]
        ts = int(t * 1000)
        for dev in devices:
            if any(a <= t < b for a, b in gaps.get(dev, ())):
                continue
            out.append(Reading(dev, ts, plant.values(_meter_of(spec, dev), full=False)))
    if pv is not None:
        plant.pv_offset_kwh = rollover_offset(pv_at_wrap)
        out = [
            Reading(r.device, r.ts_ms, r.values | {"energy_export_kwh": _wrapped(r, plant)})
            if _meter_of(spec, r.device) == pv.device
            else r
            for r in out
        ]
    if quantize is not None:
        out = [Reading(r.device, r.ts_ms, quantize(r.device, r.values)) for r in out]
    return out


def _wrapped(r: Reading, plant: Plant) -> float:
    return (plant.pv_offset_kwh + r.values["energy_export_kwh"]) % PV_WRAP_KWH


def _wrap_time(plant: Plant, spec: PlantSpec, end_s: float, start_s: float) -> float | None:
    pv = spec.meter("pv")
    if pv.rollover_days_ago is None:
        return None
    local = datetime.fromtimestamp(end_s, plant.zone)
    # that many days ago at noon, or later if the history is shorter
    for days_ago in range(pv.rollover_days_ago, -1, -1):
        noon = (local - timedelta(days=days_ago)).replace(
            hour=12, minute=0, second=0, microsecond=0
        )
        if start_s < noon.timestamp() < end_s:
            return noon.timestamp()
    return None


def _meter_of(spec: PlantSpec, device: str) -> str:
    """The simulated meter an edge device reads (the grid meter serves import and export)."""
    if device in {m.device for m in spec.meters}:
        return device
    return spec.meter("grid").device


def load(
    readings: list[Reading],
    site: str,
    outbox_path: Path,
    broker: BrokerConfig,
    *,
    per_message: int = 192,
    timeout_s: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
    room: Callable[[int], bool] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Put `readings` in the edge outbox and publish them; return the Samples sent.

    Messages go out one device-batch at a time in turns across devices (a day or two each), so
    rules' watermark - the time every meter has reported to - moves forward as they arrive.
    Rows leave the outbox once the broker has acknowledged them, as the edge publisher does.
    `room(sent)`: whether the consumers can take more (the next batch waits until it is true):
    the embedded broker gives up on a PUBACK after 5 seconds, so its subscribers' backlog is
    kept to what they handle in well under that. `stop` set: give up (InterruptedError).
    """
    outbox = Outbox(outbox_path)
    try:
        for r in readings:
            outbox.append(site, r.device, r.ts_ms, r.values)
        outbox.flush()
        rows = outbox.pending(0, len(readings) + outbox.cached_depth + 1)
        by_topic: dict[str, list[tuple[int, bytes]]] = {}
        for row_id, topic, payload in rows:
            by_topic.setdefault(topic, []).append((row_id, payload))
        batches: list[tuple[str, list[tuple[int, bytes]]]] = []
        chunks = {t: [v[i : i + per_message] for i in range(0, len(v), per_message)]
                  for t, v in by_topic.items()}  # fmt: skip
        for i in range(max((len(c) for c in chunks.values()), default=0)):
            batches += [(t, c[i]) for t, c in chunks.items() if i < len(c)]
        acked = _publish(batches, site, broker, timeout_s, progress, room, stop)
        outbox.delete(acked)
        outbox.flush()
        return len(acked)
    finally:
        outbox.close()


class _Acks:
    """Which outbox rows the broker has acknowledged (paho calls back from its own thread).

    The callback may come before `publish` has returned the message id: an early ack waits in
    `early` for its rows. No lock is held while calling paho (paho holds its own while it calls
    back).
    """

    def __init__(self, total: int, progress: Callable[[int, int], None] | None) -> None:
        self.total = total
        self.progress = progress
        self.lock = threading.Lock()
        self.inflight: dict[int, list[int]] = {}
        self.early: set[int] = set()
        self.acked: list[int] = []
        self.done = threading.Event()

    def _take(self, ids: list[int]) -> None:
        self.acked.extend(ids)
        if self.progress is not None:
            self.progress(len(self.acked), self.total)
        if len(self.acked) >= self.total:
            self.done.set()

    def on_publish(self, _c: paho.Client, _ud: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self.lock:
            ids = self.inflight.pop(mid, None)
            if ids is None:
                self.early.add(mid)
            else:
                self._take(ids)

    def sent(self, mid: int, ids: list[int]) -> None:
        with self.lock:
            if mid in self.early:
                self.early.discard(mid)
                self._take(ids)
            else:
                self.inflight[mid] = ids


def _publish(  # noqa: PLR0917 - load's arguments, passed on
    batches: list[tuple[str, list[tuple[int, bytes]]]],
    site: str,
    broker: BrokerConfig,
    timeout_s: float,
    progress: Callable[[int, int], None] | None,
    room: Callable[[int], bool] | None,
    stop: threading.Event | None,
) -> list[int]:
    acks = _Acks(sum(len(b) for _, b in batches), progress)
    client = make_client(broker, f"lingtan-demo-history-{site}", persistent=False)
    client.on_publish = acks.on_publish
    connect_async(client, broker, persistent=False)
    sent = 0
    try:
        for topic, rows in batches:
            if room is not None and not wait_for(
                functools.partial(room, sent), timeout_s, stop=stop
            ):
                raise TimeoutError(f"the pipeline took no more history in {timeout_s:g} s")
            sent += len(rows)
            payload = b"[" + b",".join(p for _, p in rows) + b"]"
            info = client.publish(topic, payload, qos=1)
            acks.sent(info.mid, [i for i, _ in rows])
        if batches and not wait_for(acks.done.is_set, timeout_s, stop=stop):
            raise TimeoutError(
                f"the broker acknowledged {len(acks.acked)} of {acks.total} history Samples "
                f"in {timeout_s:g} s"
            )
    finally:
        client.disconnect()
        client.loop_stop()
    with acks.lock:
        return list(acks.acked)


def wait_for(
    cond: Callable[[], bool],
    timeout_s: float,
    every_s: float = 0.02,
    *,
    stop: threading.Event | None = None,
) -> bool:
    """Poll `cond` until it holds or `timeout_s` passes; `stop` set: give up at once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        if stop is not None and stop.is_set():
            raise InterruptedError("stopped")
        time.sleep(every_s)
    return cond()
