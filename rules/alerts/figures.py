"""What the alert engine evaluates: a plain snapshot of the site the rules service fills.

Every part is optional: a rule whose figure is missing is neither fired nor cleared (its alert
keeps its state), so a service that does not yet compute a figure never raises false alarms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from telemetry.quantities import QuantityOrigin, vocabulary

_POLL = frozenset(n for n in vocabulary().names() if vocabulary()[n].origin is QuantityOrigin.POLL)


@dataclass(frozen=True, slots=True)
class Reading:
    """The latest value of one quantity of one device."""

    ts_ms: int  # the reading's time (the Sample's `ts`), epoch ms UTC
    value: float


@dataclass(frozen=True, slots=True)
class TargetFigures:
    """The fiscal year against the reduction target, in tCO2e (rules/targets.TargetStatus)."""

    budget_to_date: float  # what the trajectory allows from the year's start to now
    actual_to_date: float  # emitted from the year's start to now, in the target's scopes
    forecast: float  # the whole year at its pace so far
    allowed: float  # the whole year's allowance on the trajectory


@dataclass(frozen=True, slots=True)
class BalanceFigures:
    """Site energy against its breakdown over the same period (e.g. today), kWh."""

    site_kwh: float  # the site's consumption from its own meters (grid, generation...)
    submetered_kwh: float  # the sum of the sub-meters
    # The rest of the plant as metered or derived by the service. Fill max(0, site - sub)
    # when it is derived: the balance then fires exactly when the sub-meters add up to more
    # than the site, which is a meter or wiring fault.
    unmetered_kwh: float


@dataclass(frozen=True, slots=True)
class QualityFigures:
    """Data-quality events and estimates over a period (e.g. today, site-local)."""

    # device -> event kind ("reset", "spike", "gap", "rollover") -> count in the period
    events: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # estimated kWh / all kWh of the site's own meters in the period; None when nothing flowed
    estimated_share: float | None = None


@dataclass(frozen=True, slots=True)
class Figures:
    """One evaluation's input. Fill what you have; leave the rest at its default."""

    # (device, quantity) -> latest reading; device readings and derived figures alike
    latest: Mapping[tuple[str, str], Reading] = field(default_factory=dict)
    # Devices the site expects readings from (e.g. rules.meters): an expected device that has
    # never reported counts as absent from the first evaluation that expected it. When set,
    # `absence` rules with `device: "*"` watch these only (not derived devices in `latest`).
    expected_devices: frozenset[str] = frozenset()
    target: TargetFigures | None = None
    site_power_kw: float | None = None  # average consumption power now (e.g. this 15 minutes)
    contracted_demand_kw: float | None = None  # the supply contract's maximum demand
    # Renewable share of consumption over the period the site's target is for (a month or the
    # fiscal year so far: a day's share swings from night to noon), 0..1
    renewable_share: float | None = None
    balance: BalanceFigures | None = None
    quality: QualityFigures | None = None

    def devices(self) -> set[str]:
        """Every device expected or heard from."""
        return set(self.expected_devices) | {d for d, _ in self.latest}

    def last_seen(self, device: str, quantity: str | None) -> int | None:
        """Time of the device's latest reading (of `quantity`, or of anything it reported)."""
        if quantity is not None:
            r = self.latest.get((device, quantity))
            return None if r is None else r.ts_ms
        # the edge agent's figures about its polls of a device come while the device is silent
        times = [r.ts_ms for (d, q), r in self.latest.items() if d == device and q not in _POLL]
        return max(times) if times else None
