"""`lingtan demo`: a simulated grid meter, an embedded broker, and edge, ingest and rules."""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import threading
from pathlib import Path

from rich.console import Console
from rich.live import Live

from collectors.agent import EdgeAgent
from collectors.config import DeviceConfig, EdgeConfig, TcpTransport
from collectors.profile import register_map
from ingest.config import IngestConfig, SqliteConfig
from ingest.service import IngestService
from ingest.sqlite_store import SqliteStore
from lingtan.config import SiteConfig
from lingtan.simulator import FactoryLoad, SimulatedMeter
from lingtan.view import Figures, read_figures, render
from rules.config import MeterConfig, Role, RulesConfig
from rules.ledger import Ledger
from rules.service import RulesService
from telemetry.config import BrokerConfig, SiteInfo

log = logging.getLogger(__name__)

DEMO_SITE = SiteInfo(
    id="wuhan-fab1", name="Demo electronics plant, Wuhan", timezone="Asia/Shanghai", region="CN-HB"
)
GRID_METER = "grid-main"
PROFILE = "eastron-sdm630"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_embedded_broker(port: int) -> object:
    """amqtt on loopback: MQTT 3.1.1 only, enough for a demo or a single small plant."""
    from amqtt.broker import Broker

    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    return broker


def demo_config(state: Path, broker: BrokerConfig, meter_port: int) -> SiteConfig:
    """The site config the demo runs with."""
    return SiteConfig(
        site=DEMO_SITE,
        broker=broker,
        edge=EdgeConfig(
            agent_id="edge-demo",
            state_dir=state / "edge",
            devices=[
                DeviceConfig(
                    id=GRID_METER,
                    profile=PROFILE,
                    transport=TcpTransport(host="127.0.0.1", port=meter_port),
                    interval_s=1.0,
                    timeout_s=1.0,
                )
            ],
        ),
        ingest=IngestConfig(
            client_id="lingtan-demo-ingest",
            sqlite=SqliteConfig(path=state / "lingtan.sqlite"),
            state_path=state / "ingest-state.sqlite",
        ),
        rules=RulesConfig(
            client_id="lingtan-demo-rules",
            ledger=state / "ledger.sqlite",
            meters=[MeterConfig(device=GRID_METER, role=Role.GRID_IMPORT)],
        ),
    )


async def run_demo(
    *,
    duration: float | None,
    broker_url: str | None,
    protocol: str,
    state_dir: Path | None,
    console: Console,
) -> Figures:
    """Run the whole path until `duration` seconds pass or the task is cancelled."""
    state = state_dir or Path(tempfile.mkdtemp(prefix="lingtan-demo-"))
    meter = SimulatedMeter(register_map(PROFILE), FactoryLoad(timezone=DEMO_SITE.timezone))
    meter_port = await meter.start()
    embedded = None
    if broker_url is None:
        port = free_port()
        embedded = await start_embedded_broker(port)
        broker = BrokerConfig(url=f"mqtt://127.0.0.1:{port}", protocol="3.1.1")
    else:
        broker = BrokerConfig(url=broker_url, protocol="5" if protocol == "5" else "3.1.1")
    cfg = demo_config(state, broker, meter_port)
    console.print(
        f"[dim]state in {state}; broker {broker.url} (MQTT {broker.protocol}); "
        f"meter {PROFILE} on 127.0.0.1:{meter_port}[/]",
        soft_wrap=True,
    )

    ingest = IngestService(cfg.site, cfg.broker, cfg.ingest)
    rules = RulesService(cfg.site, cfg.broker, cfg.rules)
    agent = EdgeAgent(cfg.site, cfg.broker, cfg.edge)
    stop_threads = threading.Event()
    threads = [
        threading.Thread(target=ingest.run, args=(stop_threads,), name="ingest"),
        threading.Thread(target=rules.run, args=(stop_threads,), name="rules"),
    ]
    for t in threads:
        t.start()
    stop = asyncio.Event()
    agent_task = asyncio.create_task(agent.run(stop), name="edge-agent")
    store = SqliteStore(state / "lingtan.sqlite")
    ledger = Ledger(cfg.rules.ledger)
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    figures = read_figures(cfg.site, store, ledger, [GRID_METER])

    def extra() -> list[tuple[str, str]]:
        h = agent.health[GRID_METER]
        pub = agent.publisher
        return [
            ("Meter polls", f"{h.polls:,} ({h.failures} failed)"),
            ("Edge outbox", f"{agent.outbox.cached_depth if pub else 0} waiting"),
            (
                "Ingest",
                f"{ingest.stats.messages:,} msgs, {sum(ingest.stats.rejected.values())} rejected",
            ),
            (
                "Rules",
                f"{rules.samples_applied:,} samples, {rules.derived_published} derived published",
            ),
        ]

    try:
        with Live(
            render(cfg.site, figures, extra()),
            console=console,
            refresh_per_second=2,
            transient=False,
        ) as live:
            while deadline is None or loop.time() < deadline:
                if agent_task.done():
                    agent_task.result()  # surface a crash
                await asyncio.sleep(0.5)
                figures = read_figures(cfg.site, store, ledger, [GRID_METER])
                live.update(render(cfg.site, figures, extra()))
    finally:
        stop.set()
        await asyncio.gather(agent_task, return_exceptions=True)
        stop_threads.set()
        for t in threads:
            await asyncio.to_thread(t.join, 10)
        store.close()
        ledger.close()
        await meter.stop()
        if embedded is not None:
            await embedded.shutdown()  # type: ignore[attr-defined]
    return figures
