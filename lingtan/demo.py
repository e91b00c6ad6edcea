"""`lingtan demo`: a simulated electronics plant in Wuhan, end to end on this machine.

What runs, all on loopback: eleven meters served over Modbus TCP with the shipped profiles (a
SunSpec inverter among them), a gas meter's gateway publishing JSON over MQTT, the embedded
broker (or the one given), the edge agent, ingest into the embedded store and rules with its
ledger and alerts. A month of history goes first, through the edge outbox and the broker like
any backlog; then the plant runs live on a simulated clock, `speed` times faster than the wall
clock, with a live view of what a plant operator sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, RenderableType
from rich.live import Live

from collectors.agent import DeviceHealth
from ingest.service import IngestService
from lingtan.config import SiteConfig
from lingtan.demo_plant import config as demo_config
from lingtan.demo_plant import history
from lingtan.demo_plant.agent import SimClockAgent
from lingtan.demo_plant.clock import SimClock
from lingtan.demo_plant.devices import (
    Meters,
    RegisterMap,
    gas_gateway,
    quantizer,
    register_maps,
    start_meters,
)
from lingtan.demo_plant.model import DAY_S, Plant, load_plant
from lingtan.view import AlertLine, DeviceRow, EventLine, Snapshot, render
from rules.accounts import Accounts
from rules.alerts import Alerts, AlertStore, State, state_path
from rules.config import Role
from rules.engine import Engine
from rules.factors import FactorLibrary
from rules.ledger import Ledger
from rules.market import HourFlow
from rules.periods import PeriodKind, period_of
from rules.service import RulesService
from telemetry.config import BrokerConfig, SiteInfo

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_embedded_broker(port: int) -> object:
    """amqtt on loopback: MQTT 3.1.1 only, enough for a demo or a single small plant."""
    from amqtt.broker import Broker

    # amqtt narrates at INFO and warns of every PUBACK that comes after its 5-second wait (ingest
    # and rules acknowledge once what a message caused is on disk, which a backlog delays)
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.ERROR)
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


def scratch_dir() -> Path:
    """A new folder for the demo's databases: in /dev/shm when the machine has it.

    The demo's data is scratch, and every SQLite commit there is synced to disk (the outbox,
    the store and the ledger are built to survive a power cut): in memory the month of history
    goes through several seconds sooner. About 10 MB, and 30 MB more an hour it runs.
    """
    shm = Path("/dev/shm")  # noqa: S108 - a private folder made by mkdtemp, not a fixed name
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="lingtan-demo-", dir=base))


def poll_interval(speed: float) -> float:
    """Simulated seconds between polls: a minute at speed 60, one wall second up to speed 300."""
    return min(300.0, max(1.0, speed))


@dataclass
class DemoResult:
    """What the demo did, for the summary line and the tests."""

    state: Path
    config: Path
    history_samples: int = 0
    history_s: float | None = None  # wall seconds until rules had accounted for the history
    full_view_s: float | None = None  # wall seconds until every figure of the view was there
    values: dict[str, float] = field(default_factory=dict)
    samples_stored: int = 0
    events: dict[str, int] = field(default_factory=dict)  # ledger events by kind
    alerts_fired: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0


class Demo:
    """The running demo: its services, the plant and the pieces of the view."""

    def __init__(  # noqa: PLR0917 - the demo's parts
        self,
        cfg: SiteConfig,
        state: Path,
        clock: SimClock,
        plant: Plant,
        meters: Meters,
        maps: dict[str, RegisterMap],
    ) -> None:
        self.cfg = cfg
        self.site = cfg.site
        self.state = state
        self.clock = clock
        self.plant = plant
        self.meters = meters
        self.quantize = quantizer(maps)
        self.ingest = IngestService(cfg.site, cfg.broker, cfg.ingest)
        # Alerts are attached once the history is accounted for (see attach_alerts), and
        # evaluated about every 30 simulated seconds (every wall second at speed 30 or less).
        every = max(0.1, min(1.0, 30 / clock.speed))
        self.rules = RulesService(cfg.site, cfg.broker, cfg.rules, alerts_every_s=every)
        # The agent opens the edge outbox, which the history fills first (and so sets where
        # each device's seq continues): it is made once the history is in.
        self.agent: SimClockAgent | None = None
        self.device_ids = [d.id for d in cfg.edge.devices] + [
            d.id for d in (cfg.edge.mqtt.devices if cfg.edge.mqtt is not None else [])
        ]
        self.status = "starting"
        self.started = time.monotonic()  # wall clock, for the figures of the summary
        self.history_total = 0
        self.history_sent = 0
        self.data_from_ms: int | None = None
        # the view's own read connections (SQLite WAL: readers never block the writers)
        self._ledger = Ledger(cfg.rules.ledger)
        factors = FactorLibrary.load(list(cfg.rules.factor_files))
        self._accounts = Accounts(Engine(cfg.site, cfg.rules, self._ledger, factors))
        self._alert_store: AlertStore | None = None
        self._gas: dict[str, tuple[int, float]] = {}  # the last (wall ms, m3) seen per meter
        self._gas_flow: dict[str, float] = {}
        self._slow: tuple[float, list[EventLine], int, list[HourFlow]] = (-1e9, [], 0, [])

    def attach_alerts(self) -> None:
        """Evaluate alerts from now on, on the simulated clock.

        RulesService builds its Alerts on the wall clock and takes no clock, so the demo hands
        it one built on the simulated clock.
        """
        alerts = Alerts(self.site, self.cfg.alerts, clock=self.clock.now_ms)
        alerts.start()
        self.rules.alerts = alerts

    def collect(self, result: DemoResult) -> None:
        """The figures, events and alerts at the end, into `result`."""
        f = self.rules.last_figures
        result.values = dict(f.values) if f is not None else {}
        result.samples_stored = self.ingest.stats.samples_stored
        for e in self._ledger.events(self.site.id):
            result.events[e.kind] = result.events.get(e.kind, 0) + 1
        if self.rules.alerts is not None:
            store = AlertStore(state_path(self.cfg.alerts, None))
            result.alerts_fired = sorted(
                {a.key for a in store.alerts().values() if a.fired_ms is not None}
            )
            store.close()

    def close(self) -> None:
        """Close the view's read connections."""
        self._ledger.close()
        if self._alert_store is not None:
            self._alert_store.close()

    # -- the view ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """What the view shows now."""
        f = self.rules.last_figures
        tz = self.site.timezone
        now = self.clock.now_ms()
        as_of = f.as_of_ms if f is not None else now
        fy = period_of(as_of, PeriodKind.FISCAL_YEAR, tz, self.cfg.rules.fiscal_year_start_month)
        events, events_total, hours = self._slow_parts(as_of)
        devices = []
        roles = {m.device: m.role for m in self.cfg.rules.meters}
        health = self.agent.health if self.agent is not None else {}
        # site power now, from the meters' latest readings: the grid meter's power is signed
        # (negative when exporting), so grid + generation is what the site uses
        power: float | None = None
        for m in self.cfg.rules.meters:
            h = health.get(m.device)
            if m.role in (Role.GRID_IMPORT, Role.GENERATION) and h is not None and h.online:
                p = h.last_values.get("active_power_kw")
                if p is not None:
                    power = (power or 0.0) + p
        for dev_id in self.device_ids:
            h = health.get(dev_id)
            if h is None:
                devices.append(DeviceRow(dev_id, None))
                continue
            p = h.last_values.get("active_power_kw")
            if p is not None and roles.get(dev_id) is Role.GRID_EXPORT:
                p = max(0.0, -p)  # the same meter: what flows out
            devices.append(DeviceRow(dev_id, h.online, p, h.last_error, self._flow(dev_id, h)))
        alerts, active = self._alerts()
        stored = self.ingest.stats.samples_stored
        if not self.clock.running:
            pipeline = (
                f"history: {self.history_sent:,} of {self.history_total:,} readings sent · "
                f"{self.rules.samples_applied:,} accounted · {stored:,} stored"
            )
        else:
            pipeline = (
                f"stored {stored:,} readings · rules {self.rules.samples_applied:,} · "
                f"edge outbox {self.agent.outbox.cached_depth if self.agent else 0:,}"
            )
            behind = (now - as_of) / 60_000
            if f is not None and behind > 5:  # e.g. a meter is silent: the figures wait for it
                pipeline += f" · figures {behind:,.0f} min behind the plant"
        return Snapshot(
            site=self.site,
            now_ms=now,
            speed=self.clock.speed,
            values=dict(f.values) if f is not None else {},
            pue=dict(f.pue_today) if f is not None else {},
            fy_label=fy.label,
            data_from_ms=self.data_from_ms,
            hours=hours,
            devices=devices,
            alerts=alerts,
            alerts_active=active,
            events=events,
            events_total=events_total,
            power_kw=power,
            status=self.status,
            pipeline=pipeline,
        )

    def _flow(self, device: str, h: DeviceHealth) -> str:
        """A gas meter's flow (m3/h) from its last two readings; "" for other meters."""
        volume = h.last_values.get("gas_volume_m3")
        if volume is None:
            return ""
        prev = self._gas.get(device)
        if prev is None or prev[0] != h.last_ts:
            if prev is not None and h.last_ts > prev[0]:
                hours = (h.last_ts - prev[0]) * self.clock.speed / HOUR_MS  # wall ms: sim hours
                self._gas_flow[device] = (volume - prev[1]) / hours
            self._gas[device] = (h.last_ts, volume)
        flow = self._gas_flow.get(device)
        return "" if flow is None else f"{flow:,.0f} m³/h"

    def _slow_parts(self, as_of: int) -> tuple[list[EventLine], int, list[HourFlow]]:
        """Ledger events and the last 24 hours: read at most once a second."""
        t, events, total, hours = self._slow
        if time.monotonic() - t < 1.0:
            return events, total, hours
        rows = self._ledger.events(self.site.id)
        events = sorted(
            (EventLine(e.ts, e.device, e.kind, e.detail) for e in rows if e.kind != "manual"),
            key=lambda e: -e.ts_ms,
        )
        end = as_of - as_of % HOUR_MS + HOUR_MS
        flows, _ = self._accounts.hours(end - 24 * HOUR_MS, end)
        hours = list(flows)
        self._slow = (time.monotonic(), events, len(events), hours)
        return events, len(events), hours

    def _alerts(self) -> tuple[list[AlertLine], int]:
        if self.rules.alerts is None:
            return [], 0
        if self._alert_store is None:
            self._alert_store = AlertStore(state_path(self.cfg.alerts, None))
        rows = self._alert_store.alerts().values()
        rules = {r.name: r for r in self.cfg.alerts.effective_rules}
        order = {"critical": 0, "warning": 1, "info": 2}
        out = []
        for a in rows:
            if a.state not in (State.FIRING, State.PENDING):
                continue
            rule = rules.get(a.rule)
            severity = str(rule.severity) if rule is not None else "warning"
            labels = ", ".join(v for _, v in a.labels)
            since = a.fired_ms if a.state is State.FIRING else a.pending_since_ms
            out.append(AlertLine(severity, a.rule, labels, a.state.value, since, a.summary))
        out.sort(key=lambda x: (x.state != "firing", order.get(x.severity, 3), -(x.since_ms or 0)))
        return out, sum(1 for a in out if a.state == "firing")

    def full(self) -> bool:
        """Every figure of the view is there: live figures, PUE, devices polled."""
        f = self.rules.last_figures
        if f is None or not self.clock.running:
            return False
        wanted = (
            "site_power_kw",
            "energy_today_kwh",
            "scope1_today_kgco2e",
            "scope2_location_today_kgco2e",
            "scope2_market_today_kgco2e",
            "renewable_share_today_ratio",
            "cfe_today_ratio",
            "target_on_track",
        )
        return (
            all(k in f.values for k in wanted)
            and bool(f.pue_today)
            and f.as_of_ms >= int(self.clock.start_s * 1000)
            and self.agent is not None
            and all(h.online is not None for h in self.agent.health.values())
        )


