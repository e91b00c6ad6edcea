"""The `alerts:` section of a site config: rules, silences, maintenance, channels and routes.

Conditions are structured data (a kind and its numbers), never expressions: nothing in a config
is evaluated as code. Every rule is validated when the config loads, and an error names the rule.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from string import Template
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from telemetry.config import reject_inline_secrets

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Name = Annotated[str, Field(pattern=_NAME)]
# A device id, or "*" for every device the site expects or has heard from.
DeviceSel = Annotated[str, Field(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*([smhd])\s*)+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(v: Any) -> Any:
    """Seconds from a number or a text such as "90s", "15m", "1h30m", "2d"."""
    if isinstance(v, str):
        if not _DURATION.match(v):
            raise ValueError(
                f"{v!r} is not a duration (expected seconds, or a number with s, m, h or d: "
                f"'90s', '15m', '1h30m')"
            )
        return sum(float(n) * _UNITS[u] for n, u in _PART.findall(v))
    return v


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=366 * 86400)]


class Severity(StrEnum):
    """How urgent an alert is; routes pick channels by it."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class _Rule(BaseModel):
    """What every rule has."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The rule's name: in its alerts and messages ($rule) and what matchers' `rule` matches.
    # Unique; a rule of your own with a default's name replaces that default.
    name: Name
    # How urgent its alerts are: routes pick channels by it, messages show it ($severity).
    severity: Severity = Severity.WARNING
    # The condition must hold this long (by the engine's clock) before the alert fires.
    for_s: Duration = Field(default=0.0, alias="for")
    # Send the firing message again this often while it fires; unset: the section's `repeat`.
    repeat_s: Duration | None = Field(default=None, alias="repeat")
    # Free text for templates that use $description (the default templates do not).
    description: str = ""
    # Grafana panel the message links to (its id on the site dashboard).
    panel: int | str | None = None
    # Extra labels carried by every alert of this rule (team, area...).
    labels: dict[Name, str] = Field(default_factory=dict)
    # false: the rule is not evaluated, and its firing alerts are resolved.
    enabled: bool = True


# Figures of the snapshot a threshold can watch besides device readings (see Figures).
FigureName = Literal["site_power_kw", "renewable_share", "estimated_share"]


class ThresholdRule(_Rule):
    """A device reading or an accounting figure above (or below) a limit, with hysteresis.

    `above: X` fires when the value goes over X and clears when it is back at or under
    `clear_below` (default X); `below: X` fires under X and clears at or over `clear_above`
    (default X).
    """

    # Which kind of rule this is, and so which of the keys below it takes.
    kind: Literal["threshold"]
    # The device whose reading is watched, or "*": each device that has reported `quantity`
    # (one alert per device). Goes with `quantity`.
    device: DeviceSel | None = None
    # The quantity whose latest reading is compared, in that quantity's unit.
    quantity: Name | None = None
    # A site figure to watch instead of a reading: site power (kW) or a share (0-1).
    figure: FigureName | None = None
    # Fire when the value goes over this; give this or `below`.
    above: float | None = None
    # With `above`: a firing alert clears once the value is at or under this (default `above`).
    clear_below: float | None = None
    # Fire when the value goes under this; give this or `above`.
    below: float | None = None
    # With `below`: a firing alert clears once the value is at or over this (default `below`).
    clear_above: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> ThresholdRule:
        if (self.figure is None) == (self.quantity is None):
            raise ValueError("give either `device` and `quantity`, or `figure`")
        if self.quantity is not None and self.device is None:
            raise ValueError("`quantity` needs a `device` (a device id, or '*' for every device)")
        if self.figure is not None and self.device is not None:
            raise ValueError("`device` goes with `quantity`, not with `figure`")
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of `above` and `below`")
        if self.above is not None:
            if self.clear_above is not None:
                raise ValueError("`clear_above` goes with `below`; with `above` use `clear_below`")
            if self.clear_below is not None and self.clear_below > self.above:
                raise ValueError(
                    f"clear_below {self.clear_below} must not be over above {self.above}"
                )
        if self.below is not None:
            if self.clear_below is not None:
                raise ValueError("`clear_below` goes with `above`; with `below` use `clear_above`")
            if self.clear_above is not None and self.clear_above < self.below:
                raise ValueError(
                    f"clear_above {self.clear_above} must not be under below {self.below}"
                )
        return self


class AbsenceRule(_Rule):
    """A device (any reading) or one of its quantities not heard from for longer than `after`."""

    # Which kind of rule this is, and so which of the keys below it takes.
    kind: Literal["absence"]
    # The device watched, or "*": each meter under `rules.meters` (if none, each device heard
    # from). A device that never reported counts as silent from the first evaluation.
    device: DeviceSel = "*"
    # Watch only this quantity's readings; unset: any reading from the device (the edge
    # agent's figures about its polls of the device do not count).
    quantity: Name | None = None
    # Fire when nothing was heard for longer than this; the next reading clears it.
    after_s: Annotated[Duration, Field(gt=0)] = Field(alias="after")


class BudgetRule(_Rule):
    """Emissions off the reduction target.

    `to_date`: the fiscal year's emissions so far above the trajectory's budget to date;
    `forecast`: the year at its pace so far above the year's allowance. `margin` is a share
    (0.05: fire 5 % over); it clears at or under `clear_margin` (default `margin`).
    """

    # Which kind of rule this is, and so which of the keys below it takes.
    kind: Literal["budget"]
    # What is compared (see above); both need `rules.target`, without it the rule stays quiet.
    measure: Literal["to_date", "forecast"] = "to_date"
    # Fire when emissions are over the budget (or allowance) by more than this share of it.
    margin: Annotated[float, Field(ge=0, le=10)] = 0.0
    # A firing alert clears once emissions are back at or under the budget plus this share
    # (default `margin`).
    clear_margin: Annotated[float, Field(ge=0, le=10)] | None = None

    @model_validator(mode="after")
    def _order(self) -> BudgetRule:
        if self.clear_margin is not None and self.clear_margin > self.margin:
            raise ValueError(
                f"clear_margin {self.clear_margin} must not be over margin {self.margin}"
            )
        return self


class DemandRule(_Rule):
    """Site power above a share of the contracted maximum demand (kW).

    `contracted_kw` unset: the section's `contracted_demand_kw` (a rule with neither is refused).
    """

    # Which kind of rule this is, and so which of the keys below it takes.
    kind: Literal["demand"]
    # Fire when site power goes over this share of the contracted demand (0.9: 90 %).
    share: Annotated[float, Field(gt=0, le=2)] = 0.9
    # A firing alert clears once site power is at or under this share (default `share`).
    clear_share: Annotated[float, Field(gt=0, le=2)] | None = None
    # The contracted maximum demand, kW; unset: the section's `contracted_demand_kw`.
    contracted_kw: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _order(self) -> DemandRule:
        if self.clear_share is not None and self.clear_share > self.share:
            raise ValueError(f"clear_share {self.clear_share} must not be over share {self.share}")
        return self


class BalanceRule(_Rule):
    """The site meter and its breakdown disagree: |site - (sub-meters + remainder)| / site.

    Below `min_site_kwh` of site energy the share means nothing and the rule stays quiet.
    """

    # Which kind of rule this is, and so which of the keys below it takes.
    kind: Literal["balance"]
    # Fire when the mismatch is over this share of the site's energy (0.05: 5 %).
    tolerance: Annotated[float, Field(gt=0, le=1)] = 0.05
    # A firing alert clears once the mismatch is at or under this share (default `tolerance`).
    clear_tolerance: Annotated[float, Field(gt=0, le=1)] | None = None
    # Site energy so far today (kWh) under which the rule neither fires nor clears.
    min_site_kwh: Annotated[float, Field(ge=0)] = 1.0

    @model_validator(mode="after")
    def _order(self) -> BalanceRule:
        if self.clear_tolerance is not None and self.clear_tolerance > self.tolerance:
            raise ValueError(
                f"clear_tolerance {self.clear_tolerance} must not be over tolerance "
                f"{self.tolerance}"
            )
        return self


class DataQualityRule(_Rule):
    """Counter resets, spikes, gaps or rollovers (a count per device), or the estimated share.

    Fires when the measure goes over `above`, clears at or under `clear_below` (default
    `above`): a count that is back to 0 (the next day) clears an alert fired at its first event.
    """

    # Which kind of rule this is, and so which of the keys below it takes.
    kind: Literal["data_quality"]
    # A kind of event, counted per device since site-local midnight, or the site's share of
    # today's energy that is estimated (0-1).
    measure: Literal["reset", "spike", "gap", "rollover", "estimated_share"]
    # Fire when the count (or share) goes over this; 0: at the first event.
    above: Annotated[float, Field(ge=0)] = 0.0
    # A firing alert clears once the count (or share) is at or under this (default `above`).
    clear_below: Annotated[float, Field(ge=0)] | None = None
    # The device watched, or "*": each device expected, heard from or with events.
    device: DeviceSel = "*"

    @model_validator(mode="after")
    def _order(self) -> DataQualityRule:
        if self.clear_below is not None and self.clear_below > self.above:
            raise ValueError(f"clear_below {self.clear_below} must not be over above {self.above}")
        if self.measure == "estimated_share" and self.device != "*":
            raise ValueError("the estimated share is the site's: `device` does not apply")
        return self


Rule = Annotated[
    ThresholdRule | AbsenceRule | BudgetRule | DemandRule | BalanceRule | DataQualityRule,
    Field(discriminator="kind"),
]
_RULE: TypeAdapter[Rule] = TypeAdapter(Rule)
KINDS = ("threshold", "absence", "budget", "demand", "balance", "data_quality")


def _describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"][1:] if p not in KINDS)
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _parse_rule(data: Any, where: str) -> Rule:
    """Validate one rule; the error names the rule (by name when it has one) and what is wrong."""
    name = data.get("name") if isinstance(data, dict) else None
    who = f"rule {name!r}" if isinstance(name, str) else "rule"
    who += f" ({where})" if where else ""
    if isinstance(data, dict) and data.get("kind") not in KINDS:
        raise ValueError(
            f"{who}: `kind` must be one of {', '.join(KINDS)} (got {data.get('kind')!r})"
        )
    try:
        return _RULE.validate_python(data)
    except ValidationError as exc:
        raise ValueError(f"{who}: {_describe(exc)}") from None


def _rule_item(data: Any) -> Any:
    return _parse_rule(data, "") if isinstance(data, dict) else data


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Weekly(BaseModel):
    """Every week on `days`, from `from` to `to` site-local time (past midnight if to < from)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The days the window starts on.
    days: Annotated[
        list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]], Field(min_length=1)
    ]
    # Start of the window on each of `days`, site-local, in quotes ("22:00").
    start: time = Field(alias="from")
    # End of the window (not included); earlier than `from`: on the next day.
    end: time = Field(alias="to")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        # YAML reads an unquoted 22:00 as the number 1320 (base 60), which would pass as 00:22
        if not isinstance(v, str | time):
            raise ValueError(f'write the time in quotes, e.g. "22:00" (got {v!r})')
        return v

    @model_validator(mode="after")
    def _span(self) -> Weekly:
        if self.start == self.end:
            raise ValueError("`from` and `to` are the same time: the window would be empty")
        return self

    @property
    def weekdays(self) -> set[int]:
        """Monday = 0."""
        return {_WEEKDAYS.index(d) for d in self.days}


