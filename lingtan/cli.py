"""The `lingtan` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.logging import RichHandler

from lingtan.config import ConfigError, LoadedConfig, load

app = typer.Typer(
    help="lingtan (零碳): energy telemetry and carbon accounting for factories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path, typer.Option("-c", "--config", help="site config YAML", exists=False, dir_okay=False)
]


@app.callback()
def main(
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Set up logging for every command."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
    )
    # pymodbus and amqtt narrate every connection at INFO
    for name in ("pymodbus", "amqtt", "transitions"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def _load(path: Path) -> LoadedConfig:
    try:
        return load(path)
    except ConfigError as exc:
        # plain text, unwrapped: people grep it and paste it into tickets
        typer.echo(f"config error in {exc.path}:", err=True)
        for p in exc.problems:
            typer.echo(f"  - {p}", err=True)
        raise typer.Exit(2) from None


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


@app.command("check-config")
def check_config(config: ConfigOpt) -> None:
    """Validate a site config; every error names the YAML path and what was expected."""
    loaded = _load(config)
    c = loaded.config
    edge_ids = {d.id for d in c.edge.devices}
    for m in c.rules.meters:
        if m.device not in edge_ids:
            err.print(
                f"[yellow]note[/]: rules.meters device {m.device!r} is not polled by this "
                f"config's edge section (fine if another edge box polls it)"
            )
    typer.echo(
        f"{config}: OK — site {c.site.id}, {len(c.edge.devices)} device(s), "
        f"{len(c.rules.meters)} accounted meter(s)"
    )


@app.command()
def poll(
    config: ConfigOpt, device: Annotated[str, typer.Option("--device", "-d", help="device id")]
) -> None:
    """Read one device once and print its decoded values as JSON."""
    from collectors.config import device_profile
    from collectors.modbus import ModbusTcpReader, ReadError
    from telemetry.timeutil import now_ms

    loaded = _load(config)
    try:
        dev = loaded.config.edge.device(device)
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    profile = device_profile(dev, loaded.base_dir)

    async def once() -> dict[str, float]:
        reader = ModbusTcpReader(dev.transport.host, dev.transport.port, timeout_s=dev.timeout_s)
        try:
            return profile.decode(await reader.read(dev.unit_id, profile.plan()))
        finally:
            reader.close()

    try:
        values = asyncio.run(once())
    except ReadError as exc:
        err.print(f"[red]read failed[/]: {exc}")
        raise typer.Exit(1) from None
    body = {
        "site": loaded.config.site.id,
        "device": dev.id,
        "profile": profile.name,
        "ts": now_ms(),
        "values": values,
    }
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def edge(config: ConfigOpt) -> None:
    """Run the edge agent: poll the devices, keep the outbox, publish to the broker."""
    from collectors.agent import EdgeAgent

    loaded = _load(config)
    c = loaded.config

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await EdgeAgent(c.site, c.broker, c.edge, base_dir=loaded.base_dir).run(stop)

    asyncio.run(run())


@app.command()
def ingest(config: ConfigOpt) -> None:
    """Run ingest: broker to the embedded store (and InfluxDB when configured)."""
    from ingest.service import IngestService

    loaded = _load(config)
    c = loaded.config
    stop = threading.Event()
    _stop_on_signals(stop)
    IngestService(c.site, c.broker, c.ingest, base_dir=loaded.base_dir).run(stop)


@app.command()
def rules(config: ConfigOpt) -> None:
    """Run rules: energy and Scope 2 into the ledger, derived figures to the broker."""
    from rules.service import RulesService

    loaded = _load(config)
    c = loaded.config
    stop = threading.Event()
    _stop_on_signals(stop)
    RulesService(c.site, c.broker, c.rules, base_dir=loaded.base_dir).run(stop)


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    broker: Annotated[
        str | None,
        typer.Option(help="use this broker (mqtt://host:port) instead of the embedded one"),
    ] = None,
    protocol: Annotated[str, typer.Option(help="MQTT version of --broker: 5 or 3.1.1")] = "5",
    state_dir: Annotated[
        Path | None,
        typer.Option(help="where the demo keeps its databases (default: a new temporary folder)"),
    ] = None,
) -> None:
    """A simulated plant end to end on this machine, with a live view."""
    from lingtan.demo import run_demo

    # the live view is the demo's output; keep routine log lines from tearing it
    if logging.getLogger().level == logging.INFO:
        logging.getLogger().setLevel(logging.WARNING)
    console = Console()
    with contextlib.suppress(KeyboardInterrupt):
        figures = asyncio.run(
            run_demo(
                duration=duration,
                broker_url=broker,
                protocol=protocol,
                state_dir=state_dir,
                console=console,
            )
        )
        console.print()
        console.print(
            f"demo finished: {figures.samples_stored} readings stored, "
            f"{figures.energy_today_kwh:.3f} kWh, "
            f"{figures.scope2_location_today_kg:.3f} kg CO2 (Scope 2, location-based)"
        )
