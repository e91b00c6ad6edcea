"""A meter's registers to a Scope 2 figure, through real servers and separate processes.

pymodbus server (simulated SDM630) → `lingtan edge` → Mosquitto → `lingtan ingest` →
VictoriaMetrics (InfluxDB line protocol at /api/v2/write) and the embedded SQLite store;
Mosquitto → `lingtan rules` → ledger → derived Sample → ingest.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from collectors.profile import register_map
from ingest.sqlite_store import SqliteStore
from lingtan.simulator import Served, SimulatedMeter
from rules.ledger import Ledger
from tests.servers import Server, VictoriaMetrics, until

pytestmark = pytest.mark.integration

# Hubei's 2023 provincial average grid emission factor, 0.4044 kgCO2/kWh: MEE & NBS,
# 《关于发布2023年电力二氧化碳排放因子的公告》 (公告2025年第47号, 表3), the newest vintage for a
# site in CN-HB. Written here independently of rules/factors so the test checks the data file.
CN_HB_2023_KG_PER_KWH = 0.4044

SITE = "plant-it"
POLLS = 12

# Register map of the SDM630 as the test knows it (input registers, float32, high word first).
EXPECTED_MAP = {"voltage_l1_v": 0x00, "voltage_l2_v": 0x02, "voltage_l3_v": 0x04,
                "current_l1_a": 0x06, "current_l2_a": 0x08, "current_l3_a": 0x0A,
                "active_power_kw": 0x34, "power_factor": 0x3E, "frequency_hz": 0x46,
                "energy_import_kwh": 0x48, "energy_export_kwh": 0x4A}


class Script:
    """Values that change on every read, in steps the test can follow."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, _t: float) -> dict[str, float]:
        self.n += 1
        n = self.n
        return {"voltage_l1_v": 230.0 + n / 10, "voltage_l2_v": 231.0, "voltage_l3_v": 229.0,
                "current_l1_a": 100.0 + n, "current_l2_a": 101.0, "current_l3_a": 99.0,
                "active_power_kw": 800.0 + n * 1.25, "power_factor": 0.95, "frequency_hz": 50.0,
                "energy_import_kwh": 20_000.0 + n * 0.75 + n * n * 0.125,
                "energy_export_kwh": 0.0}


def decode_served(served: Served) -> dict[str, float]:
    """What the registers said, decoded here with struct, not with lingtan's decoder."""
    assert (served.function_code, served.address) == (4, 0)
    out = {}
    for q, addr in EXPECTED_MAP.items():
        (v,) = struct.unpack(">f", struct.pack(">2H", *served.words[addr:addr + 2]))
        out[q] = v / 1000 if q == "active_power_kw" else v  # the meter serves W
    return out


def config(tmp: Path, mqtt_port: int, vm: VictoriaMetrics, meter_port: int) -> Path:
    path = tmp / "site.yaml"
    path.write_text(f"""
site: {{id: {SITE}, timezone: Asia/Shanghai, region: CN-HB}}
broker: {{url: "mqtt://127.0.0.1:{mqtt_port}", protocol: "5"}}
edge:
  agent_id: edge-it
  state_dir: state/edge
  health_interval_s: 1  # health Samples interleave with the polls in every run
  devices:
    - id: grid-main
      profile: eastron-sdm630
      transport: {{host: 127.0.0.1, port: {meter_port}}}
      interval_s: 0.25
      timeout_s: 1
ingest:
  client_id: it-ingest
  batch_wait_s: 0.2
  sqlite: {{path: state/lingtan.sqlite}}
  influxdb: {{url: "{vm.url}", org: it, bucket: it, token_env: IT_INFLUX_TOKEN}}
rules:
  client_id: it-rules
  ledger: state/ledger.sqlite
  derived_every_s: 0.5
  batch_wait_s: 0.2
  meters: [{{device: grid-main, role: grid_import}}]
""")
    return path


def spawn(command: str, cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "IT_INFLUX_TOKEN": "it-token"}
    return subprocess.Popen([sys.executable, "-m", "lingtan", "--log-level", "info", command,
                             "-c", str(cfg)], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env=env)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.fixture
def meter() -> SimulatedMeter:
    return SimulatedMeter(register_map("eastron-sdm630"), Script())


