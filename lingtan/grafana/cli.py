"""`lingtan grafana dashboards` and `lingtan grafana push`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from lingtan.config import ConfigError, load
from telemetry.config import read_secret

if TYPE_CHECKING:  # the SDK and the InfluxDB client load only when a grafana command runs
    from lingtan.grafana.dashboards import Generated
    from lingtan.grafana.layout import Layout

app = typer.Typer(
    help="Grafana: generate the dashboards, push them with their data source.",
    no_args_is_help=True,
)

ConfigsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "-c",
        "--config",
        help="site config whose rules.meters give areas, lines and data-centre zones "
        "(repeat for several sites); none: the generic dashboards",
        dir_okay=False,
    ),
]


def _layout(configs: list[Path] | None) -> Layout:
    from lingtan.grafana.layout import Layout

    sites = []
    for path in configs or []:
        try:
            c = load(path).config
        except ConfigError as exc:
            typer.echo(f"config error in {exc.path}:", err=True)
            for p in exc.problems:
                typer.echo(f"  - {p}", err=True)
            raise typer.Exit(2) from None
        sites.append((c.site.id, c.rules.meters))
    return Layout.from_configs(sites)


def _stale(directory: Path, dashboards: list[Generated]) -> list[str]:
    out = []
    for g in dashboards:
        path = directory / g.filename
        if not path.exists() or path.read_text("utf-8") != g.text():
            out.append(str(path))
    return out


@app.command()
def dashboards(
    configs: ConfigsOpt = None,
    out: Annotated[
        Path, typer.Option("-o", "--out", help="folder to write the JSON files to", file_okay=False)
    ] = Path("deploy/grafana/dashboards"),
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 if the files differ")
    ] = False,
) -> None:
    """Write the dashboards as JSON (what file provisioning and `push` use)."""
    from lingtan.grafana.dashboards import generate, write

    layout = _layout(configs)
    if check:
        stale = _stale(out, generate(layout))
        for name in stale:
            typer.echo(f"stale: {name}", err=True)
        if stale:
            typer.echo("regenerate with `lingtan grafana dashboards`", err=True)
            raise typer.Exit(1)
        typer.echo(f"up to date: {out}")
        return
    for path in write(out, layout):
        typer.echo(f"wrote {path}")


@app.command()
def push(  # noqa: PLR0917 - typer maps each parameter to an option
    url: Annotated[str, typer.Option(help="Grafana's base URL, e.g. https://grafana.example.com")],
    token_file: Annotated[
        Path,
        typer.Option(
            help="file holding a Grafana service-account token (Editor or Admin)", dir_okay=False
        ),
    ],
    configs: ConfigsOpt = None,
    influxdb_url: Annotated[
        str | None,
        typer.Option(
            help="InfluxDB URL as Grafana reaches it; omit to leave the data source as it is"
        ),
    ] = None,
    influxdb_database: Annotated[
        str, typer.Option(help="database (InfluxDB 1.x), or bucket with a DBRP mapping (2.x, 3)")
    ] = "lingtan",
    influxdb_token_file: Annotated[
        Path | None, typer.Option(help="file holding an InfluxDB 2.x / 3 token", dir_okay=False)
    ] = None,
    influxdb_user: Annotated[str | None, typer.Option(help="InfluxDB 1.x user")] = None,
    influxdb_password_file: Annotated[
        Path | None, typer.Option(help="file holding the InfluxDB 1.x password", dir_okay=False)
    ] = None,
    timeout_s: Annotated[float, typer.Option(help="per request")] = 10.0,
) -> None:
    """Create or update the lingtan folder, data source and dashboards in Grafana, by uid."""
    from lingtan.grafana.dashboards import generate
    from lingtan.grafana.push import InfluxSource, PushError, connect
    from lingtan.grafana.push import push as do_push

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        typer.echo(f"--url: {url!r} is not an http:// or https:// URL", err=True)
        raise typer.Exit(2)
    if parts.username or parts.password:
        typer.echo("--url: put no credentials in the URL; use --token-file", err=True)
        raise typer.Exit(2)
    try:
        token = read_secret(None, token_file, "grafana token")
        influx_token = read_secret(None, influxdb_token_file, "influxdb token")
        influx_password = read_secret(None, influxdb_password_file, "influxdb password")
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    assert token is not None  # token_file is required
    if not token.get_secret_value():
        typer.echo(f"grafana token: {token_file} is empty", err=True)
        raise typer.Exit(2)
    source = None
    if influxdb_url is not None:
        source = InfluxSource(
            influxdb_url, influxdb_database, influx_token, influxdb_user, influx_password
        )
    elif influxdb_token_file or influxdb_user or influxdb_password_file:
        typer.echo("--influxdb-* options need --influxdb-url", err=True)
        raise typer.Exit(2)
    try:
        report = do_push(connect(url, token, timeout_s), generate(_layout(configs)), source)
    except PushError as exc:
        typer.echo(f"grafana push failed at {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"folder lingtan: {report.folder}")
    typer.echo(f"data source: {report.datasource}")
    for uid, state in report.dashboards.items():
        typer.echo(f"dashboard {uid}: {state}")