async def _prepare(
    demo: Demo, result: DemoResult, history_days: float, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """Send the history down the pipeline, then go live: the clock runs, the agent polls."""
    cfg, clock, plant = demo.cfg, demo.clock, demo.plant
    demo.status = f"generating {history_days:g} days of history"
    mqtt_devices = cfg.edge.mqtt.devices if cfg.edge.mqtt is not None else []
    readings = await asyncio.to_thread(
        history.generate,
        plant,
        demo.device_ids,
        clock.start_s,
        days=history_days,
        quantize=demo.quantize,
    )
    demo.history_total = result.history_samples = len(readings)
    demo.data_from_ms = min((r.ts_ms for r in readings), default=None)
    # ingest and rules must be subscribed before the backlog arrives
    for c in (demo.ingest.consumer, demo.rules.consumer):
        await asyncio.to_thread(c.wait_connected, 30)
    await asyncio.sleep(0.3)
    demo.status = "sending history"

    def progress(done: int, _total: int) -> None:
        demo.history_sent = done

    ahead = history.Ahead(lambda: min(demo.rules.samples_applied, demo.ingest.stats.samples_stored))

    outbox = cfg.edge.state_dir / "outbox.sqlite"
    giving_up = threading.Event()
    try:
        await asyncio.to_thread(
            history.load,
            readings,
            cfg.site.id,
            outbox,
            cfg.broker,
            progress=progress,
            room=ahead.room,
            stop=giving_up,
        )
    except asyncio.CancelledError:
        giving_up.set()  # the thread carries on until it sees this
        raise
    # Live once rules has accounted for the history; alerts from then on (during the history
    # every meter would look silent for weeks until its backlog arrived)
    demo.status = "accounting for the history"
    await until_accounted(lambda: demo.rules.samples_applied, demo.history_total)
    result.history_s = time.monotonic() - demo.started
    demo.attach_alerts()
    clock.start()
    demo.status = "live"
    demo.agent = SimClockAgent(cfg.site, cfg.broker, cfg.edge, clock=clock)
    tasks = [asyncio.create_task(demo.agent.run(stop), name="edge-agent")]
    poll_s = cfg.edge.devices[0].interval_s if cfg.edge.devices else 60.0
    for dev in mqtt_devices:
        gateway = gas_gateway(cfg, dev, plant, clock, poll_s)
        tasks.append(asyncio.create_task(gateway, name=f"gateway-{dev.id}"))
    return tasks


async def until_accounted(applied: Callable[[], int], total: int, stall_s: float = 60.0) -> None:
    """Wait until rules has accounted for `total` history Samples; TimeoutError if it stalls."""
    last, since = -1, time.monotonic()
    while (n := applied()) < total:
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > stall_s:
            raise TimeoutError(
                f"rules accounted for {n} of the {total} history Samples and for no more in "
                f"{stall_s:g} s. The embedded broker drops a message whose PUBACK takes longer "
                "than 5 s; on a machine this busy, run the demo on Mosquitto: "
                "lingtan demo --broker mqtt://127.0.0.1:1883"
            )
        await asyncio.sleep(0.05)


async def run_demo(
    *,
    duration: float | None,
    broker_url: str | None,
    protocol: str,
    state_dir: Path | None,
    console: Console,
    speed: float = 60.0,
    history_days: float = 30.0,
    refresh_s: float = 0.5,
    on_snapshot: Callable[[Snapshot], None] | None = None,
) -> DemoResult:
    """Run the plant until `duration` wall seconds pass, Ctrl-C, or the task is cancelled.

    `on_snapshot` sees every frame of the view as data (tests, recordings).
    """
    wall0, cpu0 = time.monotonic(), time.process_time()
    state = state_dir or scratch_dir()
    state.mkdir(parents=True, exist_ok=True)
    base = demo_config.template()
    site = SiteInfo.model_validate(base["site"])
    # Plant time starts now (site time) and stands still while the history goes in.
    clock = SimClock(float(int(time.time())), speed)
    plant = Plant(load_plant(), site.timezone, clock.start_s - history_days * DAY_S)
    embedded = None
    if broker_url is None:
        port = free_port()
        embedded = await start_embedded_broker(port)
        broker = BrokerConfig(url=f"mqtt://127.0.0.1:{port}", protocol="3.1.1")
    else:
        broker = BrokerConfig(url=broker_url, protocol="5" if protocol == "5" else "3.1.1")
    maps = register_maps({d["id"]: d["profile"] for d in base["edge"]["devices"]})
    meters = await start_meters(plant, maps, clock)
    poll_s = poll_interval(speed)
    cfg, data = demo_config.effective(
        state, broker, meters.ports, poll_s=poll_s, wall_per_poll_s=poll_s / speed, base=base
    )
    result = DemoResult(state=state, config=state / "site.yaml")
    demo_config.save(
        result.config,
        data,
        "The config `lingtan demo` ran with (lingtan/demo_plant/site.yaml with the simulators'\n"
        "ports, the broker and this folder). Meters are simulated; the data is made up.",
    )
    console.print(
        f"[dim]state and config in {state}; broker {broker.url} (MQTT {broker.protocol}); "
        f"{len(meters.servers)} Modbus meters and an MQTT gateway on 127.0.0.1[/]",
        soft_wrap=True,
    )
    demo = Demo(cfg, state, clock, plant, meters, maps)
    demo.started = wall0
    stop_threads = threading.Event()
    # daemons: whatever happens to this coroutine, they never keep the process alive (they
    # acknowledge only what is on disk; cut off, the broker still holds the rest)
    threads = [
        threading.Thread(target=demo.ingest.run, args=(stop_threads,), name="ingest", daemon=True),
        threading.Thread(target=demo.rules.run, args=(stop_threads,), name="rules", daemon=True),
    ]
    for t in threads:
        t.start()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await _show(
            demo, result, console, (duration, refresh_s, history_days), stop, tasks, on_snapshot
        )
    finally:
        stop.set()
        try:
            # the edge agent stops on `stop`, handing its last readings to the broker first
            for task in tasks:
                if task.get_name() != "edge-agent":
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            demo.collect(result)
        finally:
            stop_threads.set()
            for t in threads:
                await asyncio.to_thread(t.join, 10)
            demo.close()
            await meters.stop()
            if embedded is not None:
                with contextlib.suppress(Exception):
                    await embedded.shutdown()  # type: ignore[attr-defined]
        result.cpu_s = time.process_time() - cpu0
        result.wall_s = time.monotonic() - wall0
    return result


async def _show(  # noqa: PLR0917 - the demo's settings, passed along
    demo: Demo,
    result: DemoResult,
    console: Console,
    timing: tuple[float | None, float, float],
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
    on_snapshot: Callable[[Snapshot], None] | None,
) -> None:
    """The live view until the end; the tasks it starts go into `tasks` (for the caller to stop)."""
    duration, refresh_s, history_days = timing

    def frame() -> RenderableType:
        snap = demo.snapshot()
        if on_snapshot is not None:
            on_snapshot(snap)
        return render(snap, console.width)

    wall0 = demo.started
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    started = False
    preparing = asyncio.create_task(_prepare(demo, result, history_days, stop), name="prepare")
    # Ctrl-C ends the demo cleanly, with its summary
    interrupted = asyncio.Event()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, interrupted.set)
            handled.append(sig)
    try:
        with Live(
            frame(),
            console=console,
            auto_refresh=False,
            transient=False,
            vertical_overflow="crop",
        ) as live:
            while not interrupted.is_set() and (deadline is None or loop.time() < deadline):
                if preparing.done() and not started:
                    started = True
                    tasks.extend(preparing.result())  # raises what went wrong, if it did
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        task.result()  # surface a crash
                if result.full_view_s is None and demo.full():
                    result.full_view_s = time.monotonic() - wall0
                live.update(frame(), refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(interrupted.wait(), refresh_s)
            live.update(frame(), refresh=True)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        if not preparing.done():
            preparing.cancel()
            await asyncio.wait({preparing})  # what it raised is moot now; our own cancel is not
        elif not started and not preparing.cancelled() and preparing.exception() is None:
            tasks.extend(preparing.result())


def summary(r: DemoResult) -> str:
    """What the demo did, in a few lines for the terminal."""
    v = r.values

    def t(key: str) -> str:
        return f"{v[key] / 1000:,.2f} t" if key in v else "-"

    lines = [
        f"demo finished after {r.wall_s:,.0f} s (CPU {r.cpu_s:,.0f} s): "
        f"{r.samples_stored:,} readings stored",
    ]
    if r.history_s is not None:
        lines.append(
            f"history: {r.history_samples:,} readings accounted {r.history_s:,.1f} s after start"
            + ("" if r.full_view_s is None else f"; every figure shown after {r.full_view_s:.1f} s")
        )
    if "energy_today_kwh" in v:
        share = v.get("renewable_share_today_ratio")
        lines.append(
            f"today: {v['energy_today_kwh']:,.0f} kWh; Scope 1 {t('scope1_today_kgco2e')}; "
            f"Scope 2 {t('scope2_location_today_kgco2e')} location-based, "
            f"{t('scope2_market_today_kgco2e')} market-based"
            + ("" if share is None else f"; renewable {share * 100:.1f} %")
        )
    if r.events:
        lines.append("ledger events: " + ", ".join(f"{k} {n}" for k, n in sorted(r.events.items())))
    if r.alerts_fired:
        lines.append("alerts fired: " + ", ".join(r.alerts_fired))
    lines.append(f"config and data: {r.config}")
    return "\n".join(lines)