class Matchers(BaseModel):
    """Which alerts a silence or a maintenance window covers: every key must match.

    Keys are `rule`, `severity` or a label (`device`, `quantity`, `measure`, a rule's own
    labels); values are exact or shell-style patterns (`grid-*`). Empty: every alert.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # `rule`, `severity`, `site` or a label, each to an exact value or a shell-style pattern
    # (`grid-*`); every key must match.
    match: dict[Name, str] = Field(default_factory=dict)


class Silence(Matchers):
    """Quiet matching alerts from `from` to `to` (site-local unless an offset is written)."""

    # When the silence starts: a date and time, site-local unless written with an offset.
    start: datetime = Field(alias="from")
    # When it ends (not included); an alert still firing then is messaged.
    end: datetime = Field(alias="to")
    # Why: shown with the alerts it holds back ("held by" in `lingtan alerts list`, the
    # events' `muted_by`).
    comment: str = ""

    @model_validator(mode="after")
    def _span(self) -> Silence:
        if (self.start.tzinfo is None) != (self.end.tzinfo is None):
            raise ValueError("write both `from` and `to` with an offset, or both without")
        if self.end <= self.start:
            raise ValueError(f"`to` {self.end} is not after `from` {self.start}")
        return self


class Maintenance(Matchers):
    """A planned stop: weekly, or once between two dates (site-local). Nobody is paged in it."""

    # The window's name, unique: shown with the held alerts ("maintenance NAME").
    name: Name
    # A window every week; or give `from` and `to` instead for one dated window.
    weekly: Weekly | None = None
    # Start of a dated window: a date and time, site-local unless written with an offset.
    start: datetime | None = Field(default=None, alias="from")
    # End of a dated window (not included); an alert still firing then is messaged.
    end: datetime | None = Field(default=None, alias="to")

    @model_validator(mode="after")
    def _span(self) -> Maintenance:
        dated = self.start is not None or self.end is not None
        if dated == (self.weekly is not None):
            raise ValueError(f"maintenance {self.name!r}: give either `weekly` or `from` and `to`")
        if dated:
            if self.start is None or self.end is None:
                raise ValueError(f"maintenance {self.name!r}: a dated window needs `from` and `to`")
            if (self.start.tzinfo is None) != (self.end.tzinfo is None):
                raise ValueError(
                    f"maintenance {self.name!r}: write both `from` and `to` with an offset, "
                    f"or both without"
                )
            if self.end <= self.start:
                raise ValueError(f"maintenance {self.name!r}: `to` is not after `from`")
        return self


# What a channel must not carry inline: its URL, and what reject_inline_secrets refuses.
_HIDDEN = frozenset({"url", "password", "token", "secret", "api_key"})


def _refuse_inline_url(data: Any) -> Any:
    if isinstance(data, dict) and "url" in data:
        raise ValueError(
            "'url' must not be written in the config: apprise URLs carry tokens and passwords. "
            "Put the URL in an environment variable and name it with 'url_env', or in a file "
            "named by 'url_file'"
        )
    return reject_inline_secrets(data)


class Channel(BaseModel):
    """Where messages go: an apprise URL read from an environment variable or a file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The environment variable that holds the channel's apprise URL, read at start; or give
    # `url_file`.
    url_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    # The file that holds the apprise URL, read at start (relative to the config's folder);
    # or give `url_env`.
    url_file: Path | None = None
    # One attempt's limit (connect and read), so a hung endpoint is given up and retried.
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    _inline = model_validator(mode="before")(_refuse_inline_url)

    @model_validator(mode="after")
    def _one_source(self) -> Channel:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("give exactly one of `url_env` and `url_file`")
        return self


