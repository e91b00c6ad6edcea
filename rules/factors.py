"""The factor library: every emission factor, calorific value and GWP is data with its source.

A factor in Python code is a bug (DESIGN, accounting). Each entry of a file under
`rules/factors/` (or a site's own factor file) names what it multiplies (`kind`), its value and
unit, the gases it covers, the region and data year it describes, the consumption period it may
be applied to (`valid_from` / `valid_to`), the document it comes from and how it was checked.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from datetime import date
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class FactorKind(StrEnum):
    """What a factor multiplies."""

    # kg CO2(e) per kWh of electricity
    GRID_ELECTRICITY = "grid_electricity"  # location-based: a grid's average
    RESIDUAL_MIX = "residual_mix"  # market-based: the grid with claimed attributes removed
    SUPPLIER_ELECTRICITY = "supplier_electricity"  # market-based: a supplier's own mix
    # kg CO2(e) per kWh (or GJ) of purchased heat, steam or cooling
    PURCHASED_HEAT = "purchased_heat"
    PURCHASED_STEAM = "purchased_steam"
    PURCHASED_COOLING = "purchased_cooling"
    # a fuel's net calorific value (energy per kg, m3 or L of the fuel)
    NET_CALORIFIC_VALUE = "net_calorific_value"
    # kg of one gas per TJ of a fuel burnt (net calorific basis)
    FUEL_EMISSION = "fuel_emission"
    # kg CO2e per kg of a gas (100-year global warming potential)
    GWP = "gwp"


# Unit -> (kind group, multiplier to the group's base unit).
# Electricity and heat: base kg per kWh. NCV: base MJ per unit of fuel (the unit in `per`).
# Fuel emission: base kg per TJ. GWP: kg CO2e per kg.
_ELECTRIC = {
    "kgCO2/kWh": 1.0,
    "tCO2/MWh": 1.0,
    "gCO2/kWh": 0.001,
    "kgCO2e/kWh": 1.0,
    "tCO2e/MWh": 1.0,
    "gCO2e/kWh": 0.001,
    "lbCO2/MWh": 0.45359237e-3,
    "lbCO2e/MWh": 0.45359237e-3,
}
_HEAT = {**_ELECTRIC, "kgCO2/GJ": 1 / 277.7777777777778, "tCO2/GJ": 1000 / 277.7777777777778}
# NCV unit -> (the fuel unit it is per, MJ per that unit for a value of 1)
_NCV = {
    "TJ/Gg": ("kg", 1.0),
    "MJ/kg": ("kg", 1.0),
    "GJ/t": ("kg", 1.0),
    "MJ/m3": ("m3", 1.0),
    "GJ/10000m3": ("m3", 0.1),
    "MJ/L": ("L", 1.0),
}
_FUEL_EMISSION = {"kg/TJ": 1.0, "t/TJ": 1000.0, "kg/GJ": 1000.0, "g/GJ": 1.0}
_GWP = {"kgCO2e/kg": 1.0}

_UNITS: dict[FactorKind, dict[str, float]] = {
    FactorKind.GRID_ELECTRICITY: _ELECTRIC,
    FactorKind.RESIDUAL_MIX: _ELECTRIC,
    FactorKind.SUPPLIER_ELECTRICITY: _ELECTRIC,
    FactorKind.PURCHASED_HEAT: _HEAT,
    FactorKind.PURCHASED_STEAM: _HEAT,
    FactorKind.PURCHASED_COOLING: _HEAT,
    FactorKind.NET_CALORIFIC_VALUE: {u: m for u, (_, m) in _NCV.items()},
    FactorKind.FUEL_EMISSION: _FUEL_EMISSION,
    FactorKind.GWP: _GWP,
}
_PER_ENERGY = {
    FactorKind.GRID_ELECTRICITY,
    FactorKind.RESIDUAL_MIX,
    FactorKind.SUPPLIER_ELECTRICITY,
    FactorKind.PURCHASED_HEAT,
    FactorKind.PURCHASED_STEAM,
    FactorKind.PURCHASED_COOLING,
}

# The fuels the library knows, by the name a meter config uses.
FUELS = frozenset(
    {
        "natural_gas",
        "diesel",
        "gasoline",
        "lpg",
        "bituminous_coal",
        "fuel_oil",
        "biogas",
        "wood",
    }
)
GWP_SETS = ("AR4", "AR5", "AR6")


class GasOrigin(StrEnum):
    """Where a gas's carbon comes from: AR6 gives CH4 a GWP for each."""

    FOSSIL = "fossil"
    NON_FOSSIL = "non_fossil"


