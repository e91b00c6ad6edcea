"""Reading a real pymodbus server: values as served, and only read function codes on the wire."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collectors.config import TcpTransport
from collectors.modbus import ModbusReader, ReadError, read_once
from collectors.profile import register_map
from lingtan.simulator import SimulatedMeter
from tests.collectors.misbehaving import BadDevice
from tests.servers import free_port

# 0.96 is not exact in float32: it comes back as the shortest decimal of the same float32
READINGS = {"active_power_kw": 812.5, "power_factor": 0.96, "frequency_hz": 50.02,
            "voltage_l1_v": 230.5, "voltage_l2_v": 231.0, "voltage_l3_v": 229.5,
            "current_l1_a": 1225.0, "current_l2_a": 1240.25, "current_l3_a": 1210.75,
            "energy_import_kwh": 48210.5, "energy_export_kwh": 0.0}


async def _lingtan_poll(*args: str) -> bytes:
    """`lingtan poll ARGS` in its own process; its stdout, after it exited 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lingtan", "poll", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    out, errs = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, errs.decode()
    return out


async def test_poll_decodes_what_the_meter_serves() -> None:
    profile = register_map("eastron-sdm630")
    meter = SimulatedMeter(profile, lambda _t: dict(READINGS))
    port = await meter.start()
    reader = ModbusReader(TcpTransport(host="127.0.0.1", port=port), timeout_s=2)
    try:
        values = profile.decode(await reader.read(1, profile.plan()))
    finally:
        reader.close()
        await meter.stop()
    # all values above are exact in float32
    assert values == READINGS
    # the SDM630 map is read in one request of 76 registers
    assert [(s.function_code, s.address, len(s.words)) for s in meter.served] == [(4, 0, 76)]


async def test_collectors_send_only_read_function_codes() -> None:
    profile = register_map("eastron-sdm630")
    meter = SimulatedMeter(profile, lambda _t: dict(READINGS))
    port = await meter.start()
    reader = ModbusReader(TcpTransport(host="127.0.0.1", port=port), timeout_s=2)
    try:
        for _ in range(3):
            await reader.read(1, profile.plan())
    finally:
        reader.close()
        await meter.stop()
    assert meter.function_codes == [4, 4, 4]
    assert set(meter.function_codes) <= {1, 2, 3, 4, 43}


async def test_a_dead_device_is_a_read_error_not_a_hang() -> None:
    profile = register_map("eastron-sdm630")
    reader = ModbusReader(TcpTransport(host="127.0.0.1", port=free_port()), timeout_s=0.5)
    with pytest.raises(ReadError, match=r"cannot connect to tcp://127.0.0.1:\d+"):
        await asyncio.wait_for(reader.read(1, profile.plan()), 5)
    # and the next poll does not hammer it: the reconnect waits a jittered backoff
    with pytest.raises(ReadError, match=r"not connected; next attempt in"):
        await asyncio.wait_for(reader.read(1, profile.plan()), 5)
    reader.close()


async def test_lingtan_poll_prints_decoded_values(tmp_path: Path) -> None:
    meter = SimulatedMeter(register_map("eastron-sdm630"), lambda _t: dict(READINGS))
    port = await meter.start()
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"""
site: {{id: plant-a, timezone: Asia/Shanghai}}
edge:
  devices:
    - id: grid-main
      profile: eastron-sdm630
      transport: {{host: 127.0.0.1, port: {port}}}
""")
    try:
        out = await _lingtan_poll("-c", str(cfg), "--device", "grid-main")
    finally:
        await meter.stop()
    body = json.loads(out)
    assert body["device"] == "grid-main"
    assert body["values"] == READINGS


async def test_rtu_over_tcp_gateway() -> None:
    profile = register_map("eastron-sdm630")
    meter = SimulatedMeter(profile, lambda _t: dict(READINGS), unit_id=7, rtu_over_tcp=True)
    port = await meter.start()
    try:
        t = TcpTransport(type="rtu-over-tcp", host="127.0.0.1", port=port)
        assert await read_once(t, 7, profile, 2) == READINGS
    finally:
        await meter.stop()


@pytest.mark.parametrize(("mode", "expected"), [("hang", "failed"), ("garbage", "failed")])
async def test_hanging_and_garbage_devices_are_read_errors(mode: str, expected: str) -> None:
    bad = BadDevice(mode)
    port = await bad.start()
    reader = ModbusReader(TcpTransport(host="127.0.0.1", port=port), timeout_s=0.3)
    try:
        with pytest.raises(ReadError, match=expected):
            await asyncio.wait_for(reader.read(1, register_map("eastron-sdm630").plan()), 5)
    finally:
        reader.close()
        await bad.stop()
    assert bad.requests >= 1


async def test_an_exception_answer_is_a_read_error() -> None:
    profile = register_map("eastron-sdm630")
    meter = SimulatedMeter(profile, lambda _t: dict(READINGS))
    port = await meter.start()
    reader = ModbusReader(TcpTransport(host="127.0.0.1", port=port), timeout_s=1)
    try:
        # holding registers are not defined in the simulated map beyond its size
        from collectors.profile import Read
        with pytest.raises(ReadError, match="answered exception code 2"):
            await reader.read(1, [Read(3, 500, 2, ())])
    finally:
        reader.close()
        await meter.stop()


