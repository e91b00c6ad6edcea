"""A small typed InfluxQL: SELECT statements over what ingest writes, and the Grafana query.

grafana-foundation-sdk has no InfluxDB query type, so this module adds one (`InfluxQLQuery`, a
`Dataquery` variant with its builder). Statements are built from names checked when they are
built: the measurements and tags ingest writes (ingest/influx.py) and quantity names from the
vocabulary (telemetry/quantities.yaml). A dashboard therefore cannot name a field that nothing
stores; tests/grafana checks the generated JSON against the same lists and runs every query on
a real InfluxDB.

Only what InfluxDB 1.8, 2.x (v1 query API) and 3 Core all answer is used: SELECT with
aggregates and selectors, non_negative_difference, subqueries, GROUP BY time and tags, fill.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

from ingest.influx import DERIVED_MEASUREMENT, METER_MEASUREMENT
from telemetry.quantities import vocabulary

# What ingest writes (ingest/influx.py `line`): two measurements, three tags, one float field
# per quantity and the integer field seq.
MEASUREMENTS = (METER_MEASUREMENT, DERIVED_MEASUREMENT)
TAGS = ("site", "device", "quality")
SEQ_FIELD = "seq"

Measurement = typing.Literal["meter", "derived"]

# Grafana's macros and the dashboards' template variables, as they appear in queries.
TIME_FILTER = "$timeFilter"
# Up to the end of the time range, however far back: for state published only when it changes.
UNTIL_RANGE_END = "time <= ${__to}ms"
INTERVAL = "$__interval"
SITE = "$site"


class SchemaError(ValueError):
    """A query names something ingest never writes."""


def field(name: str) -> str:
    """A field reference, `"name"`; the name must be a quantity (or seq)."""
    if name != SEQ_FIELD and name not in vocabulary():
        raise SchemaError(f"{name!r} is not a quantity in telemetry/quantities.yaml")
    return f'"{name}"'


def tag(name: str) -> str:
    """A tag reference, `"name"`; only the tags ingest writes."""
    if name not in TAGS:
        raise SchemaError(f"{name!r} is not a tag ingest writes (one of {', '.join(TAGS)})")
    return f'"{name}"'


def call(fn: str, arg: str, alias: str | None = None) -> str:
    """`fn(arg)`, optionally `AS "alias"`; arg is a field() or another call()."""
    text = f"{fn}({arg})"
    return f'{text} AS "{alias}"' if alias else text


def alias(expr: str, name: str) -> str:
    """`expr AS "name"`, for arithmetic on calls (e.g. last("x") / 1000)."""
    return f'{expr} AS "{name}"'


def tag_is(name: str, value: str) -> str:
    """`"tag" = 'value'` (value may be a single-value template variable such as $site)."""
    return f"{tag(name)} = '{value}'"


def tag_is_not(name: str, value: str) -> str:
    """`"tag" != 'value'`."""
    return f"{tag(name)} != '{value}'"


def tag_matches(name: str, regex: str) -> str:
    """`"tag" =~ /^(regex)$/`: an anchored match (regex may hold a template variable)."""
    return f"{tag(name)} =~ /^({regex})$/"


def site() -> str:
    """The dashboard's site: every query is of one site."""
    return tag_is("site", SITE)


def alternation(names: typing.Iterable[str]) -> str:
    """`a|b|c` for tag_matches, from identifiers ([A-Za-z0-9_.-], dots escaped)."""
    out = sorted({n.replace(".", r"\.") for n in names})
    if not out:
        raise ValueError("an alternation needs at least one name")
    return "|".join(out)


@dataclass(frozen=True)
class Select:
    """One InfluxQL SELECT statement."""

    columns: tuple[str, ...]
    source: Measurement | tuple[Select, ...]
    where: tuple[str, ...] = ()
    group_time: str | None = None
    group_tags: tuple[str, ...] = ()
    fill: str | None = None
    time_filter: bool = True

    def __post_init__(self) -> None:
        if not self.columns:
            raise SchemaError("a SELECT needs at least one column")
        if isinstance(self.source, str) and self.source not in MEASUREMENTS:
            raise SchemaError(f"{self.source!r} is not a measurement ingest writes")
        for t in self.group_tags:
            tag(t)

    def render(self) -> str:
        """The statement as Grafana sends it (macros and variables not yet substituted)."""
        if isinstance(self.source, str):
            source = f'"{self.source}"'
        else:
            source = ", ".join(f"({s.render()})" for s in self.source)
        # S608: InfluxQL for Grafana, built from names checked above, never from input
        text = f"SELECT {', '.join(self.columns)} FROM {source}"  # noqa: S608
        where = list(self.where) + ([TIME_FILTER] if self.time_filter else [])
        if where:
            text += " WHERE " + " AND ".join(where)
        groups = ([f"time({self.group_time})"] if self.group_time else []) + [
            tag(t) for t in self.group_tags
        ]
        if groups:
            text += " GROUP BY " + ", ".join(groups)
        if self.fill:
            text += f" fill({self.fill})"
        return text


ResultFormat = typing.Literal["time_series", "table"]

DATASOURCE_TYPE = "influxdb"


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target of Grafana's InfluxDB data source (query language InfluxQL)."""

    def __init__(
        self,
        *,
        ref_id: str = "A",
        query: str = "",
        alias: str | None = None,
        result_format: ResultFormat = "time_series",
        datasource: dashboard.DataSourceRef | None = None,
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.alias = alias
        self.result_format = result_format
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        """The target as Grafana's InfluxDB data source stores it."""
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        if self.datasource is not None:
            payload["datasource"] = self.datasource.to_json()
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, typing.Any]) -> typing.Self:
        """Read a target back (for the SDK's dashboard decoding)."""
        ds = data.get("datasource")
        return cls(
            ref_id=str(data.get("refId", "A")),
            query=str(data.get("query", "")),
            alias=data.get("alias"),
            result_format="table" if data.get("resultFormat") == "table" else "time_series",
            datasource=dashboard.DataSourceRef.from_json(ds) if isinstance(ds, dict) else None,
            hide=data.get("hide"),
        )


def variant_config() -> cogruntime.DataqueryConfig:
    """Registration with the SDK's runtime, so dashboards with these targets decode."""
    return cogruntime.DataqueryConfig(
        identifier=DATASOURCE_TYPE, from_json_hook=InfluxQLQuery.from_json
    )


cogruntime.register_dataquery_variant(variant_config())


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder of an InfluxQL target."""

    def __init__(self, statement: Select | str) -> None:
        text = statement.render() if isinstance(statement, Select) else statement
        self._internal = InfluxQLQuery(query=text)

    def build(self) -> InfluxQLQuery:
        """The target."""
        return self._internal

    def ref_id(self, ref_id: str) -> typing.Self:
        """Grafana's id of the target within its panel (A, B, ...)."""
        self._internal.ref_id = ref_id
        return self

    def alias(self, alias: str) -> typing.Self:
        """Series name pattern, e.g. `$tag_device` or `$col`."""
        self._internal.alias = alias
        return self

    def table(self) -> typing.Self:
        """Return rows as a table rather than time series."""
        self._internal.result_format = "table"
        return self

    def datasource(self, ref: dashboard.DataSourceRef) -> typing.Self:
        """The data source this target queries."""
        self._internal.datasource = ref
        return self
