"""A plant's day as ingest would store it: meter readings, edge and ingest health, and the
derived figures the real rules code computes from those readings (the accounts' figures, and
the counts of firing alerts from the real alert engine, as rules/service.py publishes them).

Every line comes from ingest's own line builder (ingest.influx.line), so the dashboards are
tested against exactly the measurements, tags and fields ingest writes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ingest.influx import DERIVED_MEASUREMENT, METER_MEASUREMENT, line
from lingtan.config import LoadedConfig, parse
from lingtan.grafana.layout import Layout
from rules.accounts import open_accounts
from rules.alerts import AlertEngine, AlertsConfig, AlertStore, Figures, Reading, Severity, State
from rules.engine import SITE_DEVICE
from rules.ledger import Ledger
from rules.live import Live
from rules.service import ALERTS_DEVICE
from telemetry.sample import Quality, Sample

SITE = "wuhan-fab1"
OTHER_SITE = "suzhou-2"
AGENT = "edge-01"
INGEST = "ingest-lingtan-ingest"

CONFIG = f"""
site: {{id: {SITE}, timezone: Asia/Shanghai, region: CN-HB}}
rules:
  ledger: ledger.sqlite
  target: {{baseline_year: 2020, baseline_tco2e: 20000, target_year: 2030, reduction: 0.5,
           scopes: [scope1, scope2_market]}}
  meters:
    - {{device: grid-main, role: grid_import}}
    - {{device: pv-roof, role: generation, renewable: true}}
    - {{device: line-a, role: submeter, area: assembly, line: line-a}}
    - {{device: line-b, role: submeter, area: assembly, line: line-b}}
    - {{device: compressor-1, role: submeter, area: utilities}}
    - {{device: dc-it, role: it_load, zone: dc1}}
    - {{device: dc-intake, role: dc_facility, zone: dc1}}
"""

# kW drawn by each meter (before the day's shape); the grid meter sees the rest of the site.
LOADS = {"line-a": 300.0, "line-b": 220.0, "compressor-1": 90.0, "dc-it": 60.0}
DC_OVERHEAD = 1.4  # the intake draws the IT load times this
UNMETERED_KW = 120.0
PV_PEAK_KW = 250.0

# Alerts: only the built-in meter_offline (a meter silent for 15 minutes), as critical.
ALERT_RULES = {
    "defaults": {"meter_offline": {"severity": "critical"}, "data_gap": False,
                 "demand_near_limit": False, "off_trajectory": False},
}

STEP_MS = 60_000
HEALTH_MS = 5 * 60_000
FIGURES_MS = 15 * 60_000
# line-b is silent for this long in the middle of the day: a gap
GAP = (0.45, 0.55)
# the gas meter (no electricity counter) is silent here: a gap of another quantity
GAS_GAP = (0.70, 0.78)
# compressor-1's readings in this part of the day were estimated (a backfilled export)
ESTIMATED = (0.30, 0.35)


def config(folder: Path) -> LoadedConfig:
    """The plant's site config (written to `folder`, where its ledger goes)."""
    path = folder / "site.yaml"
    path.write_text(CONFIG)
    return parse(CONFIG, path)


def layout(folder: Path) -> Layout:
    """The dashboards' layout for this plant."""
    c = config(folder).config
    return Layout.from_configs([(c.site.id, c.rules.meters)])


@dataclass
class PlantDay:
    """Everything stored, as line protocol, and the time span it covers."""

    lines: list[str]
    start_ms: int
    end_ms: int
    derived: list[Sample]


def _shape(f: float) -> float:
    """A factory's load over the day, 0..1 of the span: busier in the middle."""
    return 0.7 + 0.3 * math.sin(math.pi * f)