async def test_lingtan_poll_without_a_config() -> None:
    meter = SimulatedMeter(register_map("eastron-sdm630"), lambda _t: dict(READINGS), unit_id=3)
    port = await meter.start()
    try:
        out = await _lingtan_poll("--profile", "eastron-sdm630", "--host", "127.0.0.1",
                                  "--port", str(port), "--unit", "3")
    finally:
        await meter.stop()
    body = json.loads(out)
    assert (body["device"], body["values"]) == ("eastron-sdm630", READINGS)
    assert isinstance(body["ts"], int)


IDENTITY = {"vendor_name": "Eastron", "product_code": "SDM630-Modbus V2", "revision": "1.7",
            "model_name": "SDM630"}


async def test_device_identification_is_read_with_fc_43_14_only() -> None:
    meter = SimulatedMeter(register_map("eastron-sdm630"), lambda _t: dict(READINGS),
                           identity=IDENTITY)
    port = await meter.start()
    try:
        out = await _lingtan_poll("--profile", "eastron-sdm630", "--host", "127.0.0.1",
                                  "--port", str(port), "--identify")
    finally:
        await meter.stop()
    body = json.loads(out)
    assert body["values"] == READINGS
    assert {k: body["identity"][k] for k in IDENTITY} == IDENTITY
    assert set(meter.function_codes) == {4, 43}  # reads and identification, nothing else


async def test_a_meter_without_identification_still_reads() -> None:
    meter = SimulatedMeter(register_map("eastron-sdm630"), lambda _t: dict(READINGS))
    port = await meter.start()
    reader = ModbusReader(TcpTransport(host="127.0.0.1", port=port), timeout_s=2)
    try:
        with pytest.raises(ReadError, match="identification"):
            await reader.identify(1)
        values = register_map("eastron-sdm630").decode(
            await reader.read(1, register_map("eastron-sdm630").plan()))
    finally:
        reader.close()
        await meter.stop()
    assert values == READINGS


async def test_rtu_over_a_serial_line() -> None:
    from pymodbus.server import ModbusSerialServer
    from pymodbus.simulator import DataType as SimType
    from pymodbus.simulator import SimData, SimDevice

    from collectors.codec import Order, encode_number
    from collectors.config import SerialTransport
    from tests.collectors.ptypair import PtyPair

    profile = register_map("eastron-sdm630")
    image = [0] * 76
    for r in profile.registers:
        image[r.address:r.address + 2] = encode_number(READINGS[r.quantity] / r.scale,
                                                       r.type, Order.ABCD)
    with PtyPair() as line:
        server = ModbusSerialServer(
            SimDevice(id=5, simdata=SimData(address=0, values=image, datatype=SimType.REGISTERS)),
            port=line.a, baudrate=19200)
        await server.serve_forever(background=True)
        try:
            t = SerialTransport(type="serial", device=line.b, baudrate=19200)
            assert await read_once(t, 5, profile, 2) == READINGS
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]


async def test_coils_discrete_inputs_and_status_bits() -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType as SimType
    from pymodbus.simulator import SimData, SimDevice

    from collectors.profile import Profile

    breaker = Profile.model_validate({
        "name": "test-breaker", "source": "a breaker map written for this test",
        "registers": [
            {"quantity": "switch_closed", "address": 5, "function": 1, "type": "bool"},
            # bit 3 of the status word at holding register 10
            {"quantity": "alarm_active", "address": 10, "function": 3, "type": "uint16",
             "bit": 3},
        ]})
    relay = Profile.model_validate({
        "name": "test-relay", "source": "a relay map written for this test",
        "registers": [{"quantity": "alarm_active", "address": 2, "function": 2,
                       "type": "bool"}]})
    assert [(r.function, r.address, r.count) for r in breaker.plan()] == [(1, 5, 1), (3, 10, 1)]
    coils = [False] * 16
    coils[5] = True
    inputs = [False] * 16
    server = ModbusTcpServer(
        SimDevice(id=1, simdata=(
            [SimData(address=0, values=coils, datatype=SimType.BITS)],
            [SimData(address=0, values=inputs, datatype=SimType.BITS)],
            [SimData(address=0, count=16, values=0b1000, datatype=SimType.REGISTERS)],
            [SimData(address=0, count=16, values=0, datatype=SimType.REGISTERS)])),
        address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    t = TcpTransport(host="127.0.0.1", port=port)
    try:
        assert await read_once(t, 1, breaker, 2) == {"switch_closed": 1.0, "alarm_active": 1.0}
        assert await read_once(t, 1, relay, 2) == {"alarm_active": 0.0}
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


def test_bool_is_for_coils_and_discrete_inputs_only() -> None:
    from pydantic import ValidationError

    from collectors.profile import Profile
    base = {"name": "t", "source": "a map written for this test"}
    with pytest.raises(ValidationError, match=r"function 1, 2\) are type bool"):
        Profile.model_validate({**base, "registers": [
            {"quantity": "switch_closed", "address": 0, "function": 3, "type": "bool"}]})
    with pytest.raises(ValidationError, match="bit 16 is not a bit of a uint16"):
        Profile.model_validate({**base, "registers": [
            {"quantity": "alarm_active", "address": 0, "function": 3, "type": "uint16",
             "bit": 16}]})
