"""Ingest: broker → validation → dedupe → stores; a message is acknowledged only once durable.

One batch at a time:
  1. validate every message (a bad one is dead-lettered with the reason, whole);
  2. drop Samples the dedupe window has seen (counted); with InfluxDB, dead-letter a device's
     Sample that gives a quantity another value than the Sample before it at the same ts
     (InfluxDB keeps one point per series and time: it would overwrite that value);
  3. write the rest to InfluxDB, then to the embedded store, retrying while a sink is down
     (nothing is acknowledged meanwhile, and the broker sends no more than max_pending);
  4. mark them seen, durably;
  5. publish the dead letters and wait for the broker to take them;
  6. acknowledge the batch.
A crash anywhere before 6 means the broker redelivers; every step before it is idempotent.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as paho
from prometheus_client import start_http_server

from ingest.config import IngestConfig
from ingest.dedupe import Seen
from ingest.influx import DERIVED_MEASUREMENT, METER_MEASUREMENT, InfluxSink, SinkUnavailable, line
from ingest.metrics import IngestMetrics, IngestStats, reason_class
from ingest.sqlite_store import SqliteStore
from ingest.state import IngestState
from ingest.validate import Rejected, validate
from telemetry import topics
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.mqtt import Consumer, Message, make_client
from telemetry.quantities import vocabulary
from telemetry.sample import Sample, encode
from telemetry.timeutil import now_ms
from telemetry.topics import TopicKind

log = logging.getLogger(__name__)

__all__ = ["CheckResult", "IngestService", "IngestStats"]

_HOUR_S = 3600.0
_DEAD_LETTER_CONFIRM_S = 10.0


@dataclass(frozen=True, slots=True)
class _DeadLetter:
    site: str
    topic: str
    reason: str
    payload: bytes


_Series = tuple[str, str, str]  # site, device, quality: a meter series in InfluxDB


@dataclass(frozen=True, slots=True)
class _Point:
    """What InfluxDB holds of a series at one ts: the Samples written at it."""

    ts: int
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One connection check of `lingtan ingest --check`."""

    what: str
    ok: bool
    detail: str


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
        if cfg.share_group is not None and broker.protocol != "5":
            raise ValueError("ingest.share_group needs MQTT 5 (broker.protocol: '5')")
        self.site = site
        self.broker = broker
        self.cfg = cfg
        self.sites = set(cfg.sites or [site.id])
        self.devices = {s: set(d) for s, d in cfg.devices.items()}
        if site.id in self.devices:
            self.devices[site.id].add(cfg.self_device)

        def resolve(p: Path) -> Path:
            return p if p.is_absolute() or base_dir is None else base_dir / p

        embedded = cfg.embedded
        self.store = SqliteStore(resolve(embedded.path)) if embedded is not None else None
        self.influx = (
            InfluxSink(
                cfg.influxdb,
                lines_per_request=cfg.influxdb.lines_per_request,
                bytes_per_request=cfg.influxdb.bytes_per_request,
            )
            if cfg.influxdb is not None
            else None
        )
        self.state = IngestState(
            resolve(cfg.state_path or Path(f"var/{cfg.client_id}.state.sqlite")),
            max_ranges=cfg.dedupe_ranges,
        )
        subs = [topics.all_samples(s) for s in sorted(self.sites)]
        subs += [topics.all_derived(s) for s in sorted(self.sites)]
        if cfg.share_group is not None:
            subs = [f"$share/{cfg.share_group}/{t}" for t in subs]
        self.consumer = Consumer(broker, cfg.client_id, subs, max_pending=cfg.max_pending)
        self.stats = IngestStats()
        self.metrics = IngestMetrics()
        self._vocab = vocabulary()
        # The last point written per meter series (site, device, quality): the point of the
        # series' most recent Sample, to keep InfluxDB from overwriting a value with the next
        # Sample's; in memory: a clash with the last Sample before a restart is not seen. The
        # embedded store keeps both (its key has seq).
        self._last_point: dict[_Series, _Point] = {}

    # -- running ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set."""
        server = None
        if self.cfg.metrics_port is not None:
            server, _ = start_http_server(
                self.cfg.metrics_port, self.cfg.metrics_host, registry=self.metrics.registry
            )
            log.info(
                "metrics on http://%s:%d/metrics", self.cfg.metrics_host, self.cfg.metrics_port
            )
        self.consumer.start()
        next_health = time.monotonic() + self.cfg.health_interval_s
        next_prune = time.monotonic()
        try:
            while not stop.is_set():
                batch = self.consumer.get_batch(self.cfg.batch_messages, self.cfg.batch_wait_s)
                if batch:
                    self.process(batch, stop)
                now = time.monotonic()
                if now >= next_health:
                    next_health = now + self.cfg.health_interval_s
                    self._publish_health()
                if now >= next_prune:
                    next_prune = now + _HOUR_S
                    self._prune()
        finally:
            self.consumer.stop()
            if server is not None:
                server.shutdown()
            if self.influx is not None:
                self.influx.close()
            if self.store is not None:
                self.store.close()
            self.state.close()

    def process(self, batch: list[Message], stop: threading.Event) -> None:
        """Validate, write durably (retrying while a sink is down), then acknowledge."""
        started = time.perf_counter()
        now = now_ms()
        window = self.state.window
        fresh: list[Sample] = []
        derived: list[bool] = []
        origin: list[str] = []
        letters: list[_DeadLetter] = []
        in_batch: set[tuple[str, str, int]] = set()
        points: dict[_Series, _Point] = {}  # this batch's, over _last_point
        duplicates = 0
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
                    devices=self.devices,
                )
            except Rejected as rej:
                letters.append(_DeadLetter(rej.site, m.topic, rej.reason, m.payload))
                continue
            is_derived = t.kind is TopicKind.DERIVED
            for s in samples:
                key = s.key
                seen = window.check((s.site, s.device), s.seq)
                if seen is Seen.NEW and key not in in_batch:
                    in_batch.add(key)
                    clash = None if is_derived else self._overwrite(s, points)
                    if clash is not None:
                        letters.append(_DeadLetter(s.site, m.topic, clash, encode(s)))
                        continue
                    fresh.append(s)
                    derived.append(is_derived)
                    origin.append(m.topic)
                elif seen is Seen.OUTSIDE:
                    letters.append(
                        _DeadLetter(
                            s.site,
                            m.topic,
                            f"seq {s.seq} of {s.site}/{s.device} is below the dedupe window: "
                            "a replay cannot be told from a new reading",
                            encode(s),
                        )
                    )
                else:
                    duplicates += 1
                    if not is_derived and self.influx is not None:
                        # stored before (a crash, a restart): its point is the last one again
                        self._fold(s, points, self._joins(s, points))
        refused = self._write_until_durable(fresh, derived, stop)
        if refused is None:
            return  # stopping with the sink down: nothing acknowledged, the broker redelivers
        for i, reason in refused.items():
            letters.append(_DeadLetter(fresh[i].site, origin[i], reason, encode(fresh[i])))
        stored = [s for i, s in enumerate(fresh) if i not in refused]
        self._remember(points, {fresh[i].key for i in refused})
        for s in stored:
            window.add((s.site, s.device), s.seq)
        self.state.commit_window()
        if not self._dead_letter(letters):
            log.error(
                "dead letters not confirmed by the broker; %d messages left "
                "unacknowledged for redelivery",
                len(batch),
            )
            return
        self.consumer.ack(batch)
        self._account(batch, stored, duplicates, letters, started)

    def _overwrite(self, s: Sample, points: dict[_Series, _Point]) -> str | None:
        """Why a new meter Sample would overwrite a value in InfluxDB, if it would.

        Samples of a device at one ts are one point there: with other quantities, or the same
        values, they add to it (the edge's poll figures of a device come at the tick its read
        may also be at); with another value of a quantity they would replace it. `points`
        holds this batch's points (over the stored ones); `s` is added to it unless refused.
        A derived Sample is never asked: a revision replaces its interval's figures on purpose.
        """
        if self.influx is None:  # the embedded store keeps every Sample
            return None
        joins = self._joins(s, points)
        for p in joins.samples if joins is not None else ():
            differ = [
                f"{q} {v!r} where seq {p.seq} has {p.values[q]!r}"
                for q, v in s.values.items()
                if q in p.values and p.values[q] != v
            ]
            if differ:
                return (
                    f"overwrite: seq {s.seq} of {s.site}/{s.device} at ts {s.ts} has "
                    f"{', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}; the "
                    "database keeps one point per device and time"
                )
        self._fold(s, points, joins)
        return None

    def _joins(self, s: Sample, points: dict[_Series, _Point]) -> _Point | None:
        """The last point written of `s`'s series, if `s` is at its ts (InfluxDB merges them)."""
        series = (s.site, s.device, s.quality.value)
        last = points.get(series) or self._last_point.get(series)
        return last if last is not None and last.ts == s.ts else None

    def _fold(self, s: Sample, points: dict[_Series, _Point], joins: _Point | None) -> None:
        """`s` as part of its series' last point: the one it joins, or a point of its own."""
        series = (s.site, s.device, s.quality.value)
        if joins is None:
            points[series] = _Point(s.ts, (s,))
        elif all(p.key != s.key for p in joins.samples):  # a redelivery is in it already
            points[series] = _Point(s.ts, (*joins.samples, s))

    def _remember(self, points: dict[_Series, _Point], refused: set[tuple[str, str, int]]) -> None:
        """Keep the batch's points, without Samples the database refused."""
        if refused:
            for series, pt in list(points.items()):
                kept = tuple(p for p in pt.samples if p.key not in refused)
                if len(kept) < len(pt.samples):
                    if kept:
                        points[series] = _Point(pt.ts, kept)
                    else:
                        del points[series]
        self._last_point.update(points)

    def _write_until_durable(
        self, fresh: list[Sample], derived: list[bool], stop: threading.Event
    ) -> dict[int, str] | None:
        """Write to every sink; {index: reason} of Samples refused; None if stopped first."""
        if not fresh:
            return {}
        delay = 0.5
        while True:
            try:
                return self._write(fresh, derived)
            except (SinkUnavailable, sqlite3.Error) as exc:
                sink = "influxdb" if isinstance(exc, SinkUnavailable) else "sqlite"
                self.stats.sink_failures += 1
                self.metrics.sink_errors.labels(sink).inc()
                hint = exc.retry_after_s if isinstance(exc, SinkUnavailable) else None
                wait = delay if hint is None else min(max(hint, 0.1), 300.0)
                log.error(
                    "%s write failed (%s); %d Samples held, retrying in %.1f s",
                    sink,
                    exc,
                    len(fresh),
                    wait,
                )
                if stop.wait(wait):
                    return None
                delay = min(delay * 2, 30.0)

    def _write(self, fresh: list[Sample], derived: list[bool]) -> dict[int, str]:
        refused: dict[int, str] = {}
        if self.influx is not None:
            lines = [
                line(s, DERIVED_MEASUREMENT if d else METER_MEASUREMENT)
                for s, d in zip(fresh, derived, strict=True)
            ]
            for r in self.influx.write(lines):
                refused[r.index] = f"InfluxDB refused the line: {r.reason}"
        if self.store is not None:
            # InfluxDB first: a Sample it refused is dead-lettered, not kept in one store only.
            self.store.insert([s for i, s in enumerate(fresh) if i not in refused])
        return refused

    def _dead_letter(self, letters: list[_DeadLetter]) -> bool:
        """Publish dead letters at QoS 1; True when the broker took them all."""
        infos: list[paho.MQTTMessageInfo] = []
        for d in letters:
            log.warning("rejected message on %s: %s", d.topic, d.reason)
            body = {
                "topic": d.topic,
                "reason": d.reason,
                "received_ms": now_ms(),
                "payload": d.payload.decode("utf-8", errors="replace"),
            }
            site = d.site if d.site in self.sites else sorted(self.sites)[0]
            infos.append(self.consumer.publish(topics.deadletter(site), orjson.dumps(body)))
        deadline = time.monotonic() + _DEAD_LETTER_CONFIRM_S
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                return False
            if not info.is_published():
                return False
        return True

    def _account(
        self,
        batch: list[Message],
        stored: list[Sample],
        duplicates: int,
        letters: list[_DeadLetter],
        started: float,
    ) -> None:
        st, mt = self.stats, self.metrics
        values = sum(len(s.values) for s in stored)
        st.messages += len(batch)
        st.samples_stored += len(stored)
        st.values_stored += values
        st.duplicates += duplicates
        for d in letters:
            label = reason_class(d.reason)
            st.rejected[label] += 1
            mt.rejected.labels(label).inc()
        elapsed = time.perf_counter() - started
        st.last_batch_messages = len(batch)
        st.last_write_ms = elapsed * 1000
        mt.messages.inc(len(batch))
        mt.samples.inc(len(stored))
        mt.values.inc(values)
        mt.duplicates.inc(duplicates)
        mt.batch_size.observe(len(batch))
        mt.write_seconds.observe(elapsed)
        if stored:
            done = now_ms()
            for s in stored:
                mt.lag_seconds.observe(max(0, done - s.ts) / 1000)
            st.last_lag_ms = float(max(0, done - min(s.ts for s in stored)))
        mt.pending.set(self.consumer.pending())

    # -- housekeeping -------------------------------------------------------------------------

    def health_sample(self) -> Sample:
        """This process's figures as a Sample of its own device."""
        st = self.stats
        device = self.cfg.self_device
        return Sample(
            site=self.site.id,
            device=device,
            seq=self.state.next_seq(f"self:{device}"),
            ts=now_ms(),
            values={
                "ingest_messages_count": float(st.messages),
                "ingest_samples_written_count": float(st.samples_stored),
                "ingest_values_written_count": float(st.values_stored),
                "ingest_duplicates_count": float(st.duplicates),
                "ingest_rejected_count": float(st.rejected_total),
                "ingest_sink_errors_count": float(st.sink_failures),
                "ingest_batch_messages_count": float(st.last_batch_messages),
                "ingest_write_ms": round(st.last_write_ms, 3),
                "ingest_lag_ms": st.last_lag_ms,
                "ingest_pending_count": float(self.consumer.pending()),
            },
        )

    def _publish_health(self) -> None:
        if not self.consumer.connected.is_set():
            return  # not queued in memory while the broker is away; the next one catches up
        s = self.health_sample()
        self.consumer.publish(topics.sample(s.site, s.device), encode(s))

    def _prune(self) -> None:
        embedded = self.cfg.embedded
        if self.store is None or embedded is None or embedded.retention_days is None:
            return
        cutoff = now_ms() - embedded.retention_days * 86_400_000
        deleted = self.store.prune(cutoff)
        if deleted:
            log.info(
                "retention: deleted %d points older than %d days", deleted, embedded.retention_days
            )

    # -- lingtan ingest --check -----------------------------------------------------------------

    def check(self, timeout_s: float = 10.0) -> list[CheckResult]:
        """Connect to the broker and every sink once; say what works."""
        results = [self._check_broker(timeout_s)]
        if self.influx is not None:
            try:
                self.influx.ping()
                results.append(CheckResult("influxdb", True, f"{self.influx.cfg.url} answers"))
            except SinkUnavailable as exc:
                results.append(CheckResult("influxdb", False, str(exc)))
        if self.store is not None:
            try:
                self.store.writable()
                results.append(CheckResult("sqlite", True, f"{self.store.path} is writable"))
            except sqlite3.Error as exc:
                results.append(CheckResult("sqlite", False, f"{self.store.path}: {exc}"))
        return results

    def _check_broker(self, timeout_s: float) -> CheckResult:
        done = threading.Event()
        outcome: list[str] = []

        def on_connect(_c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            outcome.append(str(reason))
            done.set()

        client = make_client(self.broker, f"{self.cfg.client_id}-check", persistent=False)
        client.on_connect = on_connect
        try:
            client.connect(self.broker.host, self.broker.port, keepalive=10)
        except OSError as exc:
            return CheckResult("broker", False, f"{self.broker.url}: {exc}")
        client.loop_start()
        try:
            if not done.wait(timeout_s):
                return CheckResult(
                    "broker", False, f"{self.broker.url}: no CONNACK in {timeout_s:.0f} s"
                )
            ok = outcome[0] == "Success"
            return CheckResult("broker", ok, f"{self.broker.url}: {outcome[0]}")
        finally:
            client.disconnect()
            client.loop_stop()
