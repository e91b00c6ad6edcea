"""Ingest: broker → validation → dedupe → stores; a message is acknowledged only once durable."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ingest.config import IngestConfig
from ingest.influx import DERIVED_MEASUREMENT, METER_MEASUREMENT, InfluxSink, line
from ingest.sqlite_store import SqliteStore
from ingest.validate import Rejected, validate
from telemetry import topics
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.mqtt import Consumer, Message
from telemetry.quantities import vocabulary
from telemetry.sample import Sample
from telemetry.timeutil import now_ms
from telemetry.topics import TopicKind

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    """Counts since start, for logs and the live view."""

    messages: int = 0
    samples_stored: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    sink_failures: int = 0


class IngestService:
    """The only writer to the time-series stores."""

    def __init__(
        self,
        site: SiteInfo,
        broker: BrokerConfig,
        cfg: IngestConfig,
        *,
        base_dir: Path | None = None,
    ) -> None:
        self.site = site
        self.cfg = cfg
        self.sites = set(cfg.sites or [site.id])
        path = (
            cfg.sqlite.path
            if cfg.sqlite.path.is_absolute() or base_dir is None
            else base_dir / cfg.sqlite.path
        )
        self.store = SqliteStore(path)
        self.influx = InfluxSink(cfg.influxdb) if cfg.influxdb is not None else None
        subs = [topics.all_samples(s) for s in sorted(self.sites)]
        subs += [topics.all_derived(s) for s in sorted(self.sites)]
        self.consumer = Consumer(broker, cfg.client_id, subs, max_pending=cfg.max_pending)
        self.stats = IngestStats()
        self._vocab = vocabulary()

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set."""
        self.consumer.start()
        try:
            while not stop.is_set():
                batch = self.consumer.get_batch(self.cfg.batch_messages, self.cfg.batch_wait_s)
                if batch:
                    self.process(batch, stop)
        finally:
            self.consumer.stop()
            if self.influx is not None:
                self.influx.close()
            self.store.close()

    def process(self, batch: list[Message], stop: threading.Event) -> None:
        """Validate, write durably (retrying while the sink is down), then acknowledge."""
        now = now_ms()
        meter: list[Sample] = []
        derived: list[Sample] = []
        rejects: list[tuple[Message, Rejected]] = []
        for m in batch:
            try:
                t, samples = validate(
                    m.topic,
                    m.payload,
                    vocabulary=self._vocab,
                    sites=self.sites,
                    now=now,
                    max_future_ms=self.cfg.max_future_s * 1000,
                    max_age_ms=self.cfg.max_age_days * 86_400_000,
                )
            except Rejected as rej:
                rejects.append((m, rej))
                continue
            (derived if t.kind is TopicKind.DERIVED else meter).extend(samples)
        delay = 0.5
        while True:
            try:
                self._write(meter, derived)
                break
            except Exception as exc:
                self.stats.sink_failures += 1
                log.error(
                    "write failed (%s); %d messages held, retrying in %.1f s",
                    exc,
                    len(batch),
                    delay,
                )
                if stop.wait(delay):
                    return  # not acknowledged: the broker redelivers after restart
                delay = min(delay * 2, 30.0)
        for m, reason in rejects:
            self._dead_letter(m, reason)
        self.consumer.ack(batch)
        self.stats.messages += len(batch)

    def _write(self, meter: list[Sample], derived: list[Sample]) -> None:
        samples = meter + derived
        fresh = self.store.unseen(samples)
        self.stats.duplicates += len(samples) - len(fresh)
        if not fresh:
            return
        if self.influx is not None:
            # Influx first: if we die before the SQLite commit, the replay rewrites the same
            # points (same series and time) rather than skipping them as already seen.
            derived_keys = {s.key for s in derived}
            self.influx.write(
                [
                    line(s, DERIVED_MEASUREMENT if s.key in derived_keys else METER_MEASUREMENT)
                    for s in fresh
                ]
            )
        self.stats.samples_stored += self.store.insert(fresh)

    def _dead_letter(self, m: Message, rej: Rejected) -> None:
        self.stats.rejected[rej.reason.split(":")[0]] += 1
        log.warning("rejected message on %s: %s", m.topic, rej.reason)
        body = {
            "topic": m.topic,
            "reason": rej.reason,
            "received_ms": now_ms(),
            "payload": m.payload.decode("utf-8", errors="replace")[:65536],
        }
        site = rej.site if rej.site in self.sites else sorted(self.sites)[0]
        self.consumer.publish(topics.deadletter(site), orjson.dumps(body), qos=1)
