"""The `lingtan` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.logging import RichHandler

from lingtan.alerts_cli import app as alerts_app
from lingtan.config import ConfigError, LoadedConfig, load
from lingtan.grafana.cli import app as grafana_app
from telemetry.redact import RedactingFilter

app = typer.Typer(
    help="lingtan (零碳): energy telemetry and carbon accounting for factories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(alerts_app, name="alerts")
app.add_typer(grafana_app, name="grafana")
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path, typer.Option("-c", "--config", help="site config YAML", exists=False, dir_okay=False)
]


@app.callback()
def main(
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Set up logging for every command."""
    handler: logging.Handler
    if err.is_terminal:
        handler = RichHandler(console=err, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:  # journald, a file, a pipe: one record per line, for grep and log shippers
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())  # no secret from the config reaches a log line
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    # pymodbus and amqtt narrate every connection at INFO
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    # pymodbus warns of every failed connect; our own errors say it once, with the device
    logging.getLogger("pymodbus").setLevel(max(logging.ERROR, logging.getLogger().level))


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
    if c.rules.meters:  # every factor a meter needs is in the library, as `rules` checks
        from rules.accounts import open_accounts
        from rules.ledger import Ledger

        try:
            open_accounts(c.site, c.rules, Ledger(Path(":memory:")), base_dir=loaded.base_dir)
        except (ValueError, LookupError) as exc:
            err.print(f"[red]error[/]: {exc}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
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


@app.command("config-reference")
def config_reference(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="file to write")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 if the file is stale")
    ] = False,
) -> None:
    """Write the site config reference (docs/config-reference.md) from the pydantic models."""
    from lingtan.config_reference import DEFAULT_PATH, reference, write

    path = output or DEFAULT_PATH
    if check:
        same = path.exists() and path.read_text("utf-8") == reference()
        typer.echo(f"{path}: {'up to date' if same else 'stale: run make docs'}")
        raise typer.Exit(0 if same else 1)
    typer.echo(f"{path}: {'written' if write(path) else 'unchanged'}")