class Route(BaseModel):
    """Alerts of these sites and severities go to these channels (unset: all)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Site ids this route is for; unset: every site.
    sites: list[Name] | None = None
    # Severities this route is for; unset: every severity.
    severities: list[Severity] | None = None
    # Channels (names under `channels`) the alerts go to; an alert gets every matching
    # route's channels, and none if no route matches.
    channels: Annotated[list[Name], Field(min_length=1)]


class Retry(BaseModel):
    """How a failed delivery is retried: doubling waits from `initial` up to `max`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Attempts per message and channel, the first included; after the last the message is
    # given up (marked failed in the outbox).
    attempts: Annotated[int, Field(ge=1, le=100)] = 8
    # Wait after the first failed attempt, seconds; it doubles after each further failure.
    initial_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    # The cap on the doubling wait, seconds; every wait is then jittered by ±20 %.
    max_s: Annotated[float, Field(gt=0, le=86400)] = 300.0


# What a template may use (string.Template, $name): nothing else is substituted.
TEMPLATE_FIELDS = frozenset(
    {
        "site", "site_name", "rule", "severity", "kind", "summary", "description", "value",
        "threshold", "labels", "time", "since", "link",
    }
)  # fmt: skip

FIRING_TITLE = "[$severity] $site_name: $summary"
FIRING_BODY = (
    "$summary\n"
    "Now: $value (threshold $threshold)\n"
    "Site: $site_name ($site)\n"
    "Since: $since\n"
    "Rule: $rule $labels\n"
    "Grafana: $link\n"
)
RESOLVED_TITLE = "[resolved] $site_name: $summary"
RESOLVED_BODY = (
    "Resolved: $summary\n"
    "Now: $value (threshold $threshold)\n"
    "Site: $site_name ($site)\n"
    "Resolved at: $time (firing since $since)\n"
    "Rule: $rule $labels\n"
    "Grafana: $link\n"
)


