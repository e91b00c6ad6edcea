"""The demo's site config: site.yaml with the simulators' ports, the broker and a state folder.

The result is written to `{state}/site.yaml`, so the other commands (check-config, replay,
report, alerts list) run on the demo's data as on a real plant's.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lingtan.config import SiteConfig
from telemetry.config import BrokerConfig

DEMO_DIR = Path(str(resources.files("lingtan.demo_plant")))
# Sim time runs ahead of the wall clock: ingest must accept Samples "from the future".
FUTURE_S = 100 * 365 * 86_400


def template() -> dict[str, Any]:
    """The shipped demo site config, as data."""
    data: dict[str, Any] = yaml.safe_load((DEMO_DIR / "site.yaml").read_text("utf-8"))
    return data


def effective(
    state: Path,
    broker: BrokerConfig,
    ports: dict[str, int],
    *,
    poll_s: float,
    wall_per_poll_s: float,
    base: dict[str, Any] | None = None,
) -> tuple[SiteConfig, dict[str, Any]]:
    """The config the demo runs, and the same as data (to save as YAML).

    `ports`: the loopback port serving each device id. Devices that share a meter's transport
    in the template (the grid meter's import and export) follow it. `poll_s` is each device's
    poll interval in simulated seconds; `wall_per_poll_s` what that is on the wall clock.
    """
    data = copy.deepcopy(base or template())
    data["broker"] = {"url": broker.url, "protocol": broker.protocol}
    edge = data["edge"]
    edge["state_dir"] = str(state / "edge")
    moved: dict[tuple[str, int], int] = {}
    for dev in edge["devices"]:
        if dev["id"] in ports:
            t = dev["transport"]
            moved[(t["host"], int(t["port"]))] = ports[dev["id"]]
    for dev in edge["devices"]:
        t = dev["transport"]
        key = (t["host"], int(t["port"]))
        if key not in moved:
            raise ValueError(f"edge device {dev['id']!r}: no simulated meter at {key}")
        t["port"] = moved[key]
        dev["interval_s"] = poll_s
    for dev in (edge.get("mqtt") or {}).get("devices", []):
        # the agent's offline watch for MQTT devices runs on the wall clock
        dev["offline_after_s"] = max(5.0, 5 * wall_per_poll_s)
    ingest = data["ingest"]
    ingest["sqlite"] = {"path": str(state / "lingtan.sqlite")}
    ingest["state_path"] = str(state / "ingest-state.sqlite")
    ingest["max_future_s"] = FUTURE_S
    rules = data["rules"]
    rules["ledger"] = str(state / "ledger.sqlite")
    rules["factor_files"] = [str(DEMO_DIR / f) for f in rules.get("factor_files", [])]
    data["alerts"]["state"] = str(state / "alerts.sqlite")
    cfg = SiteConfig.model_validate(data, context={"base_dir": DEMO_DIR})
    return cfg, data


def save(path: Path, data: dict[str, Any], note: str) -> None:
    """Write the config the demo runs, with a header saying what it is."""
    header = "".join(f"# {line}\n" for line in note.splitlines())
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
