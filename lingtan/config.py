"""Loading a site config: one YAML per site, each component validating its own section.

Errors name the file, the line and the YAML path, and say what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from collectors.config import EdgeConfig
from ingest.config import IngestConfig
from rules.alerts.config import AlertsConfig
from rules.config import RulesConfig
from telemetry.config import BrokerConfig, SiteInfo


class SiteConfig(BaseModel):
    """A whole site config; each section's model belongs to the component that uses it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site: SiteInfo
    broker: BrokerConfig = BrokerConfig()
    edge: EdgeConfig = EdgeConfig()
    ingest: IngestConfig = IngestConfig()
    rules: RulesConfig = RulesConfig()
    alerts: AlertsConfig = AlertsConfig()


class ConfigError(Exception):
    """A config that cannot be used; `problems` lists each one with where it is."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and the folder its relative paths are resolved against."""

    config: SiteConfig
    path: Path

    @property
    def base_dir(self) -> Path:
        """Relative paths in the config (state, profiles, factor files) start here."""
        return self.path.parent


def load(path: Path) -> LoadedConfig:
    """Read and validate a site config file."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror}"]) from None
    return parse(text, path)


def parse(text: str, path: Path) -> LoadedConfig:
    """Validate config text; `path` names it in errors and anchors relative paths."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(
            path, [f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"]
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(path, ["the top level must be a mapping with at least a 'site:' section"])
    try:
        cfg = SiteConfig.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError(
            path, [_describe(err, root) for err in exc.errors(include_url=False)]
        ) from None
    return LoadedConfig(cfg, path)


def _describe(err: Any, root: yaml.Node | None) -> str:
    # drop union tags ("function-after[...]", "tcp socket"): they are not keys in the YAML
    loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or " " in p))]
    ypath = ""
    for p in loc:
        ypath += f"[{p}]" if isinstance(p, int) else (f".{p}" if ypath else str(p))
    msg = str(err["msg"]).removeprefix("Value error, ")
    # the value is shown when it helps, never a mapping (it may hold a secret the error is
    # about) and never a URL's credentials
    if (
        err["type"] not in ("missing", "extra_forbidden")
        and "input" in err
        and not isinstance(err["input"], dict | list)
        and "credentials" not in msg
    ):
        got = repr(err["input"])
        if got not in msg:
            msg += f" (got {got[:60]}{'...' if len(got) > 60 else ''})"
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see deploy/examples/site.yaml)"
    line = _line_of(root, loc)
    return f"{'line ' + str(line) + ': ' if line else ''}{ypath or 'top level'}: {msg}"


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """1-based line of the deepest node along `loc` that exists in the YAML."""
    line = None
    for p in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == p), None)
            if nxt is None:
                return node.start_mark.line + 1
            line = nxt.start_mark.line + 1
            # point at the key, which is where a reader looks
            key = next(k for k, v in node.value if v is nxt)
            line = key.start_mark.line + 1
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            node = node.value[p]
            line = node.start_mark.line + 1
        else:
            break
    return line