class Templates(BaseModel):
    """Message templates ($name placeholders, see TEMPLATE_FIELDS)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Title of the message when an alert fires, and of its repeats.
    firing_title: str = FIRING_TITLE
    # Body of the message when an alert fires, and of its repeats.
    firing_body: str = FIRING_BODY
    # Title of the message when a firing alert clears (or its rule is removed or switched off).
    resolved_title: str = RESOLVED_TITLE
    # Body of the message when a firing alert clears (or its rule is removed or switched off).
    resolved_body: str = RESOLVED_BODY

    @field_validator("firing_title", "firing_body", "resolved_title", "resolved_body")
    @classmethod
    def _known(cls, v: str) -> str:
        t = Template(v)
        if not t.is_valid():
            raise ValueError(f"{v!r} is not a valid template (write $$ for a dollar sign)")
        unknown = set(t.get_identifiers()) - TEMPLATE_FIELDS
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {', '.join('$' + u for u in sorted(unknown))}; "
                f"known: {', '.join(sorted(TEMPLATE_FIELDS))}"
            )
        return v


DEFAULT_NAMES = (
    "meter_offline",
    "data_gap",
    "demand_near_limit",
    "renewable_share_below_target",
    "off_trajectory",
)


class AlertsConfig(BaseModel):
    """Alert rules, quiet times and delivery of one site."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Alert state and the outbox of unsent messages (relative to the config's folder).
    state: Path = Path("var/alerts.sqlite")
    # The site's Grafana dashboard; messages link to it (with the rule's panel when it has one).
    grafana_url: str | None = None
    # Send a still-firing alert again this often; 0: never.
    repeat_s: Duration = Field(default=4 * 3600.0, alias="repeat")
    # The contracted maximum demand; the demand rule warns at a share of it.
    contracted_demand_kw: Annotated[float, Field(gt=0)] | None = None
    # The renewable share the site aims for (0-1); the default rule warns below it.
    renewable_share_target: Annotated[float, Field(gt=0, le=1)] | None = None
    # The built-in rules by name: false switches one off, a mapping changes its fields.
    defaults: dict[str, bool | dict[str, Any]] = Field(default_factory=dict)
    # Alert rules of your own, beside the defaults.
    rules: list[Annotated[Rule, BeforeValidator(_rule_item)]] = Field(default_factory=list)
    # Alerts held back for a time (by rule, device, site).
    silences: list[Silence] = Field(default_factory=list)
    # Planned shutdowns, once or weekly: nothing pages anyone during them.
    maintenance: list[Maintenance] = Field(default_factory=list)
    # Where messages go: apprise URLs (mailto://, dingtalk://, json://...) from url_env or
    # url_file.
    channels: dict[Name, Channel] = Field(default_factory=dict)
    # No routes: every alert goes to every channel.
    routes: list[Route] = Field(default_factory=list)
    # How a failing channel is retried.
    retry: Retry = Retry()
    # The message texts.
    templates: Templates = Templates()

    @model_validator(mode="before")
    @classmethod
    def _hide_inline_secrets(cls, data: Any) -> Any:
        # An inline URL or password is refused by Channel; blank it first so the error, which
        # shows what it refused, never shows the secret.
        chans = data.get("channels") if isinstance(data, dict) else None
        if not isinstance(chans, dict):
            return data
        hidden = {
            name: {k: "***" if k in _HIDDEN else v for k, v in ch.items()}
            if isinstance(ch, dict)
            else ch
            for name, ch in chans.items()
        }
        return data | {"channels": hidden}

    @field_validator("grafana_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @model_validator(mode="after")
    def _check(self) -> AlertsConfig:
        self.effective_rules  # noqa: B018 - validates every rule, defaults included
        for i, r in enumerate(self.routes):
            for c in r.channels:
                if c not in self.channels:
                    raise ValueError(
                        f"routes[{i}]: channel {c!r} is not defined under channels "
                        f"(defined: {', '.join(sorted(self.channels)) or 'none'})"
                    )
        names = [m.name for m in self.maintenance]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"maintenance: name(s) {dup} used twice")
        return self

    @cached_property
    def effective_rules(self) -> tuple[Rule, ...]:
        """The defaults (as changed or switched off) and the site's own rules, in that order.

        A rule of the site's own with a default's name replaces that default.
        """
        from rules.alerts.defaults import default_rules

        built = default_rules(self)
        for name in self.defaults:
            if name not in DEFAULT_NAMES:
                raise ValueError(
                    f"defaults: no default rule named {name!r} (defaults: "
                    f"{', '.join(DEFAULT_NAMES)})"
                )
        out: dict[str, Rule] = {}
        for name, base in built.items():
            override = self.defaults.get(name, True)
            if override is False:
                continue
            if base is None:
                if isinstance(override, dict):
                    raise ValueError(
                        f"defaults.{name}: this default needs "
                        f"{'renewable_share_target' if 'renewable' in name else 'more settings'} "
                        f"set in the alerts section"
                    )
                continue
            data = base | (override if isinstance(override, dict) else {})
            if data.get("name", name) != name:
                raise ValueError(f"defaults.{name}: a default keeps its name")
            out[name] = _parse_rule(data, f"defaults.{name}")
        own: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in own:
                raise ValueError(f"rules[{i}]: rule {rule.name!r}: the name is used twice")
            if rule.name in self.defaults and rule.name in out:
                raise ValueError(
                    f"rules[{i}]: rule {rule.name!r}: also changed under defaults; "
                    f"change it in one place"
                )
            own.add(rule.name)
            out[rule.name] = self._with_section_settings(rule, i)
        return tuple(out.values())

    def _with_section_settings(self, rule: Rule, i: int) -> Rule:
        """A rule of the site's own, with what it takes from the section when it is unset."""
        if isinstance(rule, DemandRule) and rule.contracted_kw is None:
            if self.contracted_demand_kw is None:
                raise ValueError(
                    f"rules[{i}]: rule {rule.name!r}: a demand rule needs `contracted_kw`, "
                    "or `contracted_demand_kw` in the alerts section"
                )
            return rule.model_copy(update={"contracted_kw": self.contracted_demand_kw})
        return rule

    def rule(self, name: str) -> Rule | None:
        """The effective rule of that name."""
        return next((r for r in self.effective_rules if r.name == name), None)
