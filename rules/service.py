"""Rules: consume meter Samples, account in the ledger, publish derived figures."""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho

from rules.accounts import open_accounts
from rules.alerts import (
    Alerts,
    AlertsConfig,
    BalanceFigures,
    Figures,
    QualityFigures,
    Reading,
    Severity,
    State,
    TargetFigures,
    publish_events,
)
from rules.config import RulesConfig
from rules.engine import SITE_DEVICE
from rules.ledger import Ledger
from rules.live import Live, LiveFigures
from rules.periods import PeriodKind, period_of
from telemetry import topics
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.mqtt import Consumer, Message
from telemetry.sample import Sample, WireError, decode, encode
from telemetry.timeutil import QUARTER_HOUR_MS, floor_ms, now_ms

log = logging.getLogger(__name__)

ALERTS_DEVICE = "alerts"  # the derived Sample counting the site's firing alerts


def _local_midnight(ts_ms: int, timezone: str) -> int:
    """The start of the site day holding `ts_ms`."""
    return period_of(ts_ms, PeriodKind.DAY, timezone).start_ms


def _resolve(path: Path, base_dir: Path | None) -> Path:
    return path if path.is_absolute() or base_dir is None else base_dir / path


class RulesService:
    """One site's accounting; a message is acknowledged once the ledger has committed it."""

    def __init__(
        self,
        site: SiteInfo,
        broker: BrokerConfig,
        cfg: RulesConfig,
        *,
        base_dir: Path | None = None,
        alerts: AlertsConfig | None = None,
        alerts_every_s: float = 1.0,
    ) -> None:
        self.site = site
        self.cfg = cfg
        self.ledger = Ledger(_resolve(cfg.ledger, base_dir))
        self.accounts = open_accounts(site, cfg, self.ledger, base_dir)
        self.engine = self.accounts.engine
        self.live = Live(self.accounts)
        self._site_bookings = -1  # engine bookings when the site figures were last published
        self._last_site_publish = -1e9
        self.last_figures: LiveFigures | None = None
        # Alerts over the live figures and the meters' latest readings (rules/alerts)
        self.alerts = None if alerts is None else Alerts(site, alerts, base_dir=base_dir)
        self.alerts_every_s = alerts_every_s
        self._last_alerts = -1e9
        self._latest: dict[tuple[str, str], Reading] = {}
        self._alert_mids: dict[int, int] = {}  # MQTT mid -> alert event id
        self._alert_counts: tuple[int, int] | None = None  # (firing, critical) last published
        subs = [topics.sample(site.id, m.device) for m in cfg.meters]
        # the devices' retained status says where each counter register rolls over
        subs += [topics.status(site.id, m.device) for m in cfg.meters]
        self.consumer = Consumer(broker, cfg.client_id, subs)
        self.consumer.client.on_publish = self._on_publish
        self._acks: queue.Queue[int] = queue.Queue()
        self._inflight: dict[int, tuple[int, int]] = {}  # mid -> (interval start, version)
        self.samples_applied = 0
        self.invalid_messages = 0
        self.derived_published = 0
        self._last_open_publish = -1e9
        # For each derived publish: how long the oldest reading it newly includes waited (ms),
        # from the reading's time to the publish
        self.publish_lag_ms: collections.deque[int] = collections.deque(maxlen=100_000)
        self._oldest_unpublished: int | None = None

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set."""
        self.consumer.start()
        if self.alerts is not None:
            self.alerts.start()
            self._publish_alerts(self.alerts.unpublished())
        try:
            while not stop.is_set():
                batch = self.consumer.get_batch(self.cfg.batch_messages, self.cfg.batch_wait_s)
                if batch:
                    self.process(batch)
                self._settle_acks()
                self.publish_changed()
                self.evaluate_alerts()
        finally:
            self.consumer.stop()
            if self.alerts is not None:
                self.alerts.close()
            self.ledger.close()

    def evaluate_alerts(self) -> None:
        """Evaluate the alert rules (at most every `alerts_every_s`) and publish their events."""
        now = time.monotonic()
        if self.alerts is None or now - self._last_alerts < self.alerts_every_s:
            return
        self._last_alerts = now
        self._publish_alerts(self.alerts.evaluate(self.figures()))
        # what is firing, as a derived Sample: ingest stores it like any figure, so dashboards
        # show active alerts from the database (the events themselves are on the alert topic)
        firing = [a for a in self.alerts.engine.states() if a.state is State.FIRING]
        critical = sum(
            1
            for a in firing
            if (rule := self.alerts.engine.rules.get(a.rule)) is not None
            and rule.severity is Severity.CRITICAL
        )
        counts = (len(firing), critical)
        if counts != self._alert_counts:
            self._alert_counts = counts
            with self.ledger.transaction():
                seq = self.ledger.next_derived_seq(self.site.id)
            sample = Sample(
                site=self.site.id,
                device=ALERTS_DEVICE,
                seq=seq,
                ts=now_ms(),
                values={
                    "alerts_firing_count": float(counts[0]),
                    "alerts_critical_count": float(counts[1]),
                },
            )
            self.consumer.publish(topics.derived(self.site.id), encode(sample), qos=1)

    def _publish_alerts(self, events: list[Any]) -> None:
        if events:
            self._alert_mids.update(publish_events(self.consumer.client, self.site.id, events))

    def figures(self) -> Figures:
        """The snapshot alert rules are evaluated on."""
        f = self.last_figures
        expected = frozenset(m.device for m in self.cfg.meters)
        if f is None:
            return Figures(latest=dict(self._latest), expected_devices=expected)
        target = None
        if f.target is not None:
            t = f.target
            target = TargetFigures(
                budget_to_date=t.budget_to_date_tco2e,
                actual_to_date=t.actual_to_date_tco2e,
                forecast=t.forecast_tco2e,
                allowed=t.allowed_tco2e,
            )
        day_start = _local_midnight(f.as_of_ms, self.site.timezone)
        return Figures(
            latest=dict(self._latest),
            expected_devices=expected,
            target=target,
            site_power_kw=f.site_power_kw,
            renewable_share=f.values.get("renewable_share_month_ratio"),
            balance=BalanceFigures(
                site_kwh=f.consumption_today_kwh,
                submetered_kwh=f.submetered_today_kwh,
                unmetered_kwh=max(0.0, f.consumption_today_kwh - f.submetered_today_kwh),
            ),
            quality=QualityFigures(
                events=self.ledger.event_counts(self.site.id, day_start, f.as_of_ms + 1),
                estimated_share=f.estimated_share_today,
            ),
        )

    def process(self, batch: list[Message]) -> None:
        """Account for a batch in one ledger transaction, then acknowledge it."""
        samples: list[Sample] = []
        for m in batch:
            if m.topic.endswith("/" + topics.TopicKind.STATUS):
                self._status(m)
                continue
            try:
                decoded = decode(m.payload)
                samples += decoded
            except WireError as exc:
                # ingest dead-letters bad payloads; rules only skips them
                self.invalid_messages += 1
                log.warning("skipping invalid message on %s: %s", m.topic, exc)
        for s in samples:
            for q, v in s.values.items():
                prev = self._latest.get((s.device, q))
                if prev is None or s.ts >= prev.ts_ms:
                    self._latest[(s.device, q)] = Reading(s.ts, v)
        with self.ledger.transaction():
            for s in samples:
                booked = self.engine.bookings
                if self.engine.apply(s):
                    self.samples_applied += 1
                moved = self.engine.bookings > booked  # a baseline reading moves no figure
                if moved and (self._oldest_unpublished is None or s.ts < self._oldest_unpublished):
                    self._oldest_unpublished = s.ts
        if self.engine.touched_from is not None:
            self.live.invalidate(self.engine.touched_from)
            self.engine.touched_from = None
        self.consumer.ack(batch)

    def _status(self, m: Message) -> None:
        """Take the counter wrap points from a device's status (published by the edge)."""
        try:
            body = orjson.loads(m.payload)
            device = topics.Topic.parse(m.topic).device or ""
        except (orjson.JSONDecodeError, ValueError) as exc:
            log.warning("skipping invalid status on %s: %s", m.topic, exc)
            return
        wraps = body.get("counters_max") if isinstance(body, dict) else None
        if not isinstance(wraps, dict):
            return
        for quantity, top in wraps.items():
            if isinstance(top, int | float) and not isinstance(top, bool) and top > 0:
                self.engine.counter_max_reported[(device, str(quantity))] = float(top)

    def publish_changed(self) -> None:
        """Publish site intervals whose figures changed since they were last published.

        A closed interval (every meter has reported past its end) goes out at once; the open
        one at most every `derived_every_s`, so the live figure moves without a message per
        reading. A later revision of an interval is a new Sample with the same ts: latest seq wins.
        """
        mark = self.engine.watermark()
        if mark is None:
            return
        open_from = floor_ms(mark, QUARTER_HOUR_MS)
        now = time.monotonic()
        open_due = now - self._last_open_publish >= self.cfg.derived_every_s
        pending = {start for start, _ in self._inflight.values()}
        closed = False
        for iv in self.ledger.unpublished(self.site.id, mark):
            is_open = iv.start_ms >= open_from
            if iv.start_ms in pending or (is_open and not open_due):
                continue
            with self.ledger.transaction():
                seq = self.ledger.next_derived_seq(self.site.id)
            info = self.consumer.publish(
                topics.derived(self.site.id), encode(self.engine.derived_sample(iv, seq)), qos=1
            )
            self._inflight[info.mid] = (iv.start_ms, iv.version)
            self.derived_published += 1
            if self._oldest_unpublished is not None:
                self.publish_lag_ms.append(now_ms() - self._oldest_unpublished)
                self._oldest_unpublished = None
            if is_open:
                self._last_open_publish = now
            else:
                closed = True
        site_due = now - self._last_site_publish >= self.cfg.derived_every_s
        if self.engine.bookings != self._site_bookings and (site_due or closed):
            self.publish_site(mark)
            self._last_site_publish = now

    def publish_site(self, as_of_ms: int) -> None:
        """Today, month and fiscal-year figures to `as_of_ms` as a Sample of device `site`.

        Each data-centre zone's PUE today goes out as a Sample of device `dc-{zone}`. These are
        gauges: a newer one supersedes an older one, so they are not tracked for redelivery.
        """
        self._site_bookings = self.engine.bookings
        figures = self.last_figures = self.live.figures(as_of_ms)
        with self.ledger.transaction():
            seqs = [
                self.ledger.next_derived_seq(self.site.id)
                for _ in range(1 + len(figures.pue_today))
            ]
        out = [
            Sample(
                site=self.site.id,
                device=SITE_DEVICE,
                seq=seqs[0],
                ts=as_of_ms,
                values=figures.values,
            )
        ]
        for seq, (zone, pue) in zip(seqs[1:], sorted(figures.pue_today.items()), strict=True):
            out.append(
                Sample(
                    site=self.site.id,
                    device=f"dc-{zone}",
                    seq=seq,
                    ts=as_of_ms,
                    values={"pue_today_ratio": pue},
                )
            )
        for sample in out:
            if sample.values:
                self.consumer.publish(topics.derived(self.site.id), encode(sample), qos=1)

    def _on_publish(self, _c: paho.Client, _ud: Any, mid: int, _rc: Any, _p: Any) -> None:
        self._acks.put(mid)

    def _settle_acks(self) -> None:
        done: list[tuple[int, int]] = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._inflight.pop(mid, None)
            if entry is not None:
                done.append(entry)
            event = self._alert_mids.pop(mid, None)
            if event is not None and self.alerts is not None:
                self.alerts.mark_published([event])
        if done:
            with self.ledger.transaction():
                for start, version in done:
                    self.ledger.mark_published(self.site.id, start, version)
