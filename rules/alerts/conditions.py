"""Each rule kind turned into checks: a value against a threshold, per set of labels.

A check says whether its alert should fire (`active`) and whether a firing one may clear
(`cleared`); between the two (hysteresis) a firing alert stays firing. A check without a value
(the figure is missing) does neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rules.alerts.config import (
    AbsenceRule,
    BalanceRule,
    BudgetRule,
    DataQualityRule,
    DemandRule,
    Rule,
    ThresholdRule,
)
from rules.alerts.figures import Figures
from telemetry.quantities import vocabulary

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Check:
    """One alert's condition now."""

    labels: Labels  # sorted (name, value) pairs: with the rule's name, the alert's identity
    value: float | None  # None: the figure is missing
    threshold: float  # fires past this
    clear_at: float  # a firing alert clears at this or past it, back the other way
    above: bool  # fires above the threshold (else below)
    unit: str  # kW, kWh, s, tCO2e, ratio, count, or the quantity's unit
    summary: str  # what is wrong, in words

    @property
    def active(self) -> bool | None:
        """The firing condition holds (None: unknown)."""
        if self.value is None:
            return None
        return self.value > self.threshold if self.above else self.value < self.threshold

    @property
    def cleared(self) -> bool | None:
        """The clearing condition holds (None: unknown)."""
        if self.value is None:
            return None
        # at the clear point counts: a count fired past 0 clears when it is back to 0
        return self.value <= self.clear_at if self.above else self.value >= self.clear_at


def labels_of(rule: Rule, **extra: str) -> Labels:
    """The rule's own labels and the per-alert ones, sorted."""
    return tuple(sorted({**rule.labels, **extra}.items()))


def _unit(quantity: str) -> str:
    vocab = vocabulary()
    if quantity not in vocab:
        return ""
    unit = vocab[quantity].unit
    return "" if unit == "1" else unit


# First time a set of labels was evaluated (for a device that never reported).
FirstSeen = Callable[[Labels], int]


def evaluate(rule: Rule, f: Figures, now_ms: int, first_seen: FirstSeen) -> list[Check]:
    """The rule's checks against the snapshot at `now_ms`."""
    match rule:
        case ThresholdRule():
            return _threshold(rule, f)
        case AbsenceRule():
            return _absence(rule, f, now_ms, first_seen)
        case BudgetRule():
            return _budget(rule, f)
        case DemandRule():
            return _demand(rule, f)
        case BalanceRule():
            return _balance(rule, f)
        case DataQualityRule():
            return _quality(rule, f)


def _threshold(rule: ThresholdRule, f: Figures) -> list[Check]:
    above = rule.above is not None
    limit = rule.above if rule.above is not None else rule.below
    assert limit is not None  # the model guarantees one of them
    clear = rule.clear_below if above else rule.clear_above
    clear = limit if clear is None else clear
    word = "above" if above else "below"
    out: list[Check] = []
    if rule.figure is not None:
        value: float | None = {
            "site_power_kw": f.site_power_kw,
            "renewable_share": f.renewable_share,
            "estimated_share": f.quality.estimated_share if f.quality else None,
        }[rule.figure]
        unit = "kW" if rule.figure == "site_power_kw" else "ratio"
        name = rule.figure.replace("_kw", "").replace("_", " ")
        out.append(
            Check(labels_of(rule), value, limit, clear, above, unit, f"{name} {word} {limit:g}")
        )
        return out
    assert rule.quantity is not None
    assert rule.device is not None
    q = rule.quantity
    devices = sorted(d for d, qq in f.latest if qq == q) if rule.device == "*" else [rule.device]
    for d in devices:
        r = f.latest.get((d, q))
        out.append(
            Check(
                labels_of(rule, device=d, quantity=q),
                None if r is None else r.value,
                limit,
                clear,
                above,
                _unit(q),
                f"{q} of {d} {word} {limit:g}",
            )
        )
    return out


def _absence(rule: AbsenceRule, f: Figures, now_ms: int, first_seen: FirstSeen) -> list[Check]:
    # "*": the devices the site expects when the service says which (derived devices such as
    # `site` are not meters), else every device heard from
    every = f.expected_devices or f.devices()
    devices = sorted(every) if rule.device == "*" else [rule.device]
    out = []
    what = rule.quantity or "reading"
    for d in devices:
        labels = labels_of(rule, device=d, **({"quantity": rule.quantity} if rule.quantity else {}))
        last = f.last_seen(d, rule.quantity)
        since = last if last is not None else first_seen(labels)
        age = max(0.0, (now_ms - since) / 1000)
        out.append(Check(labels, age, rule.after_s, rule.after_s, True, "s", f"no {what} from {d}"))
    return out


def _budget(rule: BudgetRule, f: Figures) -> list[Check]:
    t = f.target
    clear_margin = rule.margin if rule.clear_margin is None else rule.clear_margin
    if rule.measure == "to_date":
        value = None if t is None else t.actual_to_date
        base = None if t is None else t.budget_to_date
        summary = "emissions this year above the reduction trajectory"
    else:
        value = None if t is None else t.forecast
        base = None if t is None else t.allowed
        summary = "this year's emissions forecast above the target"
    if base is None:
        return [Check(labels_of(rule), None, 0.0, 0.0, True, "tCO2e", summary)]
    return [
        Check(
            labels_of(rule),
            value,
            base * (1 + rule.margin),
            base * (1 + clear_margin),
            True,
            "tCO2e",
            summary,
        )
    ]


def _demand(rule: DemandRule, f: Figures) -> list[Check]:
    contracted = rule.contracted_kw or f.contracted_demand_kw
    clear = rule.share if rule.clear_share is None else rule.clear_share
    summary = f"site power above {rule.share:.0%} of the contracted demand"
    if contracted is None:
        return [Check(labels_of(rule), None, 0.0, 0.0, True, "kW", summary)]
    return [
        Check(
            labels_of(rule),
            f.site_power_kw,
            contracted * rule.share,
            contracted * clear,
            True,
            "kW",
            f"{summary} ({contracted:g} kW)",
        )
    ]


def _balance(rule: BalanceRule, f: Figures) -> list[Check]:
    b = f.balance
    clear = rule.tolerance if rule.clear_tolerance is None else rule.clear_tolerance
    value = None
    if b is not None and b.site_kwh >= rule.min_site_kwh and b.site_kwh > 0:
        value = abs(b.site_kwh - (b.submetered_kwh + b.unmetered_kwh)) / b.site_kwh
    summary = "sub-meters and remainder disagree with the site meter"
    return [Check(labels_of(rule), value, rule.tolerance, clear, True, "ratio", summary)]


def _quality(rule: DataQualityRule, f: Figures) -> list[Check]:
    q = f.quality
    clear = rule.above if rule.clear_below is None else rule.clear_below
    if rule.measure == "estimated_share":
        value = None if q is None else q.estimated_share
        return [
            Check(
                labels_of(rule, measure=rule.measure),
                value,
                rule.above,
                clear,
                True,
                "ratio",
                "share of energy estimated",
            )
        ]
    if rule.device == "*":
        devices = sorted(f.devices() | set(q.events if q else ()))
    else:
        devices = [rule.device]
    out = []
    for d in devices:
        count = None if q is None else float(q.events.get(d, {}).get(rule.measure, 0))
        out.append(
            Check(
                labels_of(rule, device=d, measure=rule.measure),
                count,
                rule.above,
                clear,
                True,
                "count",
                f"{rule.measure}s in the readings of {d}",
            )
        )
    return out