def readings(start_ms: int, end_ms: int) -> Iterator[Sample]:
    """Meter readings every minute, health every five, in time order."""
    seq: dict[str, int] = {}
    counters: dict[str, float] = {}

    def sample(site: str, device: str, ts: int, values: dict[str, float],
               quality: Quality = Quality.GOOD) -> Sample:
        key = f"{site}/{device}"
        seq[key] = seq.get(key, 0) + 1
        return Sample(site=site, device=device, seq=seq[key], ts=ts, values=values,
                      quality=quality)

    def counter(device: str, kw: float) -> float:
        counters[device] = counters.get(device, 1000.0) + kw * STEP_MS / 3_600_000
        return round(counters[device], 4)

    polls: dict[str, int] = {}
    span = end_ms - start_ms
    for ts in range(start_ms, end_ms + 1, STEP_MS):
        f = (ts - start_ms) / span
        kw = {d: p * _shape(f) for d, p in LOADS.items()}
        kw["dc-intake"] = kw["dc-it"] * DC_OVERHEAD
        pv = max(0.0, PV_PEAK_KW * math.sin(math.pi * f))
        site_kw = sum(v for d, v in kw.items() if d != "dc-it") + UNMETERED_KW * _shape(f)
        kw["grid-main"] = site_kw - pv
        for device, p in sorted(kw.items()):
            value = counter(device, p)
            if device == "line-b" and GAP[0] <= f < GAP[1]:
                continue
            quality = (Quality.ESTIMATED if device == "compressor-1"
                       and ESTIMATED[0] <= f < ESTIMATED[1] else Quality.GOOD)
            polls[device] = polls.get(device, 0) + 1
            yield sample(SITE, device, ts,
                         {"active_power_kw": round(p, 3), "energy_import_kwh": value}, quality)
        yield sample(SITE, "pv-roof", ts, {"active_power_kw": round(-pv, 3),
                                          "energy_export_kwh": counter("pv-roof", pv)})
        gas = counter("gas-main", 36.0)
        if not GAS_GAP[0] <= f < GAS_GAP[1]:
            polls["gas-main"] = polls.get("gas-main", 0) + 1
            yield sample(SITE, "gas-main", ts, {"gas_volume_m3": gas})
        yield sample(OTHER_SITE, "grid-main", ts,
                     {"active_power_kw": 80.0, "energy_import_kwh": counter("other", 80.0)})
        if (ts - start_ms) % HEALTH_MS == 0:
            n = (ts - start_ms) // STEP_MS + 1
            for device in [*sorted(kw), "pv-roof", "gas-main"]:
                ok = polls.get(device, n)
                yield sample(SITE, device, ts, {
                    "poll_ok_count": float(ok), "poll_failed_count": float(n - ok),
                    "poll_missed_count": 0.0, "poll_duration_ms": 18.5})
            offline = float(GAP[0] <= f < GAP[1]) + float(GAS_GAP[0] <= f < GAS_GAP[1])
            backlog = 40.0 * offline
            yield sample(SITE, AGENT, ts, {
                "outbox_depth_count": backlog, "outbox_age_s": 60.0 * offline,
                "outbox_dropped_count": 0.0, "devices_online_count": 9.0 - offline,
                "devices_offline_count": offline})
            written = float(n * 12)
            yield sample(SITE, INGEST, ts, {
                "ingest_messages_count": written, "ingest_samples_written_count": written,
                "ingest_values_written_count": written * 2, "ingest_duplicates_count": 0.0,
                "ingest_rejected_count": 0.0, "ingest_sink_errors_count": 0.0,
                "ingest_batch_messages_count": 12.0, "ingest_write_ms": 3.2,
                "ingest_lag_ms": 150.0 + 10 * offline, "ingest_pending_count": 0.0})


def plant_day(folder: Path, start_ms: int, end_ms: int) -> PlantDay:
    """Readings from `start_ms` to `end_ms`, and the derived figures rules makes of them."""
    loaded = config(folder)
    c = loaded.config
    ledger = Ledger(folder / "ledger.sqlite")
    accounts = open_accounts(c.site, c.rules, ledger, loaded.base_dir)
    engine, live = accounts.engine, Live(accounts)
    lines: list[str] = []
    derived: list[Sample] = []
    seq = 0
    next_figures = start_ms + FIGURES_MS
    metered = {m.device for m in c.rules.meters}

    def publish(as_of: int) -> None:
        nonlocal seq
        if engine.touched_from is not None:
            live.invalidate(engine.touched_from)
            engine.touched_from = None
        out: list[Sample] = []
        for iv in ledger.unpublished(SITE, as_of):
            seq += 1
            out.append(engine.derived_sample(iv, seq))
            ledger.mark_published(SITE, iv.start_ms, iv.version)
        figures = live.figures(as_of)
        seq += 1
        out.append(Sample(site=SITE, device=SITE_DEVICE, seq=seq, ts=as_of, values=figures.values))
        for zone, pue in sorted(figures.pue_today.items()):
            seq += 1
            out.append(Sample(site=SITE, device=f"dc-{zone}", seq=seq, ts=as_of,
                              values={"pue_today_ratio": pue}))
        derived.extend(out)
        lines.extend(line(s, DERIVED_MEASUREMENT) for s in out)

    # The default meter_offline rule, made critical, on the real alert engine at the readings'
    # time; rules/service.py publishes what is firing as device `alerts` when the counts change.
    now = [start_ms]
    alerts = AlertEngine(
        c.site,
        AlertsConfig.model_validate(ALERT_RULES),
        AlertStore(folder / "alerts.sqlite"),
        clock=lambda: now[0],
    )
    latest: dict[tuple[str, str], Reading] = {}
    counts: tuple[int, int] | None = None

    def evaluate(ts: int) -> None:
        nonlocal seq, counts
        now[0] = ts
        alerts.evaluate(Figures(latest=dict(latest), expected_devices=frozenset(metered)))
        firing = [a for a in alerts.states() if a.state is State.FIRING]
        critical = sum(1 for a in firing if alerts.rules[a.rule].severity is Severity.CRITICAL)
        if (len(firing), critical) != counts:
            counts = (len(firing), critical)
            seq += 1
            s = Sample(site=SITE, device=ALERTS_DEVICE, seq=seq, ts=ts, values={
                "alerts_firing_count": float(counts[0]),
                "alerts_critical_count": float(counts[1])})
            derived.append(s)
            lines.append(line(s, DERIVED_MEASUREMENT))

    with ledger.transaction():
        last_ts = start_ms
        for s in readings(start_ms, end_ms):
            if s.ts != last_ts:
                evaluate(last_ts)
                last_ts = s.ts
            if s.ts >= next_figures:
                publish(next_figures)
                next_figures += FIGURES_MS
            lines.append(line(s, METER_MEASUREMENT))
            if s.site == SITE:
                for q, v in s.values.items():
                    latest[(s.device, q)] = Reading(s.ts, v)
                if s.device in metered:
                    engine.apply(s)
        evaluate(last_ts)
        publish(end_ms)
    ledger.close()
    alerts.store.close()
    return PlantDay(lines, start_ms, end_ms, derived)
