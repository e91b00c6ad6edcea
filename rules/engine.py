"""The accounting engine: counter readings → interval energy → Scope 2 (location-based)."""

from __future__ import annotations

from datetime import date

from rules.config import MeterConfig, Role, RulesConfig
from rules.energy import counter_delta, split
from rules.factors import Factor, FactorLibrary
from rules.ledger import Event, Ledger, MeterState, SiteInterval
from telemetry.config import SiteInfo
from telemetry.sample import Sample
from telemetry.timeutil import QUARTER_HOUR_MS, to_datetime

DERIVED_DEVICE = "site-15m"


class Engine:
    """Applies Samples to the ledger; call `apply` inside a ledger transaction."""

    def __init__(
        self, site: SiteInfo, cfg: RulesConfig, ledger: Ledger, factors: FactorLibrary
    ) -> None:
        self.site = site
        self.cfg = cfg
        self.ledger = ledger
        self.factors = factors
        self.meters = {m.device: m for m in cfg.meters}
        if cfg.grid_factor is not None and cfg.grid_factor not in factors:
            raise ValueError(f"rules.grid_factor: no factor {cfg.grid_factor!r} in the library")
        self.duplicates = 0

    def grid_factor(self, start_ms: int) -> Factor:
        """The location-based grid factor for an interval (by the site's local date)."""
        if self.cfg.grid_factor is not None:
            return self.factors[self.cfg.grid_factor]
        day: date = to_datetime(start_ms, self.site.timezone).date()
        return self.factors.grid(self.site.region, day)

    def apply(self, sample: Sample) -> bool:
        """Account for one Sample; False when it was already accounted for (a redelivery)."""
        meter = self.meters.get(sample.device)
        if meter is None or sample.site != self.site.id:
            return False
        q = meter.counter_quantity
        value = sample.values.get(q)
        if value is None:
            return False
        prev = self.ledger.meter_state(sample.site, sample.device, q)
        if prev is not None and sample.seq <= prev.seq:
            self.duplicates += 1
            return False
        state = MeterState(sample.seq, sample.ts, value)
        if prev is None:
            self.ledger.set_meter_state(sample.site, sample.device, q, state)
            return True
        if sample.ts <= prev.ts:
            self._event(
                sample,
                "clock",
                f"ts {sample.ts} is not after the previous reading's "
                f"{prev.ts}; reading skipped, baseline kept",
            )
            self.ledger.set_meter_state(
                sample.site, sample.device, q, MeterState(sample.seq, prev.ts, prev.value)
            )
            return True
        delta = counter_delta(prev.value, value, meter.counter_max)
        if delta.event is not None:
            self._event(sample, delta.event.value, delta.detail)
        if delta.amount > 0:
            self._book(meter, prev.ts, sample.ts, delta.amount)
        self.ledger.set_meter_state(sample.site, sample.device, q, state)
        return True

    def _book(self, meter: MeterConfig, start: int, end: int, kwh: float) -> None:
        for bucket, share in split(start, end, kwh, QUARTER_HOUR_MS):
            self.ledger.add_meter_energy(
                self.site.id, meter.device, meter.role.value, bucket, share
            )
            if meter.role is Role.GRID_IMPORT:
                factor = self.grid_factor(bucket)
                self.ledger.add_site_grid_import(
                    self.site.id, bucket, share, share * factor.kg_per_kwh, factor.id
                )

    def _event(self, s: Sample, kind: str, detail: str) -> None:
        self.ledger.record_event(Event(s.site, s.device, s.ts, s.seq, kind, detail))

    def watermark(self) -> int | None:
        """Time up to which every accounted meter has reported (intervals before it are closed)."""
        times = []
        for m in self.cfg.meters:
            st = self.ledger.meter_state(self.site.id, m.device, m.counter_quantity)
            if st is not None:
                times.append(st.ts)
        return min(times) if times else None

    def derived_sample(self, iv: SiteInterval, seq: int) -> Sample:
        """The derived Sample for a closed site interval."""
        return Sample(
            site=self.site.id,
            device=DERIVED_DEVICE,
            seq=seq,
            ts=iv.start_ms,
            values={
                "grid_import_kwh": iv.grid_import_kwh,
                "scope2_location_kgco2e": iv.scope2_location_kgco2e,
            },
        )
