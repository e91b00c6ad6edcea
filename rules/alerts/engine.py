"""The alert state machine: inactive -> pending -> firing -> resolved, quiet when it should be.

An alert is a rule and a set of labels (its key). Its condition must hold for the rule's `for:`
before it fires; a firing alert is messaged once, again every repeat interval, and once when it
clears (hysteresis: it clears at or past its clear threshold, which may lie back from the firing
one; at the firing one, a reading that sits on it may flap). A silence or a
maintenance window holds its messages back; an alert that fired and cleared inside one never
pages anyone, and one still firing when the window ends is messaged then. A resolve is sent
exactly when the firing was. Time comes from an injected clock (epoch ms).

Every change is committed with its event and its outbox rows in one transaction before
`evaluate` returns: after a restart on the same database the engine carries on where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any
from zoneinfo import ZoneInfo

from rules.alerts.conditions import Check, Labels, evaluate
from rules.alerts.config import AlertsConfig, Maintenance, Matchers, Rule, Severity
from rules.alerts.figures import Figures
from rules.alerts.messages import format_time, format_value, grafana_link, render
from rules.alerts.store import AlertRow, AlertStore, NewEvent, State
from telemetry.config import SiteInfo
from telemetry.timeutil import HOUR_MS, MINUTE_MS, from_datetime, now_ms, to_datetime

log = logging.getLogger(__name__)

Clock = Callable[[], int]
# Values shown by `lingtan alerts list` are written at most this often when nothing changes.
_FLUSH_MS = MINUTE_MS
_KEEP_MS = 30 * 24 * HOUR_MS  # delivered messages and published events kept this long


def alert_key(rule: str, labels: Labels) -> str:
    """The alert's identity: rule{label=value,...}."""
    return rule + "{" + ",".join(f"{k}={v}" for k, v in labels) + "}"


@dataclass(frozen=True)
class AlertEvent:
    """Something that happened to an alert: it fired, fired again (repeat) or resolved.

    `payload` is the JSON published on lingtan/v1/{site}/alert.
    """

    id: int
    kind: str  # firing | repeat | resolved
    key: str
    payload: dict[str, Any]


_NOTIFY_TYPE = {Severity.INFO: "info", Severity.WARNING: "warning", Severity.CRITICAL: "failure"}


