"""The `rules:` section of a site config: meter roles, factors and the ledger."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rules.targets import TargetConfig
from telemetry.quantities import QuantityKind, vocabulary
from telemetry.sample import Ident


class Role(StrEnum):
    """What a meter measures for the accounts."""

    GRID_IMPORT = "grid_import"  # electricity bought from the grid (Scope 2)
    GRID_EXPORT = "grid_export"  # electricity sold to the grid (never counted as consumed)
    GENERATION = "generation"  # on-site generation: PV, wind, a CHP's output
    BATTERY_CHARGE = "battery_charge"
    BATTERY_DISCHARGE = "battery_discharge"
    SUBMETER = "submeter"  # an area, line or process: breakdown only, never added to the site
    IT_LOAD = "it_load"  # a data centre zone's IT equipment (PUE); breakdown only
    DC_FACILITY = "dc_facility"  # a data centre zone's whole intake (PUE); breakdown only


# The counter each role reads unless the config names another: a meter's import register for
# what flows in, its export register for what flows out (an inverter's lifetime yield is an
# export counter in the profiles, e.g. SunSpec WH).
DEFAULT_QUANTITY = {
    Role.GRID_IMPORT: "energy_import_kwh",
    Role.GRID_EXPORT: "energy_export_kwh",
    Role.GENERATION: "energy_export_kwh",
    Role.BATTERY_CHARGE: "energy_import_kwh",
    Role.BATTERY_DISCHARGE: "energy_export_kwh",
    Role.SUBMETER: "energy_import_kwh",
    Role.IT_LOAD: "energy_import_kwh",
    Role.DC_FACILITY: "energy_import_kwh",
}


class MeterConfig(BaseModel):
    """A meter that counts in the accounts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: Ident
    role: Role
    quantity: str | None = None
    # The value at which the device's counter register wraps to zero, in the quantity's unit.
    counter_max: Annotated[float, Field(gt=0)] | None = None
    # The most power the meter can see (its rating, e.g. CT ratio x voltage): a step of the
    # counter implying more is a spike, held out of the totals until the next reading tells a
    # glitch from a jump. Unset: no spike check.
    max_power_kw: Annotated[float, Field(gt=0)] | None = None
    # Silence longer than this is a gap: the energy across it is spread by time and flagged
    # estimated.
    gap_s: Annotated[float, Field(gt=0)] = 900.0
    # Generation only: whether it is renewable (PV, wind) for the renewable share.
    renewable: bool | None = None
    # Sub-meters and IT load: where in the plant (for the breakdown).
    area: str | None = None
    line: str | None = None
    # IT load and data-centre intake: which data-centre zone (PUE = intake / IT, per zone).
    zone: str | None = None

    @model_validator(mode="after")
    def _counter(self) -> MeterConfig:
        if self.role is Role.GENERATION and self.renewable is None:
            raise ValueError("a generation meter must say `renewable: true` or `renewable: false`")
        if self.role is not Role.GENERATION and self.renewable is not None:
            raise ValueError(f"`renewable` applies to generation meters, not {self.role}")
        if (self.role in (Role.IT_LOAD, Role.DC_FACILITY)) != (self.zone is not None):
            raise ValueError(
                "`zone` is required for it_load and dc_facility meters, and only for them"
            )
        q = self.counter_quantity
        if q not in vocabulary():
            raise ValueError(f"quantity {q!r} is not in the vocabulary")
        if vocabulary()[q].kind is not QuantityKind.COUNTER:
            raise ValueError(f"quantity {q!r} is a {vocabulary()[q].kind}, energy needs a counter")
        return self

    @property
    def counter_quantity(self) -> str:
        """The counter this meter's energy comes from."""
        return self.quantity or DEFAULT_QUANTITY[self.role]


class RulesConfig(BaseModel):
    """How rules turns readings into energy and emissions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: Ident = "lingtan-rules"
    ledger: Path = Path("var/ledger.sqlite")
    # Site-specific factor files, on top of the library shipped with lingtan.
    factor_files: list[Path] = Field(default_factory=list)
    # Pin the location-based grid factor by id; by default it follows the site's region and year.
    grid_factor: str | None = None
    meters: list[MeterConfig] = Field(default_factory=list)
    # How often the running figure of the open 15-minute interval is republished.
    # 0.5 s with batches closed after 0.2 s: a reading shows in the live figure within a second.
    derived_every_s: Annotated[float, Field(ge=0.1, le=900)] = 0.5
    batch_messages: Annotated[int, Field(ge=1, le=100_000)] = 1000
    batch_wait_s: Annotated[float, Field(gt=0, le=60)] = 0.2
    # The month the fiscal year starts in (4 = April); fiscal years are named for the year they
    # end in (rules/periods.py).
    fiscal_year_start_month: Annotated[int, Field(ge=1, le=12)] = 1
    # The reduction target the site reports against (rules/targets.py).
    target: TargetConfig | None = None

    @model_validator(mode="after")
    def _unique(self) -> RulesConfig:
        seen: set[str] = set()
        for i, m in enumerate(self.meters):
            if m.device in seen:
                raise ValueError(f"meters[{i}]: device {m.device!r} is listed twice")
            seen.add(m.device)
        return self
