"""The rules a new site gets out of the box, each changed or switched off by name.

```yaml
alerts:
  defaults:
    data_gap: false                  # off
    demand_near_limit: {share: 0.85} # changed
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rules.alerts.config import AlertsConfig


def default_rules(cfg: AlertsConfig) -> dict[str, dict[str, Any] | None]:
    """Each default rule as config data; None for one the section lacks a setting for."""
    renewable = None
    if cfg.renewable_share_target is not None:
        renewable = {
            "name": "renewable_share_below_target",
            "kind": "threshold",
            "figure": "renewable_share",
            "below": cfg.renewable_share_target,
            # a share that hovers on the target would flap: clear a point above it
            "clear_above": min(1.0, cfg.renewable_share_target + 0.01),
            # the share of the period so far moves slowly; an hour under it is a trend
            "for": "1h",
            "severity": "info",
            "description": "renewable share of the period so far below the site's target",
        }
    return {
        "meter_offline": {
            "name": "meter_offline",
            "kind": "absence",
            "device": "*",
            "after": "15m",
            "severity": "warning",
            "description": "a meter has sent no reading for 15 minutes",
        },
        "data_gap": {
            "name": "data_gap",
            "kind": "data_quality",
            "measure": "gap",
            "above": 0,
            "severity": "info",
            "description": "a meter's readings have a gap today; the energy across it is estimated",
        },
        "demand_near_limit": {
            "name": "demand_near_limit",
            "kind": "demand",
            "share": 0.9,
            "clear_share": 0.85,
            "contracted_kw": cfg.contracted_demand_kw,
            # the demand charge is on a 15-minute average: five minutes over is worth a call
            "for": "5m",
            "severity": "critical",
            "description": "site power above 90 % of the contracted maximum demand",
        },
        "renewable_share_below_target": renewable,
        "off_trajectory": {
            "name": "off_trajectory",
            "kind": "budget",
            "measure": "to_date",
            "margin": 0.0,
            "for": "1h",
            "severity": "warning",
            "description": "emissions this fiscal year above the reduction trajectory",
        },
    }
