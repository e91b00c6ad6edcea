"""What the dashboards need to know about plants that the stored data does not say.

Ingest tags a reading with site, device and quality only (bounded cardinality). Which meter is
the grid connection, which are sub-meters of which area and line, and which measure a data
centre's IT load or intake lives in each site config's `rules.meters`. Dashboards built with a
layout get per-area and per-line energy, the unmetered remainder and IT against facility power;
without one (the generic dashboards committed under deploy/grafana/dashboards) they show what
the stored data alone can show.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from rules.config import BREAKDOWN_ROLES, DEFAULT_QUANTITY, ZONE_ROLES, MeterConfig, Role
from telemetry.quantities import QuantityKind, vocabulary

# Electricity counters in kWh; only these add up with each other in the breakdown.
KWH_COUNTERS = ("energy_import_kwh", "energy_export_kwh")

# The site balance (rules/accounts.py): consumption = what flows in minus what flows out.
CONSUMPTION_IN = frozenset({Role.GRID_IMPORT, Role.GENERATION, Role.BATTERY_DISCHARGE})
CONSUMPTION_OUT = frozenset({Role.GRID_EXPORT, Role.BATTERY_CHARGE})
# Sub-metered: sub-meters and data-centre intakes (IT load is inside its zone's intake).
SUBMETERED = frozenset({Role.SUBMETER, Role.DC_FACILITY})


@dataclass(frozen=True)
class Meter:
    """One meter of one site, as the dashboards see it."""

    site: str
    device: str
    role: Role
    counter: str
    area: str | None = None
    line: str | None = None
    zone: str | None = None

    @classmethod
    def of(cls, site: str, m: MeterConfig) -> Meter:
        """From a site config's `rules.meters` entry."""
        counter = m.quantity or DEFAULT_QUANTITY.get(m.role) or ""
        return cls(site, m.device, m.role, counter, m.area, m.line, m.zone)

    @property
    def kwh(self) -> bool:
        """Counts electricity in kWh (so it adds up with the site's other electricity meters)."""
        return self.counter in KWH_COUNTERS


@dataclass(frozen=True)
class Layout:
    """The meters of every site the dashboards cover (empty: generic dashboards)."""

    meters: tuple[Meter, ...] = field(default_factory=tuple)

    @classmethod
    def from_configs(cls, sites: Iterable[tuple[str, Iterable[MeterConfig]]]) -> Layout:
        """From (site id, rules.meters) pairs.

        Only meters that count (a cumulative register) are kept: energy per time bucket is a
        counter's difference. A meter rules integrates from power (`quantity: active_power_kw`)
        is left out of the breakdown panels; the ledger and the reports include it.
        """
        vocab = vocabulary()
        out: list[Meter] = []
        for site, meters in sites:
            for m in meters:
                meter = Meter.of(site, m)
                # rules validates counters; a gauge here would be a config the rules refuse
                if meter.counter in vocab and vocab[meter.counter].kind is QuantityKind.COUNTER:
                    out.append(meter)
        return cls(tuple(sorted(out, key=lambda m: (m.site, m.device))))

    @property
    def empty(self) -> bool:
        """No site configs were given."""
        return not self.meters

    def _group(self, key: str, roles: frozenset[Role]) -> dict[str, list[Meter]]:
        out: dict[str, list[Meter]] = defaultdict(list)
        for m in self.meters:
            value = getattr(m, key)
            if value is not None and m.role in roles and m.kwh:
                out[value].append(m)
        return dict(sorted(out.items()))

    def areas(self) -> dict[str, list[Meter]]:
        """Electricity breakdown meters by area (all sites: queries also filter by site)."""
        return self._group("area", BREAKDOWN_ROLES)

    def lines(self) -> dict[str, list[Meter]]:
        """Electricity breakdown meters by production line."""
        return self._group("line", BREAKDOWN_ROLES)

    def zones(self) -> dict[str, list[Meter]]:
        """Data-centre zones with their IT-load and intake meters."""
        return self._group("zone", ZONE_ROLES)

    def with_roles(self, roles: frozenset[Role]) -> list[Meter]:
        """Electricity meters with one of `roles`."""
        return [m for m in self.meters if m.role in roles and m.kwh]
