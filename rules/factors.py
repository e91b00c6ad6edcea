"""The factor library: every emission factor is data with its source, never a number in code."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# kg of CO2(e) per kWh, for each unit a grid factor may be published in.
_PER_KWH = {
    "kgCO2/kWh": 1.0,
    "tCO2/MWh": 1.0,
    "gCO2/kWh": 0.001,
    "kgCO2e/kWh": 1.0,
    "tCO2e/MWh": 1.0,
    "gCO2e/kWh": 0.001,
}


class FactorKind(StrEnum):
    """What a factor multiplies."""

    GRID_ELECTRICITY = "grid_electricity"


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

    @model_validator(mode="after")
    def _consistent(self) -> Factor:
        if self.unit not in _PER_KWH:
            raise ValueError(f"unit {self.unit!r} is not one of {sorted(_PER_KWH)}")
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self

    @property
    def kg_per_kwh(self) -> float:
        """The factor in kg per kWh."""
        return self.value * _PER_KWH[self.unit]


class _FactorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factors: list[Factor]


class FactorLibrary:
    """Factors by id, and the grid factor that applies to a region and a date."""

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

    def grid(self, region: str, day: date) -> Factor:
        """The grid factor for `region` on `day`.

        Among factors whose validity (the consumption period the factor may be applied to, set in
        the data file) covers the day, the most specific region wins (CN-HB before CN), then the
        newest data year. Published grid factors trail the year they describe by about two years,
        so a factor stays valid after its year until a newer vintage takes over.
        """
        candidates: list[tuple[int, int, Factor]] = []
        parts = region.split("-")
        prefixes = ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
        for f in self._by_id.values():
            if f.kind is not FactorKind.GRID_ELECTRICITY or f.region not in prefixes:
                continue
            if day < f.valid_from or (f.valid_to is not None and day > f.valid_to):
                continue
            candidates.append((-prefixes.index(f.region), f.year, f))
        if not candidates:
            raise LookupError(
                f"no grid electricity factor for region {region!r} valid on {day.isoformat()}"
            )
        return max(candidates, key=lambda c: (c[0], c[1]))[2]

    @classmethod
    def load(cls, extra_files: Iterable[Path] = ()) -> FactorLibrary:
        """The factors shipped with lingtan plus any site-specific files."""
        factors: list[Factor] = []
        folder = resources.files("rules").joinpath("factors")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".yaml"):
                factors += _parse(entry.read_text("utf-8"), f"rules/factors/{entry.name}")
        for path in extra_files:
            factors += _parse(path.read_text("utf-8"), str(path))
        return cls(factors)


def _parse(text: str, where: str) -> list[Factor]:
    data = yaml.safe_load(text)
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
