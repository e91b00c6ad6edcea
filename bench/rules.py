"""Rules engine throughput (replay), against the bare arithmetic measured in the same run.

Samples of --meters grid meters, --values values each (the counter and the rest of a meter's
quantities, as a real SDM630 sends them), one reading per meter per second, replayed through
the engine into a SQLite ledger (WAL, synchronous=FULL, one transaction per 10,000 Samples).
Baseline: the same deltas split over 15-minute intervals into a dict, in plain Python, with no
ledger: the floor for any engine that keeps the arithmetic. Target: >= 500,000 values/s.

Live: `lingtan rules` against a real Mosquitto, --meters meters publishing at 1 Hz for
--live-seconds; for every derived figure published, how long the oldest reading it newly
includes had waited (sample time -> derived published): p50 and p99. Target: p99 < 1 s.

Live period figures: with --history-days of 15-minute readings of --history-meters meters in
the ledger, the today / month / fiscal-year figures `lingtan rules` publishes, recomputed after a
reading of today (rules/live.py: per-day totals cached), against a report of the same fiscal
year straight from the ledger (rules/accounts.py), the way without the cache.

    python bench/rules.py [--meters 200] [--seconds 300] [--values 40] [--live-seconds 20]
                          [--history-days 180] [--history-meters 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from rules.config import MeterConfig, Role, RulesConfig
from rules.energy import split
from rules.engine import Engine
from rules.factors import FactorLibrary
from rules.ledger import Ledger
from rules.replay import replay
from telemetry.config import SiteInfo
from telemetry.quantities import vocabulary
from telemetry.sample import Sample
from telemetry.timeutil import QUARTER_HOUR_MS

T0 = 1_764_000_000_000


def _samples(meters: int, seconds: int, values: int) -> list[Sample]:
    others = [q for q in vocabulary().names() if q != "energy_import_kwh"][: values - 1]
    out = []
    for t in range(seconds):
        for m in range(meters):
            v = {q: 1.0 + i for i, q in enumerate(others)}
            v["energy_import_kwh"] = 1000.0 + t * (0.1 + m / 1000)
            out.append(Sample(site="b1", device=f"m{m}", seq=t, ts=T0 + t * 1000, values=v))
    return out


def bare(samples: list[Sample]) -> float:
    """Seconds for the arithmetic alone: deltas split into a dict of intervals."""
    start = time.process_time()
    last: dict[str, tuple[int, float]] = {}
    book: defaultdict[tuple[str, int], float] = defaultdict(float)
    for s in sorted(samples, key=lambda s: (s.ts, s.device, s.seq)):
        value = s.values["energy_import_kwh"]
        prev = last.get(s.device)
        if prev is not None and value >= prev[1]:
            for bucket, share in split(prev[0], s.ts, value - prev[1], QUARTER_HOUR_MS):
                book[(s.device, bucket)] += share
        last[s.device] = (s.ts, value)
    return time.process_time() - start


def engine(samples: list[Sample], meters: int) -> float:
    """CPU seconds of this process to replay through the engine into a ledger."""
    cfg = RulesConfig(
        meters=[MeterConfig(device=f"m{m}", role=Role.GRID_IMPORT, max_power_kw=10_000)
                for m in range(meters)])
    with tempfile.TemporaryDirectory() as tmp:
        e = Engine(SiteInfo(id="b1", region="CN", timezone="Asia/Shanghai"), cfg,
                   Ledger(Path(tmp) / "ledger.sqlite"), FactorLibrary.load())
        start = time.process_time()
        replay(e, samples)
        return time.process_time() - start


def live(meters: int, seconds: float) -> list[int]:
    """Publish-lag samples (ms) of the rules service under `meters` meters at 1 Hz."""
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from rules.service import RulesService
    from telemetry.config import BrokerConfig
    from telemetry.sample import encode
    from telemetry.timeutil import now_ms
    from tests.servers import mosquitto

    cfg_meters = [MeterConfig(device=f"m{m}", role=Role.GRID_IMPORT) for m in range(meters)]
    with tempfile.TemporaryDirectory() as tmp, mosquitto(Path(tmp)) as server:
        broker = BrokerConfig(url=f"mqtt://127.0.0.1:{server.port}")
        cfg = RulesConfig(client_id="bench-rules", ledger=Path(tmp) / "ledger.sqlite",
                          meters=cfg_meters)
        svc = RulesService(SiteInfo(id="b1", region="CN", timezone="Asia/Shanghai"), broker, cfg)
        stop = threading.Event()
        t = threading.Thread(target=svc.run, args=(stop,))
        t.start()
        svc.consumer.wait_connected(10)
        pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-meters",
                          protocol=paho.MQTTv5)
        pub.connect("127.0.0.1", server.port)
        pub.loop_start()
        start = time.monotonic()
        for tick in range(int(seconds)):
            for m in range(meters):
                s = Sample(site="b1", device=f"m{m}", seq=tick, ts=now_ms(),
                           values={"energy_import_kwh": 1000.0 + tick * 0.1})
                pub.publish(f"lingtan/v1/b1/m{m}/sample", encode(s), qos=1)
            time.sleep(max(0.0, start + tick + 1 - time.monotonic()))
        time.sleep(2)
        stop.set()
        t.join()
        pub.disconnect()
        pub.loop_stop()
        return sorted(svc.publish_lag_ms)


def figures(days: int, meters: int) -> tuple[float, float, float]:
    """Seconds for: the fiscal year's report from the ledger; live figures cold; warm."""
    from rules.accounts import Accounts
    from rules.live import Live

    cfg = RulesConfig(
        fiscal_year_start_month=1,
        meters=[MeterConfig(device="grid", role=Role.GRID_IMPORT)]
        + [MeterConfig(device=f"line{m}", role=Role.SUBMETER, area=f"a{m % 4}")
           for m in range(meters - 1)])
    t0 = T0 - T0 % 86_400_000 - days * 86_400_000
    samples = [
        Sample(site="b1", device=m.device, seq=i, ts=t0 + i * QUARTER_HOUR_MS,
               values={"energy_import_kwh": 10.0 * i})
        for i in range(days * 96 + 1)
        for m in cfg.meters
    ]
    with tempfile.TemporaryDirectory() as tmp:
        e = Engine(SiteInfo(id="b1", region="CN", timezone="UTC"), cfg,
                   Ledger(Path(tmp) / "ledger.sqlite"), FactorLibrary.load())
        replay(e, samples[: -len(cfg.meters)])
        e.touched_from = None
        acc = Accounts(e)
        now = samples[-1].ts
        start = time.perf_counter()
        acc.period(now - days * 86_400_000, now)
        report = time.perf_counter() - start
        live = Live(acc)
        start = time.perf_counter()
        live.figures(now - QUARTER_HOUR_MS)
        cold = time.perf_counter() - start
        replay(e, samples[-len(cfg.meters):])  # a new reading of today
        assert e.touched_from is not None
        live.invalidate(e.touched_from)
        start = time.perf_counter()
        live.figures(now)
        warm = time.perf_counter() - start
        return report, cold, warm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meters", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--values", type=int, default=40)
    ap.add_argument("--live-seconds", type=float, default=20)
    ap.add_argument("--history-days", type=int, default=180)
    ap.add_argument("--history-meters", type=int, default=20)
    args = ap.parse_args()
    samples = _samples(args.meters, args.seconds, args.values)
    n_values = len(samples) * args.values
    b = bare(samples)
    e = engine(samples, args.meters)
    print(f"rules: {len(samples):,} Samples x {args.values} values, {args.meters} meters at 1 Hz "
          f"(values/s of one core)")
    print(f"  bare arithmetic (no ledger)   {n_values / b:>12,.0f}")
    print(f"  engine -> SQLite ledger       {n_values / e:>12,.0f}   {b / e:.2f}x of bare")
    print("target: >= 500,000 values/s on one core")
    lags = live(args.meters, args.live_seconds)

    def pct(p: float) -> int:
        return lags[min(len(lags) - 1, int(p * len(lags)))]

    print(f"live: {args.meters} meters at 1 Hz for {args.live_seconds:.0f} s, {len(lags)} derived "
          f"figures: sample -> derived published p50 {pct(0.5)} ms, p99 {pct(0.99)} ms "
          f"(target p99 < 1000 ms)")
    report, cold, warm = figures(args.history_days, args.history_meters)
    print(f"live figures, {args.history_days} days x {args.history_meters} meters in the ledger: "
          f"after a reading {warm * 1000:,.0f} ms (cold {cold * 1000:,.0f} ms) vs the year's "
          f"report from the ledger {report * 1000:,.0f} ms: {report / warm:.0f}x "
          f"(target: within the 0.5 s republish)")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "rules.json").write_text(json.dumps({
        "samples": len(samples), "values_per_sample": args.values, "meters": args.meters,
        "values_per_s": {"bare": n_values / b, "engine": n_values / e},
        "live_ms": {"p50": pct(0.5), "p99": pct(0.99), "published": len(lags)},
        "live_figures_ms": {"after_reading": warm * 1000, "cold": cold * 1000,
                            "report_from_ledger": report * 1000,
                            "history_days": args.history_days,
                            "history_meters": args.history_meters}}, indent=2))


if __name__ == "__main__":
    main()
