"""Reading the generated dashboards back: panels, targets, and the names their InfluxQL uses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lingtan.grafana.dashboards import Generated


@dataclass(frozen=True)
class Target:
    """One panel target (or a template variable's query) of one dashboard."""

    dashboard: str
    panel: int | str
    ref: str
    query: str
    min_interval: str | None
    result_format: str = "time_series"

    @property
    def id(self) -> str:
        return f"{self.dashboard}#{self.panel}{self.ref}"


def targets(dashboards: list[Generated]) -> Iterator[Target]:
    """Every panel target of every dashboard."""
    for g in dashboards:
        for p in g.model["panels"]:  # type: ignore[attr-defined]
            for t in p.get("targets", []):
                yield Target(g.uid, p["id"], t["refId"], t["query"], p.get("interval"),
                             t.get("resultFormat", "time_series"))


def variables(dashboards: list[Generated]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(dashboard uid, variable) for every template variable."""
    for g in dashboards:
        for v in g.model["templating"]["list"]:  # type: ignore[index]
            yield g.uid, v


@dataclass
class Names:
    """The measurements, tags and fields a statement names."""

    measurements: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    fields: set[str] = field(default_factory=set)
    aliases: set[str] = field(default_factory=set)
    unclassified: set[str] = field(default_factory=set)


_IDENT = r'"([^"]+)"'
_GROUP_ITEM = r'(?:time\([^)]*\)|"[^"]+")'


def names(query: str) -> Names:
    """Classify every double-quoted identifier of an InfluxQL statement.

    `FROM "m"` names a measurement; `"t" =~ ...` (any comparison), `WITH KEY = "t"` and GROUP BY
    entries name tags; `fn("f")` names a field, or an alias an inner query defined with
    `AS "a"`. Anything else is left unclassified (a test fails on it).
    """
    out = Names()
    q = query

    def take(pattern: str, into: set[str]) -> None:
        nonlocal q
        into |= set(re.findall(pattern, q))
        q = re.sub(pattern, " ", q)

    take(r"AS " + _IDENT, out.aliases)
    take(r"FROM " + _IDENT, out.measurements)
    take(r"WITH KEY = " + _IDENT, out.tags)
    take(_IDENT + r"\s*(?:=~|!~|!=|=)", out.tags)
    for clause in re.findall(rf"GROUP BY ({_GROUP_ITEM}(?:, {_GROUP_ITEM})*)", q):
        out.tags |= set(re.findall(_IDENT, clause))
        q = q.replace(clause, " ", 1)
    take(r"\(" + _IDENT + r"\)", out.fields)
    out.unclassified = set(re.findall(_IDENT, q))
    return out