async def test_meter_registers_to_stored_values_and_scope2(
        tmp_path: Path, mosquitto: Server, victoria: VictoriaMetrics,
        meter: SimulatedMeter) -> None:
    meter_port = await meter.start()
    cfg = config(tmp_path, mosquitto.port, victoria, meter_port)
    logs = {name: tmp_path / f"{name}.log" for name in ("ingest", "rules", "edge")}
    ingest = spawn("ingest", cfg, logs["ingest"])
    rules = spawn("rules", cfg, logs["rules"])
    store_path = tmp_path / "state" / "lingtan.sqlite"
    await until(lambda: store_path.exists() and (tmp_path / "state/ledger.sqlite").exists(),
                   30, "ingest and rules to start")
    await asyncio.sleep(1.0)  # let both subscribe before the first Sample
    edge = spawn("edge", cfg, logs["edge"])
    try:
        await until(lambda: len(meter.served) >= POLLS, 60, f"{POLLS} polls of the meter")
        assert stop(edge) == 0, logs["edge"].read_text()
        served = [decode_served(s) for s in meter.served]
        store = SqliteStore(store_path)
        # every poll of the meter, by its own series (the edge's and ingest's health Samples
        # and the derived figures are stored beside them and must not stand in for one)
        await until(lambda: len(store.query(SITE, "grid-main", "voltage_l1_v")) >= len(served)
                    and store.latest(SITE, "site-15m", "grid_import_kwh") is not None, 30,
                    "every poll and a derived figure to be stored")
        await asyncio.sleep(1.5)  # rules' last derived figure of the open interval
    finally:
        codes = [stop(p) for p in (ingest, rules)]
        await meter.stop()
    assert codes == [0, 0], [logs[n].read_text()[-3000:] for n in ("ingest", "rules")]

    # 1. the embedded store holds every poll, value for value, in order. The edge's health
    # Sample about the meter (every second here) takes a seq of the same device, so the
    # polls' seqs and the health Samples' seqs together are 0, 1, 2, … with none missing.
    health_seqs = [seq for _, seq, _ in store.query(SITE, "grid-main", "poll_ok_count")]
    poll_seqs = [seq for _, seq, _ in store.query(SITE, "grid-main", "voltage_l1_v")]
    assert len(poll_seqs) == len(served)
    assert health_seqs
    assert sorted(poll_seqs + health_seqs) == list(range(len(poll_seqs) + len(health_seqs)))
    for q in EXPECTED_MAP:
        rows = store.query(SITE, "grid-main", q)
        assert [seq for _, seq, _ in rows] == poll_seqs, q
        assert [v for _, _, v in rows] == pytest.approx([s[q] for s in served], rel=1e-6), q

    # 2. VictoriaMetrics got the same through the influxdb-client write path
    series = victoria.export(f'{{__name__=~"meter_.*",site="{SITE}",device="grid-main"}}')
    by_name = {s["metric"]["__name__"]: s for s in series}  # type: ignore[index]
    for q in EXPECTED_MAP:
        got = by_name[f"meter_{q}"]
        assert got["values"] == pytest.approx([s[q] for s in served], rel=1e-6), q
    seq_series = by_name["meter_seq"]["values"]
    assert sorted(seq_series) == sorted(poll_seqs + health_seqs)  # type: ignore[arg-type]

    # 3. the ledger's energy is the counter difference, its Scope 2 the factor times that
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite")
    energy = served[-1]["energy_import_kwh"] - served[0]["energy_import_kwh"]
    intervals = ledger.site_intervals(SITE)
    assert sum(i.grid_import_kwh for i in intervals) == pytest.approx(energy, rel=1e-9)
    assert sum(i.scope2_location_kgco2e for i in intervals) == pytest.approx(
        energy * CN_HB_2023_KG_PER_KWH, rel=1e-9)
    assert {i.grid_factor_id for i in intervals} == {"cn-mee-2023-grid-province-hubei"}
    assert ledger.events(SITE) == []

    # 4. the derived figure reached the stores: its latest revision equals the ledger
    last = intervals[-1]
    derived = store.query(SITE, "site-15m", "scope2_location_kgco2e")
    assert derived, "no derived Sample was stored"
    assert derived[-1][0] == last.start_ms
    assert derived[-1][2] == pytest.approx(last.scope2_location_kgco2e, rel=1e-9)
    # InfluxDB keeps the last write of a point; VictoriaMetrics keeps every revision at that
    # timestamp. The running figure only grows within an interval, so the latest is the largest.
    [vm_derived] = victoria.export('{__name__="derived_scope2_location_kgco2e"}')
    revisions = [v for t, v in zip(vm_derived["timestamps"], vm_derived["values"],  # type: ignore[call-overload]
                                   strict=True) if t == last.start_ms]
    assert max(revisions) == pytest.approx(last.scope2_location_kgco2e, rel=1e-9)

    # 5. the collectors only ever read
    assert set(meter.function_codes) == {4}
    print(f"checked {len(served)} polls x {len(EXPECTED_MAP)} values in SQLite and "
          f"VictoriaMetrics; {energy:.4f} kWh -> {energy * CN_HB_2023_KG_PER_KWH:.4f} kg CO2")
