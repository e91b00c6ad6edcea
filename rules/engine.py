"""The accounting engine: counter readings → interval energy → Scope 2 (location-based)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from rules.config import MeterConfig, Role, RulesConfig
from rules.energy import counter_delta, split
from rules.factors import Factor, FactorLibrary
from rules.ledger import Event, Ledger, MeterState, SiteInterval
from telemetry.config import SiteInfo
from telemetry.sample import Sample
from telemetry.timeutil import QUARTER_HOUR_MS, to_datetime

DERIVED_DEVICE = "site-15m"


def _kw(kwh: float, start_ms: int, end_ms: int) -> float:
    """Average power of `kwh` over (start_ms, end_ms]."""
    return kwh * 3_600_000 / max(1, end_ms - start_ms)


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
        self._grid_cache: dict[int, Factor] = {}  # interval start -> its grid factor
        self.bookings = 0  # energy bookings so far: tells a caller whether a Sample moved a figure

    def grid_factor(self, start_ms: int) -> Factor:
        """The location-based grid factor for an interval (by the site's local date)."""
        if self.cfg.grid_factor is not None:
            return self.factors[self.cfg.grid_factor]
        found = self._grid_cache.get(start_ms)
        if found is None:
            if len(self._grid_cache) > 10_000:
                self._grid_cache.clear()
            day: date = to_datetime(start_ms, self.site.timezone).date()
            found = self._grid_cache[start_ms] = self.factors.grid(self.site.region, day)
        return found

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
                sample.site, sample.device, q, replace(prev, seq=sample.seq)
            )
            return True
        self._step(sample, meter, prev, value)
        return True

    def _step(self, sample: Sample, meter: MeterConfig, prev: MeterState, value: float) -> None:
        """Count the step from the baseline to this reading, or hold it as a spike."""
        q = meter.counter_quantity
        if prev.held_ts is not None and prev.held_value is not None:
            self._decide_held(sample, meter, prev, prev.held_ts, prev.held_value, value)
            return
        delta = counter_delta(prev.value, value, meter.counter_max)
        if delta.amount > 0 and self._too_fast(meter, delta.amount, prev.ts, sample.ts):
            # Hold the reading, keep the baseline: the next reading tells a glitch from a jump.
            self._event(
                sample,
                "spike",
                f"{prev.value:g} -> {value:g} in {(sample.ts - prev.ts) / 1000:g} s implies "
                f"{_kw(delta.amount, prev.ts, sample.ts):.1f} kW, above the meter's rating "
                f"{meter.max_power_kw:g} kW: held out of the totals until the next reading",
            )
            self.ledger.set_meter_state(
                sample.site,
                sample.device,
                q,
                MeterState(sample.seq, prev.ts, prev.value, sample.ts, value),
            )
            return
        if delta.event is not None:
            self._event(sample, delta.event.value, delta.detail)
        if delta.amount > 0:
            self._count(sample, meter, prev.ts, sample.ts, delta.amount)
        self.ledger.set_meter_state(
            sample.site, sample.device, q, MeterState(sample.seq, sample.ts, value)
        )

    def _decide_held(  # noqa: PLR0917 - the held reading travels as two plain values
        self,
        sample: Sample,
        meter: MeterConfig,
        prev: MeterState,
        held_ts: int,
        held_value: float,
        value: float,
    ) -> None:
        """A reading was held as a spike; this one says whether it was a glitch or a jump."""
        q = meter.counter_quantity
        state = MeterState(sample.seq, sample.ts, value)
        from_base = counter_delta(prev.value, value, meter.counter_max)
        if from_base.event is None and not self._too_fast(
            meter, from_base.amount, prev.ts, sample.ts
        ):
            self._event(
                sample,
                "spike",
                f"the held reading {held_value:g} was a glitch: this reading {value:g} "
                f"continues from {prev.value:g}; {from_base.amount:g} counted from there, the "
                f"glitch not at all",
            )
            self._count(sample, meter, prev.ts, sample.ts, from_base.amount)
        else:
            jump = counter_delta(prev.value, held_value, None).amount
            from_held = counter_delta(held_value, value, meter.counter_max)
            if from_held.event is None and not self._too_fast(
                meter, from_held.amount, held_ts, sample.ts
            ):
                self._event(
                    sample,
                    "spike",
                    f"the counter jumped {prev.value:g} -> {held_value:g} and went on from "
                    f"there: the jump ({jump:g}) is held out of the totals for review; "
                    f"{from_held.amount:g} counted from the new baseline",
                )
                self._count(sample, meter, held_ts, sample.ts, from_held.amount)
            else:
                self._event(
                    sample,
                    "spike",
                    f"readings {prev.value:g} -> {held_value:g} -> {value:g} fit no "
                    f"plausible course: nothing counted between {prev.value:g} and {value:g}; "
                    f"new baseline {value:g}",
                )
        self.ledger.set_meter_state(sample.site, sample.device, q, state)

    def _too_fast(self, meter: MeterConfig, kwh: float, start: int, end: int) -> bool:
        return meter.max_power_kw is not None and _kw(kwh, start, end) > meter.max_power_kw

    def _count(self, sample: Sample, meter: MeterConfig, start: int, end: int, kwh: float) -> None:
        estimated = end - start > meter.gap_s * 1000
        if estimated:
            self._event(
                sample,
                "gap",
                f"no reading for {(end - start) / 1000:g} s (more than {meter.gap_s:g} s): "
                f"{kwh:g} spread evenly over the gap, flagged estimated",
            )
        self._book(meter, start, end, kwh, estimated=estimated)

    def _book(
        self, meter: MeterConfig, start: int, end: int, kwh: float, *, estimated: bool
    ) -> None:
        self.bookings += 1
        for bucket, share in split(start, end, kwh, QUARTER_HOUR_MS):
            self.ledger.add_meter_energy(
                self.site.id, meter.device, meter.role.value, bucket, share, estimated=estimated
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
