"""`lingtan alerts ...`: try every channel, show every rule's state."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lingtan.config import ConfigError, LoadedConfig, load

app = typer.Typer(
    help="Alerts: test the channels, list the state of every rule.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOpt = Annotated[
    Path, typer.Option("-c", "--config", help="site config YAML", exists=False, dir_okay=False)
]


def _load(path: Path) -> LoadedConfig:
    try:
        return load(path)
    except ConfigError as exc:
        typer.echo(f"config error in {exc.path}:", err=True)
        for p in exc.problems:
            typer.echo(f"  - {p}", err=True)
        raise typer.Exit(2) from None


@app.command("test")
def test_channels(config: ConfigOpt) -> None:
    """Send a test message through every configured channel; exit 1 if any failed."""
    from rules.alerts import send_test

    loaded = _load(config)
    c = loaded.config
    results = send_test(c.site.id, c.site.name, c.alerts, base_dir=loaded.base_dir)
    if not results:
        typer.echo(f"{config}: no channels under alerts.channels", err=True)
        raise typer.Exit(1)
    for r in results:
        if r.ok:
            typer.echo(f"{r.channel}: OK")
        else:
            typer.echo(f"{r.channel}: FAILED - {r.error}")
    failed = [r.channel for r in results if not r.ok]
    typer.echo(
        f"{len(results) - len(failed)} of {len(results)} channel(s) took the test message"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    if failed:
        raise typer.Exit(1)


@app.command("list")
def list_rules(config: ConfigOpt) -> None:
    """The current state of every rule's alerts, from the alerts database."""
    from rules.alerts import AlertStore, state_path
    from rules.alerts.messages import format_time, format_value

    loaded = _load(config)
    c = loaded.config
    path = state_path(c.alerts, loaded.base_dir)
    rows = {}
    if path.exists():
        store = AlertStore(path)
        try:
            rows = store.alerts()
        finally:
            store.close()
    tz = c.site.timezone
    table = Table(title=f"alerts of {c.site.id} ({path})")
    for col in ("rule", "kind", "severity", "labels", "state", "since", "value", "threshold",
                "notified", "held by"):  # fmt: skip
        table.add_column(col)
    rules = {r.name: r for r in c.alerts.effective_rules}
    for rule in rules.values():
        mine = sorted((a for a in rows.values() if a.rule == rule.name), key=lambda a: a.key)
        if not rule.enabled:
            table.add_row(rule.name, rule.kind, rule.severity, "", "disabled", *[""] * 5)
            continue
        if not mine:
            table.add_row(rule.name, rule.kind, rule.severity, "", "inactive", *[""] * 5)
        for a in mine:
            since = {"pending": a.pending_since_ms, "firing": a.fired_ms}.get(
                a.state.value, a.resolved_ms
            )
            table.add_row(
                rule.name,
                rule.kind,
                rule.severity,
                ", ".join(f"{k}={v}" for k, v in a.labels),
                a.state.value,
                format_time(since, tz) if since else "",
                format_value(a.value, a.unit),
                format_value(a.threshold, a.unit),
                format_time(a.last_notified_ms, tz) if a.last_notified_ms else "",
                a.muted_by or "",
            )
    for a in rows.values():
        if a.rule not in rules:
            table.add_row(a.rule, "?", "", "", f"{a.state.value} (rule gone)", *[""] * 5)
    Console(width=200).print(table)
