"""The quantity vocabulary, kept as data in quantities.yaml."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# A name's last token is its unit, in lower case, with these spellings.
_UNIT_SUFFIX = {
    "kW": "kw",
    "kvar": "kvar",
    "kVA": "kva",
    "Hz": "hz",
    "V": "v",
    "A": "a",
    "kWh": "kwh",
    "kvarh": "kvarh",
    "m3": "m3",
    "L": "l",
    "degC": "c",
    "kPa": "kpa",
    "kg": "kg",
    "kgCO2e": "kgco2e",
    "tCO2e": "tco2e",
    "count": "count",
    "s": "s",
    "ms": "ms",
}

QuantityName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")]


class QuantityKind(StrEnum):
    """How a quantity's values relate over time."""

    GAUGE = "gauge"
    COUNTER = "counter"
    DELTA = "delta"


class QuantityOrigin(StrEnum):
    """Who produces a quantity: a device, or lingtan about itself (see quantities.yaml)."""

    METER = "meter"
    POLL = "poll"
    EDGE = "edge"
    INGEST = "ingest"
    RULES = "rules"


class Quantity(BaseModel):
    """One entry of the vocabulary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: QuantityName
    unit: str
    kind: QuantityKind
    origin: QuantityOrigin = QuantityOrigin.METER
    description: str

    @model_validator(mode="after")
    def _name_carries_unit(self) -> Quantity:
        if self.unit == "1":  # dimensionless: power_factor
            return self
        suffix = _UNIT_SUFFIX.get(self.unit)
        if suffix is None:
            raise ValueError(f"unit {self.unit!r} is not one of {sorted(_UNIT_SUFFIX)}")
        if not self.name.endswith("_" + suffix):
            raise ValueError(f"name {self.name!r} must end in '_{suffix}' for unit {self.unit}")
        return self


class _VocabularyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quantities: list[Quantity]


class Vocabulary:
    """Lookup of quantities by name."""

    def __init__(self, quantities: list[Quantity]) -> None:
        self._by_name: dict[str, Quantity] = {}
        for q in quantities:
            if q.name in self._by_name:
                raise ValueError(f"quantity {q.name!r} is defined twice")
            self._by_name[q.name] = q

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Quantity:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown quantity {name!r}; known: {', '.join(self.names())}") from None

    def __len__(self) -> int:
        return len(self._by_name)

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The names not in the vocabulary, sorted (fast when there are none)."""
        if isinstance(names, dict) and names.keys() <= self._by_name.keys():
            return []
        return sorted(set(names) - self._by_name.keys())

    def names(self) -> list[str]:
        """All quantity names, sorted."""
        return sorted(self._by_name)

    @classmethod
    def from_yaml(cls, text: str, *, where: str = "quantities.yaml") -> Vocabulary:
        """Parse a vocabulary file; errors name the entry that is wrong."""
        try:
            data = _VocabularyFile.model_validate(yaml.safe_load(text))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {loc}: {first['msg']}") from None
        return cls(data.quantities)


@cache
def vocabulary() -> Vocabulary:
    """The vocabulary shipped with lingtan."""
    text = resources.files("telemetry").joinpath("quantities.yaml").read_text("utf-8")
    return Vocabulary.from_yaml(text)