class AlertEngine:
    """Evaluates the rules against a snapshot and keeps each alert's state."""

    def __init__(
        self,
        site: SiteInfo,
        cfg: AlertsConfig,
        store: AlertStore,
        *,
        clock: Clock = now_ms,
        on_enqueue: Callable[[], None] | None = None,
    ) -> None:
        self.site = site
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.on_enqueue = on_enqueue
        self.tz = ZoneInfo(site.timezone)
        self.rules = {r.name: r for r in cfg.effective_rules if r.enabled}
        self._alerts = store.alerts()
        self._flushed_ms = clock()
        self._pruned_ms = 0

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(self, figures: Figures) -> list[AlertEvent]:
        """One round: every rule against `figures` at the clock's now; the events it caused."""
        now = self.clock()
        changed: dict[str, AlertRow] = {}
        events: list[NewEvent] = []
        for rule in self.rules.values():

            def first_seen(labels: Labels, _rule: str = rule.name) -> int:
                row = self._alerts.get(alert_key(_rule, labels))
                return now if row is None else row.first_seen_ms

            for check in evaluate(rule, figures, now, first_seen):
                key = alert_key(rule.name, check.labels)
                row = self._alerts.get(key)
                if row is None:
                    row = self._alerts[key] = AlertRow(
                        key, rule.name, check.labels, State.INACTIVE, now, now
                    )
                    changed[key] = row
                if self._step(rule, row, check, now, events):
                    changed[key] = row
        deleted = self._forget_removed(now, events)
        if now - self._flushed_ms >= _FLUSH_MS:
            changed = {k: a for k, a in self._alerts.items()}
            self._flushed_ms = now
        for row in changed.values():
            row.updated_ms = now
        ids = self.store.commit(list(changed.values()), deleted, events)
        if now - self._pruned_ms >= HOUR_MS:
            self.store.prune(now - _KEEP_MS)
            self._pruned_ms = now
        if self.on_enqueue is not None and any(e.channels for e in events):
            self.on_enqueue()
        out = []
        for eid, e in zip(ids, events, strict=True):
            out.append(AlertEvent(eid, e.kind, e.key, {"id": eid, **e.payload}))
        return out

    def _step(
        self, rule: Rule, row: AlertRow, check: Check, now: int, events: list[NewEvent]
    ) -> bool:
        """Advance one alert; True when its stored state changed."""
        before = (row.state, row.notified, row.last_notified_ms, row.muted_by)
        row.value, row.threshold, row.unit, row.summary = (
            check.value,
            check.threshold,
            check.unit,
            check.summary,
        )
        active, cleared = check.active, check.cleared
        if row.state in (State.INACTIVE, State.RESOLVED):
            if active:
                row.state, row.pending_since_ms = State.PENDING, now
        elif row.state is State.PENDING and active is False:
            row.state, row.pending_since_ms = State.INACTIVE, None
        if (
            row.state is State.PENDING
            and active
            and row.pending_since_ms is not None
            and now - row.pending_since_ms >= rule.for_s * 1000
        ):
            row.state, row.fired_ms, row.notified, row.last_notified_ms = (
                State.FIRING,
                now,
                False,
                None,
            )
            row.muted_by = self._muted(rule, row, now)
            events.append(self._event(rule, row, "firing", now, notify=row.muted_by is None))
            if row.muted_by is None:
                row.notified, row.last_notified_ms = True, now
        elif row.state is State.FIRING:
            if cleared:
                events.append(self._event(rule, row, "resolved", now, notify=row.notified))
                row.state, row.resolved_ms, row.pending_since_ms = State.RESOLVED, now, None
                row.notified, row.muted_by = False, None
            else:
                self._remind(rule, row, now, events)
        return (row.state, row.notified, row.last_notified_ms, row.muted_by) != before

    def _remind(self, rule: Rule, row: AlertRow, now: int, events: list[NewEvent]) -> None:
        """A firing alert: its first message once a quiet time ends, then every repeat."""
        row.muted_by = self._muted(rule, row, now)
        if row.muted_by is not None:
            return
        if not row.notified:
            events.append(self._event(rule, row, "firing", now, notify=True))
        else:
            repeat = self.cfg.repeat_s if rule.repeat_s is None else rule.repeat_s
            last = row.last_notified_ms or 0
            if repeat <= 0 or now - last < repeat * 1000:
                return
            events.append(self._event(rule, row, "repeat", now, notify=True))
        row.notified, row.last_notified_ms = True, now

    def _forget_removed(self, now: int, events: list[NewEvent]) -> list[str]:
        """Alerts of rules no longer configured (or switched off): resolve what was paged."""
        gone = [k for k, a in self._alerts.items() if a.rule not in self.rules]
        for key in gone:
            row = self._alerts.pop(key)
            if row.state is State.FIRING:
                row.summary = f"{row.summary} (rule no longer configured)"
                events.append(self._event(None, row, "resolved", now, notify=row.notified))
        return gone

    # --- quiet times ---------------------------------------------------------------------------

    def _fields(self, rule: Rule | None, row: AlertRow) -> dict[str, str]:
        return {
            "rule": row.rule,
            "severity": (rule.severity if rule else Severity.INFO).value,
            "site": self.site.id,
            **dict(row.labels),
        }

    @staticmethod
    def _matches(m: Matchers, fields: dict[str, str]) -> bool:
        return all(k in fields and fnmatchcase(fields[k], pat) for k, pat in m.match.items())

    def _local_ms(self, dt: datetime) -> int:
        return from_datetime(dt if dt.tzinfo is not None else dt.replace(tzinfo=self.tz))

    def _in_window(self, w: Maintenance, now: int) -> bool:
        if w.weekly is None:
            assert w.start is not None
            assert w.end is not None
            return self._local_ms(w.start) <= now < self._local_ms(w.end)
        local = to_datetime(now, self.tz)
        t, days = local.time().replace(tzinfo=None), w.weekly.weekdays
        if w.weekly.start < w.weekly.end:
            return local.weekday() in days and w.weekly.start <= t < w.weekly.end
        # past midnight: the evening of a listed day, or the early morning after it
        yesterday = (local - timedelta(days=1)).weekday()
        return (local.weekday() in days and t >= w.weekly.start) or (
            yesterday in days and t < w.weekly.end
        )

    def _muted(self, rule: Rule | None, row: AlertRow, now: int) -> str | None:
        """What holds the alert's messages back now: a maintenance window or a silence."""
        fields = self._fields(rule, row)
        for w in self.cfg.maintenance:
            if self._in_window(w, now) and self._matches(w, fields):
                return f"maintenance {w.name}"
        for i, s in enumerate(self.cfg.silences):
            if self._local_ms(s.start) <= now < self._local_ms(s.end) and self._matches(s, fields):
                return f"silence {i}" + (f" ({s.comment})" if s.comment else "")
        return None

    # --- events and messages -------------------------------------------------------------------

    def channels_for(self, severity: Severity) -> tuple[str, ...]:
        """The channels an alert of this site and severity goes to (routes; else all)."""
        if not self.cfg.routes:
            return tuple(self.cfg.channels)
        out: list[str] = []
        for r in self.cfg.routes:
            if r.sites is not None and self.site.id not in r.sites:
                continue
            if r.severities is not None and severity not in r.severities:
                continue
            out += [c for c in r.channels if c not in out]
        return tuple(out)

    def _event(
        self, rule: Rule | None, row: AlertRow, kind: str, now: int, *, notify: bool
    ) -> NewEvent:
        severity = rule.severity if rule is not None else Severity.INFO
        since = row.fired_ms if row.fired_ms is not None else now
        panel = rule.panel if rule is not None else None
        link = grafana_link(
            self.cfg.grafana_url, self.site.id, panel, since - HOUR_MS, now + 15 * MINUTE_MS
        )
        channels = self.channels_for(severity) if notify else ()
        payload: dict[str, Any] = {
            "site": self.site.id,
            "rule": row.rule,
            "key": row.key,
            "labels": dict(row.labels),
            "kind": kind,
            "severity": severity.value,
            "ts": now,
            "since": since,
            "time_local": to_datetime(now, self.tz).isoformat(),
            "value": row.value,
            "threshold": row.threshold,
            "unit": row.unit,
            "summary": row.summary,
            "link": link if self.cfg.grafana_url else None,
            "muted_by": row.muted_by,
            "channels": list(channels),
        }
        fields = {
            "site": self.site.id,
            "site_name": self.site.name or self.site.id,
            "rule": row.rule,
            "severity": severity.value,
            "kind": kind,
            "summary": row.summary,
            "description": rule.description if rule is not None else "",
            "value": format_value(row.value, row.unit),
            "threshold": format_value(row.threshold, row.unit),
            "labels": ", ".join(f"{k}={v}" for k, v in row.labels),
            "time": format_time(now, self.site.timezone),
            "since": format_time(since, self.site.timezone),
            "link": link,
        }
        title, body = render(self.cfg.templates, kind, fields)
        log.info("alert %s %s%s", kind, row.key, f" (held: {row.muted_by})" if not notify else "")
        return NewEvent(
            key=row.key,
            kind=kind,
            ts_ms=now,
            payload=payload,
            title=title,
            body=body,
            notify_type="success" if kind == "resolved" else _NOTIFY_TYPE[severity],
            channels=channels,
        )

    # --- reading -------------------------------------------------------------------------------

    def states(self) -> list[AlertRow]:
        """Every alert's current state, by rule then key."""
        return sorted(self._alerts.values(), key=lambda a: (a.rule, a.key))
