"""Replay: the live engine run over recorded Samples, for backfill and audit.

Input is JSON lines in the wire format (one Sample, or a list, per line). Samples are applied
in time order; the ledger dedupes on (site, device, seq) through each meter's baseline, so
replaying a file in pieces, in order, gives the same ledger as replaying it in one go.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rules.config import Role
from rules.engine import Engine
from rules.factors import FactorLibrary
from rules.ledger import Ledger
from telemetry.sample import Sample, WireError, decode


class ReplayError(ValueError):
    """A line of the input that is not Samples; names the file and line."""


def read_samples(path: Path) -> Iterator[Sample]:
    """Samples from a JSON-lines file, each line checked as ingest checks a message."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield from decode(raw)
            except WireError as exc:
                raise ReplayError(f"{path}:{n}: {exc}") from None


def replay(engine: Engine, samples: Iterable[Sample], *, chunk: int = 10_000) -> int:
    """Apply Samples in time order (per chunk of `chunk`); return how many were accounted."""
    applied = 0
    batch: list[Sample] = []

    def flush() -> None:
        nonlocal applied
        batch.sort(key=lambda s: (s.ts, s.device, s.seq))
        with engine.ledger.transaction():
            applied += sum(engine.apply(s) for s in batch)
        batch.clear()

    for s in samples:
        batch.append(s)
        if len(batch) >= chunk:
            flush()
    flush()
    return applied


def balance(engine: Engine, start_ms: int = 0, end_ms: int = 2**62) -> dict[str, Any]:
    """Site consumption, on-site renewable consumed and the sub-meter balance, per interval.

    Per 15-minute interval: consumption = grid import + generation + battery discharge - grid
    export - battery charge. Exported electricity is taken from renewable generation first, so
    renewable consumed on site = max(0, renewable generation - export), at most the interval's
    consumption: a sunny noon's surplus never offsets a dark night. Sub-meters and IT load are a
    breakdown of consumption; the rest is the unmetered remainder. PUE per data-centre zone is
    its facility intake over its IT energy in the same period.
    """
    per: dict[int, dict[str, float]] = {}
    zones: dict[str, list[float]] = {}  # zone: [facility kWh, IT kWh]
    for device, role, start, kwh in engine.ledger.meter_energy(engine.site.id, start_ms, end_ms):
        meter = engine.meters.get(device)
        key = role
        if role == Role.GENERATION and meter is not None:
            key = "renewable" if meter.renewable else "other_generation"
        row = per.setdefault(start, {})
        row[key] = row.get(key, 0.0) + kwh
        if meter is not None and meter.zone is not None:
            zones.setdefault(meter.zone, [0.0, 0.0])[1 if role == Role.IT_LOAD else 0] += kwh
    consumption = renewable = submetered = it_load = 0.0
    for row in per.values():
        inflow = (
            row.get(Role.GRID_IMPORT, 0.0)
            + row.get("renewable", 0.0)
            + row.get("other_generation", 0.0)
            + row.get(Role.BATTERY_DISCHARGE, 0.0)
        )
        used = max(0.0, inflow - row.get(Role.GRID_EXPORT, 0.0) - row.get(Role.BATTERY_CHARGE, 0.0))
        consumption += used
        renewable += min(used, max(0.0, row.get("renewable", 0.0) - row.get(Role.GRID_EXPORT, 0.0)))
        submetered += row.get(Role.SUBMETER, 0.0)
        it_load += row.get(Role.IT_LOAD, 0.0)
    return {
        "consumption_kwh": round(consumption, 6),
        "renewable_onsite_kwh": round(renewable, 6),
        "renewable_share": round(renewable / consumption, 6) if consumption > 0 else None,
        "submetered_kwh": round(submetered, 6),
        "unmetered_kwh": round(consumption - submetered, 6),
        "it_load_kwh": round(it_load, 6),
        # PUE over the period: the zone's total intake over its IT energy, same intervals
        "pue": {
            zone: round(fac / it, 4) if it > 0 else None
            for zone, (fac, it) in sorted(zones.items())
        },
    }


def summary(engine: Engine, start_ms: int = 0, end_ms: int = 2**62) -> dict[str, Any]:
    """The period's figures from the ledger: energy by role, Scope 2, factors, events."""
    site = engine.site.id
    ledger: Ledger = engine.ledger
    intervals = ledger.site_intervals(site, start_ms, end_ms)
    factors: FactorLibrary = engine.factors
    used = sorted({iv.grid_factor_id for iv in intervals})
    return {
        "site": site,
        "from_ms": intervals[0].start_ms if intervals else None,
        "to_ms": intervals[-1].start_ms + 15 * 60_000 if intervals else None,
        "energy_kwh": {
            role: {"total": round(kwh, 6), "estimated": round(est, 6)}
            for role, (kwh, est) in ledger.energy_by_role(site, start_ms, end_ms).items()
        },
        **balance(engine, start_ms, end_ms),
        "scope2_location_kgco2e": round(sum(iv.scope2_location_kgco2e for iv in intervals), 6),
        "grid_import_kwh": round(sum(iv.grid_import_kwh for iv in intervals), 6),
        "factors": [
            {
                "id": f.id,
                "value": f.value,
                "unit": f.unit,
                "source": f.source,
                "published": f.published.isoformat(),
            }
            for f in (factors[i] for i in used)
        ],
        "events": [
            {"device": e.device, "ts": e.ts, "seq": e.seq, "kind": e.kind, "detail": e.detail}
            for e in ledger.events(site)
            if start_ms <= e.ts < end_ms
        ],
    }