class Factor(BaseModel):
    """One published factor, with where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{2,80}$")]
    kind: FactorKind
    value: Annotated[float, Field(gt=0)]
    unit: str
    gases: Annotated[list[str], Field(min_length=1)]
    region: Annotated[str, Field(min_length=2)]
    year: Annotated[int, Field(ge=1990, le=2100)]
    valid_from: date
    valid_to: date | None = None
    source: Annotated[str, Field(min_length=10)]
    publisher: Annotated[str, Field(min_length=2)]
    published: date
    url: str = ""
    notes: str = ""
    # How the value was checked against its source (primary document, or which secondary ones).
    verification: str = ""
    # net_calorific_value and fuel_emission: the fuel
    fuel: str | None = None
    # fuel_emission: CO2 from biomass, reported apart from the scopes (GHG Protocol)
    biogenic: bool = False
    # gwp: the IPCC assessment report the value is from, and for CH4 in AR6 the origin
    gwp_set: str | None = None
    origin: GasOrigin | None = None
    # gwp of a blend (a refrigerant such as R-410A): the components' mass shares; the value is
    # the shares times the components' GWPs of the same set (checked by the tests)
    composition: dict[str, float] | None = None
    # Applied only where a config names it by id, never picked by region and date: a factor
    # published for one purpose (e.g. a compliance-reporting default, a fossil-only average)
    pinned_only: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Factor:  # noqa: PLR0912 - one check per rule of the schema
        units = _UNITS[self.kind]
        if self.unit not in units:
            raise ValueError(f"unit {self.unit!r} is not one of {sorted(units)} for {self.kind}")
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        fuel_kind = self.kind in (FactorKind.NET_CALORIFIC_VALUE, FactorKind.FUEL_EMISSION)
        if fuel_kind != (self.fuel is not None):
            raise ValueError(
                f"`fuel` is required for {self.kind} factors, and only for them"
                if fuel_kind
                else f"`fuel` does not apply to {self.kind} factors"
            )
        if self.fuel is not None and self.fuel not in FUELS:
            raise ValueError(f"fuel {self.fuel!r} is not one of {sorted(FUELS)}")
        if self.kind is FactorKind.FUEL_EMISSION and len(self.gases) != 1:
            raise ValueError("a fuel_emission factor covers exactly one gas")
        if self.biogenic and (self.kind is not FactorKind.FUEL_EMISSION or self.gases != ["CO2"]):
            raise ValueError("`biogenic` applies to the CO2 factor of a fuel only")
        if (self.kind is FactorKind.GWP) != (self.gwp_set is not None):
            raise ValueError("`gwp_set` is required for gwp factors, and only for them")
        if self.gwp_set is not None and self.gwp_set not in GWP_SETS:
            raise ValueError(f"gwp_set {self.gwp_set!r} is not one of {list(GWP_SETS)}")
        if self.kind is FactorKind.GWP and len(self.gases) != 1:
            raise ValueError("a gwp factor covers exactly one gas")
        if self.origin is not None and self.kind is not FactorKind.GWP:
            raise ValueError("`origin` applies to gwp factors only")
        if self.composition is not None:
            if self.kind is not FactorKind.GWP:
                raise ValueError("`composition` applies to gwp factors of blends only")
            if abs(sum(self.composition.values()) - 1) > 1e-9:
                raise ValueError(
                    f"composition shares sum to {sum(self.composition.values())}, not 1"
                )
        return self

    @property
    def kg_per_kwh(self) -> float:
        """An electricity or heat factor in kg per kWh."""
        if self.kind not in _PER_ENERGY:
            raise TypeError(f"factor {self.id} is a {self.kind}, not per kWh")
        return self.value * _UNITS[self.kind][self.unit]

    @property
    def mj_per_unit(self) -> float:
        """A net calorific value in MJ per `fuel_unit`."""
        if self.kind is not FactorKind.NET_CALORIFIC_VALUE:
            raise TypeError(f"factor {self.id} is a {self.kind}, not a calorific value")
        return self.value * _UNITS[self.kind][self.unit]

    @property
    def fuel_unit(self) -> str:
        """The unit of fuel a net calorific value is per: kg, m3 (standard conditions) or L."""
        if self.kind is not FactorKind.NET_CALORIFIC_VALUE:
            raise TypeError(f"factor {self.id} is a {self.kind}, not a calorific value")
        return _NCV[self.unit][0]

    @property
    def kg_per_tj(self) -> float:
        """A fuel emission factor in kg of its gas per TJ."""
        if self.kind is not FactorKind.FUEL_EMISSION:
            raise TypeError(f"factor {self.id} is a {self.kind}, not a fuel emission factor")
        return self.value * _UNITS[self.kind][self.unit]

    def applies(self, day: date) -> bool:
        """Whether the factor may be applied to consumption on `day`."""
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


class _FactorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factors: list[Factor]


def _prefixes(region: str) -> list[str]:
    """CN-HB -> [CN-HB, CN, GLOBAL]: the regions a site's region falls in, most specific first."""
    parts = region.split("-")
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)] + ["GLOBAL"]


