"""SunSpec discovery against a pymodbus server holding a hand-built SunSpec map.

Addresses are worked out here from the SunSpec model layouts (common model 1 with L=66,
inverter model 103 with L=50, meter model 203 with L=105), not from lingtan's code.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from collectors.config import TcpTransport
from collectors.modbus import ModbusReader, ReadError, read_once, resolve
from collectors.profile import load_profile


def _s16(v: int) -> int:
    return v & 0xFFFF


def _text(s: str, regs: int) -> list[int]:
    raw = s.encode().ljust(regs * 2, b"\0")
    return [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]


def inverter_image() -> dict[int, int]:
    img: dict[int, int] = {40000: 0x5375, 40001: 0x6E53}             # "SunS"
    img |= {40002: 1, 40003: 66}                                        # common model
    img |= dict(enumerate(_text("Fronius", 16), 40004))                # Mn
    img |= dict(enumerate(_text("Symo 10.0-3-M", 16), 40020))          # Md
    img |= dict(enumerate(_text("31234567", 16), 40052))               # SN
    img |= {40070: 103, 40071: 50}                                      # three-phase inverter
    img |= {40073: 1234, 40074: 1200, 40075: 1250, 40076: _s16(-2)}     # AphA..C, A_SF
    img |= {40077: 3990, 40078: 4000, 40079: 3985}                      # PPVphAB..CA
    img |= {40080: 2305, 40081: 2310, 40082: 2295, 40083: _s16(-1)}     # PhVphA..C, V_SF
    img |= {40084: 4321, 40085: 1}                                      # W, W_SF
    img |= {40086: 5002, 40087: _s16(-2)}                               # Hz, Hz_SF
    img |= {40088: 4400, 40089: 1}                                      # VA, VA_SF
    img |= {40090: 0x8000, 40091: 0}                                    # VAr not implemented
    img |= {40092: _s16(-95), 40093: 0}                                 # PF (percent), PF_SF
    img |= {40094: 123456789 >> 16, 40095: 123456789 & 0xFFFF, 40096: 0}  # WH acc32, WH_SF
    img |= {40097: 0xFFFF, 40098: 0}                                    # DCA not implemented
    img |= {40099: 6500, 40100: _s16(-1), 40101: 4450, 40102: 1}        # DCV, DCW
    img |= {40103: 452, 40107: _s16(-1)}                                # TmpCab, Tmp_SF
    img |= {40122: 0xFFFF, 40123: 0}                                    # end
    return img


INVERTER_VALUES = {
    "current_l1_a": 12.34, "current_l2_a": 12.0, "current_l3_a": 12.5,
    "voltage_l1_l2_v": 399.0, "voltage_l2_l3_v": 400.0, "voltage_l3_l1_v": 398.5,
    "voltage_l1_v": 230.5, "voltage_l2_v": 231.0, "voltage_l3_v": 229.5,
    "active_power_kw": 43.21, "frequency_hz": 50.02, "apparent_power_kva": 44.0,
    "power_factor": -0.95, "energy_export_kwh": 123456.789, "dc_voltage_v": 650.0,
    "dc_power_kw": 44.5, "temperature_c": 45.2,
}


def meter_image() -> dict[int, int]:
    img: dict[int, int] = {0: 0x5375, 1: 0x6E53, 2: 203, 3: 105}         # "SunS" at 0, model 203
    img |= dict.fromkeys(range(4, 108), 0x8000)                          # not implemented...
    img |= {5: 100, 6: 101, 7: 102, 8: _s16(-1)}                         # AphA..C, A_SF
    img |= {10: 2300, 11: 2310, 12: 2320, 17: _s16(-1)}                  # PhVphA..C, V_SF
    img |= {18: 4999, 19: _s16(-2)}                                       # Hz, Hz_SF
    img |= {20: _s16(-1500), 21: _s16(-500), 22: _s16(-500), 23: _s16(-500), 24: 0}  # W, WphA..C
    img |= {40: 0, 41: 5000, 48: 0x0001, 49: 0x86A0, 56: 0}             # TotWhExp, TotWhImp, SF
    img |= {42: 0, 43: 0, 50: 0, 51: 0}                                 # per-phase acc32: 0 = n/i
    img |= {110: 0xFFFF, 111: 0}                                         # end (2 + 2 + 105 = 109)
    return img


METER_VALUES = {
    "current_l1_a": 10.0, "current_l2_a": 10.1, "current_l3_a": 10.2,
    "voltage_l1_v": 230.0, "voltage_l2_v": 231.0, "voltage_l3_v": 232.0,
    "frequency_hz": 49.99, "active_power_kw": -1.5, "active_power_l1_kw": -0.5,
    "active_power_l2_kw": -0.5, "active_power_l3_kw": -0.5,
    "energy_export_kwh": 5.0, "energy_import_kwh": 100.0,
}


@asynccontextmanager
async def serve(image: dict[int, int], unit: int = 1) -> AsyncIterator[int]:
    lo, hi = min(image), max(image)
    values = [image.get(a, 0) for a in range(lo, hi + 1)]
    server = ModbusTcpServer(
        SimDevice(id=unit, simdata=SimData(address=lo, values=values,
                                           datatype=SimType.REGISTERS)),
        address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    try:
        yield int(server.transport.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def test_an_inverter_is_discovered_at_40000_and_read_with_its_scale_factors() -> None:
    async with serve(inverter_image()) as port:
        reader = ModbusReader(TcpTransport(host="127.0.0.1", port=port), timeout_s=2)
        try:
            fixed = await resolve(reader, 1, load_profile("sunspec"))
            values = fixed.decode(await reader.read(1, fixed.plan()))
        finally:
            reader.close()
    assert values == pytest.approx(INVERTER_VALUES)
    by_q = {r.quantity: r.address for r in fixed.registers}
    assert by_q["active_power_kw"] == 40084
    assert by_q["energy_export_kwh"] == 40094
    assert fixed.model == "SunSpec models 103"
    # the whole inverter model is read in one request
    assert [(r.address, r.count) for r in fixed.plan()] == [(40073, 35)]


async def test_a_meter_at_base_0_with_negative_power() -> None:
    async with serve(meter_image()) as port:
        values = await read_once(TcpTransport(host="127.0.0.1", port=port), 1,
                                 load_profile("sunspec"), 2)
    assert values == pytest.approx(METER_VALUES)


async def test_a_device_without_sunspec_is_a_clear_error() -> None:
    async with serve({0: 1, 1: 2, 40000: 3, 40001: 4}) as port:
        reader = ModbusReader(TcpTransport(host="127.0.0.1", port=port), timeout_s=1)
        try:
            with pytest.raises(ReadError, match=r"no SunSpec marker at 40000, 0, 50000"):
                await resolve(reader, 1, load_profile("sunspec"))
        finally:
            reader.close()


async def test_lingtan_poll_on_a_sunspec_inverter() -> None:
    async with serve(inverter_image(), unit=3) as port:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lingtan", "poll", "--profile", "sunspec", "--host",
            "127.0.0.1", "--port", str(port), "--unit", "3",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, errs = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, errs.decode()
    assert json.loads(out)["values"] == pytest.approx(INVERTER_VALUES)