@app.command()
def poll(  # noqa: PLR0917 - typer maps each parameter to an option
    config: Annotated[Path | None, typer.Option("-c", "--config", help="site config YAML")] = None,
    device: Annotated[
        str | None, typer.Option("--device", "-d", help="device id in the config")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="profile name or YAML path (no config)")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Modbus TCP host or gateway")] = None,
    port: Annotated[int, typer.Option(help="TCP port")] = 502,
    rtu_over_tcp: Annotated[bool, typer.Option(help="the gateway passes RTU frames")] = False,
    serial: Annotated[str | None, typer.Option(help="serial device for Modbus RTU")] = None,
    baud: Annotated[int, typer.Option(help="serial baud rate")] = 9600,
    parity: Annotated[str, typer.Option(help="serial parity: N, E or O")] = "N",
    unit: Annotated[int, typer.Option(help="Modbus unit id")] = 1,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 2.0,
    identify: Annotated[
        bool, typer.Option(help="also ask for vendor, product and revision (FC 43/14)")
    ] = False,
) -> None:
    """Read one device once and print its decoded values as JSON.

    Either a device of a site config (-c, --device), or a meter on the spot with no config
    (--profile with --host, or with --serial).
    """
    from pydantic import ValidationError

    from collectors.config import DeviceConfig, SerialTransport, TcpTransport, device_profile
    from collectors.modbus import ReadError, identify_once, read_once
    from collectors.profile import load_profile
    from telemetry.timeutil import now_ms

    site = None
    try:
        if config is not None:
            if device is None:
                raise ValueError("--device is required with --config")
            loaded = _load(config)
            site = loaded.config.site.id
            dev = loaded.config.edge.device(device)
            prof = device_profile(dev, loaded.base_dir)
        else:
            if profile is None or (host is None) == (serial is None):
                raise ValueError(
                    "give -c/--config with --device, or --profile with exactly one of --host "
                    "or --serial"
                )
            transport: TcpTransport | SerialTransport = (
                TcpTransport(type="rtu-over-tcp" if rtu_over_tcp else "tcp", host=host, port=port)
                if host is not None
                else SerialTransport.model_validate(
                    {"type": "serial", "device": serial, "baudrate": baud, "parity": parity}
                )
            )
            prof = load_profile(profile)
            dev = DeviceConfig(
                id=device or prof.name,
                profile=profile,
                transport=transport,
                unit_id=unit,
                timeout_s=timeout,
            )
    except (ValueError, ValidationError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        values = asyncio.run(read_once(dev.transport, dev.unit_id, prof, dev.timeout_s))
    except ReadError as exc:
        typer.echo(f"read failed: {exc}", err=True)
        raise typer.Exit(1) from None
    body: dict[str, object] = {
        "device": dev.id,
        "profile": prof.name,
        "ts": now_ms(),
        "values": values,
    }
    if identify:
        # Many meters do not implement FC 43/14: say so beside the values, do not fail.
        try:
            body["identity"] = asyncio.run(identify_once(dev.transport, dev.unit_id, dev.timeout_s))
        except ReadError as exc:
            body["identity_error"] = str(exc)
    if site is not None:
        body = {"site": site, **body}
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def profiles() -> None:
    """List the device profiles shipped with lingtan."""
    from rich.table import Table

    from collectors.profile import Profile, builtin_profiles, load_profile

    table = Table("profile", "manufacturer", "model", "values", "source", box=None)
    for name in builtin_profiles():
        p = load_profile(name)
        values = str(len(p.registers)) if isinstance(p, Profile) else "discovered"
        table.add_row(name, p.manufacturer, p.model, values, p.source)
    Console().print(table)


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
def ingest(
    config: ConfigOpt,
    check: Annotated[
        bool, typer.Option("--check", help="connect to the broker and every sink once, and exit")
    ] = False,
) -> None:
    """Run ingest: broker to the embedded store or InfluxDB (both when both are configured)."""
    from ingest.service import IngestService

    loaded = _load(config)
    c = loaded.config
    try:
        service = IngestService(c.site, c.broker, c.ingest, base_dir=loaded.base_dir)
    except ValueError as exc:  # a secret that cannot be read, a setting that cannot work
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from None
    if check:
        results = service.check()
        for r in results:
            mark = "[green]ok[/]  " if r.ok else "[red]FAIL[/]"
            Console().print(f"{mark} {r.what}: {r.detail}", highlight=False)
        raise typer.Exit(0 if all(r.ok for r in results) else 1)
    stop = threading.Event()
    _stop_on_signals(stop)
    service.run(stop)


@app.command()
def rules(config: ConfigOpt) -> None:
    """Run rules: the accounts into the ledger, derived figures and alerts to the broker."""
    from rules.service import RulesService

    loaded = _load(config)
    c = loaded.config
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        service = RulesService(c.site, c.broker, c.rules, base_dir=loaded.base_dir, alerts=c.alerts)
    except ValueError as exc:  # a factor a meter needs, an alert channel's secret
        err.print(f"[red]error[/]: {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    service.run(stop)


def _site_time(text: str, timezone: str, what: str) -> int:
    """Epoch ms of an ISO date or date-time; naive values are in the site's time zone."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from telemetry.timeutil import from_datetime

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO date or date-time", param_hint=what
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(timezone))
    return from_datetime(when)


@app.command()
def replay(  # noqa: PLR0917 - typer maps each parameter to an option
    config: ConfigOpt,
    samples: Annotated[Path, typer.Argument(help="recorded Samples, JSON lines (wire format)")],
    start: Annotated[
        str | None, typer.Option("--from", help="summarise from (ISO date/time, site zone)")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="up to, excluded (ISO date/time, site zone)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    ledger: Annotated[
        Path | None, typer.Option(help="write into this ledger (default: a temporary one)")
    ] = None,
) -> None:
    """Run the accounting engine over recorded Samples and print the period's figures.

    Readings up to --to are applied (those before --from set the counters' baselines); the
    summary covers the intervals in [--from, --to).
    """
    import tempfile

    from rules.accounts import GridCfeError, open_accounts
    from rules.ledger import Ledger
    from rules.replay import ReplayError, read_samples
    from rules.replay import replay as run_replay

    loaded = _load(config)
    c = loaded.config
    lo = 0 if start is None else _site_time(start, c.site.timezone, "--from")
    hi = 2**62 if end is None else _site_time(end, c.site.timezone, "--to")
    with tempfile.TemporaryDirectory(prefix="lingtan-replay-") as tmp:
        book = Ledger(ledger or Path(tmp) / "ledger.sqlite")
        try:
            accounts = open_accounts(c.site, c.rules, book, loaded.base_dir)
            n = run_replay(accounts.engine, (s for s in read_samples(samples) if s.ts < hi))
        except (ReplayError, GridCfeError, OSError, ValueError) as exc:
            err.print(f"[red]error[/]: {exc}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        result = {"samples_accounted": n, **accounts.period(lo, hi)}
        book.close()
    if as_json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    _print_summary(Console(), result, f"{n} readings accounted")


def _print_summary(out: Console, r: dict[str, Any], headline: str) -> None:
    """The period's figures as a person reads them; --json has every detail."""
    out.print(f"site {r['site']}: {headline}")
    for role, e in r["energy_kwh"].items():
        out.print(f"  {role}: {e['total']:.3f} kWh ({e['estimated']:.3f} estimated)")
    for dev, f in r["fuels"].items():
        out.print(f"  fuel {dev} ({f['fuel']}): {f['amount']:.3f} {f['unit']}")
    share = r["renewable_share"]
    out.print(
        f"  consumption {r['consumption_kwh']:.3f} kWh, renewable share "
        + ("-" if share is None else f"{share:.1%}")
        + ", hourly CFE "
        + ("-" if r["cfe"]["energytag"] is None else f"{r['cfe']['energytag']:.1%}")
    )
    out.print(f"  Scope 1: {r['scope1_kgco2e']:.3f} kgCO2e {r['scope1_by_gas_kgco2e']}")
    if r["biogenic_co2_kg"]:
        out.print(f"  biogenic CO2 (outside the scopes): {r['biogenic_co2_kg']:.3f} kg")
    out.print(f"  Scope 2 location-based: {r['scope2_location_kgco2e']:.3f} kgCO2e")
    out.print(f"  Scope 2 market-based: {r['scope2_market_kgco2e']:.3f} kgCO2e")
    if r["market"]["note"]:
        out.print(f"  note: {r['market']['note']}")
    for zone, pue in r["pue"].items():
        out.print(f"  PUE {zone}: {'-' if pue is None else pue}")
    for f in r["factors"]:
        out.print(f"  factor {f['id']}: {f['value']} {f['unit']} ({f['source']})")
    for e in r["events"]:
        out.print(f"  event {e['kind']} on {e['device']} seq {e['seq']}: {e['detail']}")


@app.command()
def recompute(
    config: ConfigOpt,
    start: Annotated[
        str, typer.Option("--from", help="recompute intervals from (ISO date/time, site zone)")
    ],
    reason: Annotated[
        str, typer.Option(help="why (e.g. 'MEE 2023 factors published'); kept with the revision")
    ],
) -> None:
    """Book past emissions again with the factor library as it is now, keeping the old figures.

    Every changed row's previous figure and factors are kept in the ledger's revision tables.
    Restart `lingtan rules` after changing factor files so live figures use them too.
    """
    from rules.accounts import GridCfeError, open_accounts
    from rules.ledger import Ledger
    from rules.recompute import recompute as run_recompute
    from telemetry.timeutil import now_ms

    loaded = _load(config)
    c = loaded.config
    lo = _site_time(start, c.site.timezone, "--from")
    path = c.rules.ledger if c.rules.ledger.is_absolute() else loaded.base_dir / c.rules.ledger
    if not path.exists():
        err.print(f"[red]error[/]: no ledger at {path}", highlight=False)
        raise typer.Exit(2)
    book = Ledger(path)
    try:
        accounts = open_accounts(c.site, c.rules, book, loaded.base_dir)
        rev = run_recompute(accounts.engine, lo, reason, now_ms())
    except (GridCfeError, OSError, ValueError, LookupError) as exc:
        err.print(f"[red]error[/]: {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    finally:
        book.close()
    out = Console()
    if rev.id is None:
        out.print(f"nothing changed from {start}: the ledger already uses the current factors")
        return
    out.print(f"revision {rev.id}: {rev.rows_changed} emission rows changed from {start}")
    for k in ("scope1_kgco2e", "scope2_location_kgco2e", "scope2_market_kgco2e"):
        out.print(f"  {k}: {rev.before[k]:.3f} -> {rev.after[k]:.3f}")
    out.print(f"  factors: {', '.join(rev.before['factors'])} -> {', '.join(rev.after['factors'])}")


@app.command()
def report(
    config: ConfigOpt,
    period: Annotated[
        str, typer.Option(help="2026-10 (month), 2026-Q3, 2026, FY2027 (fiscal year), 2026-10-05")
    ],
    fmt: Annotated[str, typer.Option("--format", help="html, pdf, csv or json")] = "html",
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            help="file to write (default: stdout for csv and json, "
            "lingtan-{site}-{period}.{format} for html and pdf)",
        ),
    ] = None,
) -> None:
    """A period's GHG report from the site's ledger, to send on as it is."""
    from lingtan import report as rep

    if fmt not in rep.FORMATS:
        raise typer.BadParameter(
            f"{fmt!r} is not one of {', '.join(rep.FORMATS)}", param_hint="--format"
        )
    loaded = _load(config)
    try:
        data = rep.build(loaded, period)
        if fmt == "json":
            text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
        elif fmt == "csv":
            text = rep.csv_text(data)
        else:
            text = rep.html(data)
        if out is None and fmt in ("json", "csv"):
            sys.stdout.write(text)
            return
        target = out or Path(f"lingtan-{data['meta']['site']}-{data['meta']['period']}.{fmt}")
        if fmt == "pdf":
            rep.pdf(text, target.resolve())
        else:
            target.write_text(text, encoding="utf-8")
    except (rep.ReportError, OSError, ValueError) as exc:
        err.print(f"[red]error[/]: {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    err.print(f"wrote {target}", highlight=False)


@app.command()
def demo(  # noqa: PLR0917 - typer maps each parameter to an option
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    speed: Annotated[
        float,
        typer.Option(help="simulated time runs this many times faster (60: a day in 24 minutes)"),
    ] = 60.0,
    history_days: Annotated[
        float, typer.Option(help="days of history sent through the pipeline at start")
    ] = 30.0,
    broker: Annotated[
        str | None,
        typer.Option(help="use this broker (mqtt://host:port) instead of the embedded one"),
    ] = None,
    protocol: Annotated[str, typer.Option(help="MQTT version of --broker: 5 or 3.1.1")] = "5",
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="where the demo keeps its databases and config (default: a new folder in "
            "/dev/shm, or the temporary folder)"
        ),
    ] = None,
) -> None:
    """A simulated electronics plant end to end on this machine, with a live view."""
    from lingtan.demo import run_demo, summary

    if speed <= 0 or not 0 <= history_days <= 400:
        typer.echo("error: --speed must be positive and --history-days within 0..400", err=True)
        raise typer.Exit(2)
    # the live view is the demo's output; keep routine log lines from tearing it (a meter that
    # drops out is shown in the view, not logged at every failed poll)
    if logging.getLogger().level == logging.INFO:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("collectors.agent").setLevel(logging.ERROR)
        # an answer that comes after the read timed out (a busy machine) is counted by the agent
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    console = Console()
    with contextlib.suppress(KeyboardInterrupt):
        result = asyncio.run(
            run_demo(
                duration=duration,
                broker_url=broker,
                protocol=protocol,
                state_dir=state_dir,
                console=console,
                speed=speed,
                history_days=history_days,
            )
        )
        console.print()
        console.print(summary(result), soft_wrap=True, highlight=False)