class FactorLibrary:
    """Factors by id, and the factor of a kind that applies to a region and a date."""

    def __init__(self, factors: Iterable[Factor]) -> None:
        self._by_id: dict[str, Factor] = {}
        for f in factors:
            if f.id in self._by_id:
                raise ValueError(f"factor id {f.id!r} is defined twice")
            self._by_id[f.id] = f

    def __getitem__(self, factor_id: str) -> Factor:
        try:
            return self._by_id[factor_id]
        except KeyError:
            raise KeyError(f"no factor {factor_id!r} in the library") from None

    def __contains__(self, factor_id: object) -> bool:
        return factor_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Factor]:
        return iter(self._by_id.values())

    def find(
        self,
        kind: FactorKind,
        region: str,
        day: date,
        *,
        fuel: str | None = None,
        gas: str | None = None,
    ) -> Factor:
        """The factor of `kind` for `region` on `day` (and `fuel` / `gas` where they apply).

        Among factors whose validity (the consumption period the factor may be applied to, set in
        the data file) covers the day, the most specific region wins (CN-HB before CN before
        GLOBAL, the IPCC defaults), then the newest data year. Published grid factors trail the
        year they describe by about two years, so a factor stays valid after its year until a
        newer vintage takes over.
        """
        prefixes = _prefixes(region)
        candidates: list[tuple[int, int, Factor]] = []
        for f in self._by_id.values():
            if f.kind is not kind or f.pinned_only or f.region not in prefixes:
                continue
            if not f.applies(day):
                continue
            if fuel is not None and f.fuel != fuel:
                continue
            if gas is not None and gas not in f.gases:
                continue
            candidates.append((-prefixes.index(f.region), f.year, f))
        if not candidates:
            what = kind.value.replace("_", " ")
            extra = "".join(f" {k} {v!r}" for k, v in (("fuel", fuel), ("gas", gas)) if v)
            raise LookupError(
                f"no {what} factor{extra} for region {region!r} valid on {day.isoformat()}"
            )
        candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
        if len(candidates) > 1 and candidates[0][:2] == candidates[1][:2]:
            raise LookupError(
                f"factors {candidates[0][2].id!r} and {candidates[1][2].id!r} both apply to "
                f"region {region!r} on {day.isoformat()} with the same region and year: mark one "
                f"`pinned_only` or narrow its validity"
            )
        return candidates[0][2]

    def grid(self, region: str, day: date) -> Factor:
        """The location-based grid factor for `region` on `day`."""
        return self.find(FactorKind.GRID_ELECTRICITY, region, day)

    def gwp(self, gas: str, gwp_set: str, origin: GasOrigin | None = None) -> Factor:
        """The GWP100 of `gas` in `gwp_set`; for an origin, its own value where the set has one."""
        plain: Factor | None = None
        for f in self._by_id.values():
            if f.kind is not FactorKind.GWP or f.gwp_set != gwp_set or f.gases != [gas]:
                continue
            if origin is not None and f.origin is origin:
                return f
            if f.origin is None:
                plain = f
        if plain is None:
            raise LookupError(f"no {gwp_set} GWP for {gas!r} in the factor library")
        return plain

    @classmethod
    def load(cls, extra_files: Iterable[Path] = ()) -> FactorLibrary:
        """The factors shipped with lingtan plus any site-specific files."""
        factors = list(_shipped())
        for path in extra_files:
            factors += _parse(path.read_text("utf-8"), str(path))
        return cls(factors)


@functools.cache
def _shipped() -> tuple[Factor, ...]:
    """The library's own files, read once per process (factors are immutable)."""
    factors: list[Factor] = []
    folder = resources.files("rules").joinpath("factors")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            factors += _parse(entry.read_text("utf-8"), f"rules/factors/{entry.name}")
    return tuple(factors)


# libyaml's parser where PyYAML was built with it: the shipped files are 175 entries
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str, where: str) -> list[Factor]:
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    try:
        return _FactorFile.model_validate(data).factors
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        where_in = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "factors" and isinstance(loc[1], int):
            entry = data["factors"][loc[1]]
            fid = entry.get("id") if isinstance(entry, dict) else None
            where_in = f"factors[{loc[1]}]" + (f" (id {fid})" if fid else "")
            where_in += "".join(f".{p}" for p in loc[2:])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{where}: {where_in}: {msg}") from None
