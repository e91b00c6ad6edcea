"""Alerts for energy managers: rules over the site's figures, a state machine, delivery.

The rules service holds one `Alerts` per site:

    alerts = Alerts(site, cfg.alerts, base_dir=loaded.base_dir)   # opens the state DB
    alerts.start()                                                  # channel threads
    events = alerts.evaluate(Figures(...))                          # after each batch
    mids = publish_events(client, site.id, events)                  # lingtan/v1/{site}/alert
    alerts.mark_published(ids acknowledged by the broker)
    alerts.close()
"""

from __future__ import annotations

from pathlib import Path

from rules.alerts.config import AlertsConfig, Severity
from rules.alerts.engine import AlertEngine, AlertEvent, Clock
from rules.alerts.figures import BalanceFigures, Figures, QualityFigures, Reading, TargetFigures
from rules.alerts.notify import ChannelError, Notifier, send_test
from rules.alerts.publish import event_json, publish_events
from rules.alerts.store import AlertRow, AlertStore, State
from telemetry.config import SiteInfo
from telemetry.timeutil import now_ms

__all__ = [
    "AlertEngine",
    "AlertEvent",
    "AlertRow",
    "AlertStore",
    "Alerts",
    "AlertsConfig",
    "BalanceFigures",
    "ChannelError",
    "Figures",
    "QualityFigures",
    "Reading",
    "Severity",
    "State",
    "TargetFigures",
    "event_json",
    "publish_events",
    "send_test",
    "state_path",
]


def state_path(cfg: AlertsConfig, base_dir: Path | None) -> Path:
    """The alerts database, relative paths from the config file's folder."""
    p = cfg.state
    return p if p.is_absolute() or base_dir is None else base_dir / p


class Alerts:
    """A site's alert engine and its delivery, on one state database."""

    def __init__(
        self,
        site: SiteInfo,
        cfg: AlertsConfig,
        *,
        base_dir: Path | None = None,
        clock: Clock = now_ms,
        notifier: Notifier | None = None,
        poll_s: float = 5.0,
    ) -> None:
        self.store = AlertStore(state_path(cfg, base_dir))
        try:
            self.notifier = notifier or Notifier(cfg, self.store, base_dir=base_dir, poll_s=poll_s)
        except ChannelError:
            self.store.close()
            raise
        self.engine = AlertEngine(site, cfg, self.store, clock=clock, on_enqueue=self.notifier.wake)

    def start(self) -> None:
        """Start delivering (also what a previous run left in the outbox)."""
        self.notifier.start()

    def evaluate(self, figures: Figures) -> list[AlertEvent]:
        """Evaluate every rule; the events to publish (already durable, messages queued)."""
        return self.engine.evaluate(figures)

    def unpublished(self, limit: int = 1000) -> list[AlertEvent]:
        """Events the broker has not confirmed yet (e.g. from before a restart)."""
        return [
            AlertEvent(i, str(p["kind"]), str(p["key"]), {"id": i, **p})
            for i, p in self.store.unpublished(limit)
        ]

    def mark_published(self, ids: list[int]) -> None:
        """The broker acknowledged these events."""
        self.store.mark_published(ids)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop delivery and close the database."""
        self.notifier.stop(timeout_s)
        self.store.close()
