"""Shared pieces of the alert tests: a clock the test moves, a site, configs, snapshots."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rules.alerts import AlertEngine, AlertsConfig, AlertStore, Figures, Reading
from telemetry.config import SiteInfo
from telemetry.timeutil import from_datetime

SITE = SiteInfo(id="wuhan-fab1", name="Wuhan Fab 1", timezone="Asia/Shanghai")
TZ = ZoneInfo("Asia/Shanghai")
# Monday 2 June 2025, 10:00 in Wuhan (02:00 UTC)
T0 = from_datetime(datetime(2025, 6, 2, 10, 0, tzinfo=TZ))
MIN = 60_000


class Clock:
    """Epoch ms that only the test moves."""

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, minutes: float) -> int:
        self.ms += int(minutes * MIN)
        return self.ms

    def at(self, dt: datetime) -> int:
        self.ms = from_datetime(dt)
        return self.ms


def config(**section: Any) -> AlertsConfig:
    """An alerts section: no defaults unless asked, one channel per name in `channels`."""
    section.setdefault("defaults", dict.fromkeys(
        ("meter_offline", "data_gap", "demand_near_limit", "off_trajectory"), False))
    chans = section.pop("channel_names", ["ops"])
    section.setdefault("channels", {c: {"url_env": f"LT_TEST_{c.upper()}"} for c in chans})
    return AlertsConfig.model_validate(section)


POWER_RULE: dict[str, Any] = {
    "name": "compressor-power", "kind": "threshold", "device": "compressor-1",
    "quantity": "active_power_kw", "above": 200, "clear_below": 180, "for": "5m",
    "severity": "warning", "panel": 12,
}


def power(kw: float, ts_ms: int, device: str = "compressor-1") -> Figures:
    """A snapshot with one power reading."""
    return Figures(latest={(device, "active_power_kw"): Reading(ts_ms, kw)})


def engine(tmp_path: Path, cfg: AlertsConfig, clock: Clock) -> AlertEngine:
    """An engine on the test's state database (a new object each call: a restart)."""
    return AlertEngine(SITE, cfg, AlertStore(tmp_path / "alerts.sqlite"), clock=clock)


def outbox(e: AlertEngine) -> list[tuple[str, str]]:
    """(channel, title) of every queued message."""
    return [(str(r["channel"]), str(r["title"])) for r in e.store.outbox()]
