"""Simulated meters served for real over Modbus TCP (pymodbus), for the demo and the tests.

A simulated meter serves a shipped profile's register map (or a SunSpec inverter's discovered
one); its values come from a model of a factory's load, and every request it answers is logged
(function code, address, words), so a test can compare what was stored with what was served.
A meter can also stop answering for a while, as a meter behind a flaky RS-485 gateway does.
"""

from __future__ import annotations

import math
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from pymodbus import ModbusDeviceIdentification
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from collectors.codec import DataType, encode_number, scaled
from collectors.modbus import IDENTITY_OBJECTS
from collectors.profile import Profile, Register, load_profile
from collectors.sunspec import Model, SunSpecProfile, build_profile, model_definition

ValueSource = Callable[[float], dict[str, float]]


@dataclass
class FactoryLoad:
    """A plant's grid import: night base, two day shifts, quieter weekends, some noise.

    Energy is the integral of power over the (simulated) time between reads, so the counter
    and the power reading agree the way a real meter's do.
    """

    base_kw: float = 320.0
    shift_kw: float = 780.0
    timezone: str = "Asia/Shanghai"
    # float32 registers resolve 1/128 kWh up to 2**16 kWh: a young meter keeps demo figures fine
    energy_kwh: float = 48_210.0
    seed: int = 7
    _last_t: float | None = None
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def power_kw(self, t: float) -> float:
        """Active power at epoch seconds `t`."""
        local = datetime.fromtimestamp(t, UTC).astimezone(ZoneInfo(self.timezone))
        hour = local.hour + local.minute / 60
        # two shifts 08-20 and 20-24 at lower staffing, ramps of about an hour
        day = 1 / (1 + math.exp(-(hour - 7.5) * 3)) - 0.45 / (1 + math.exp(-(hour - 20) * 3))
        weekend = 0.55 if local.weekday() >= 5 else 1.0
        noise = self._rng.gauss(0, 0.02)
        return max(0.0, (self.base_kw + self.shift_kw * day * weekend) * (1 + noise))

    def __call__(self, t: float) -> dict[str, float]:
        p = self.power_kw(t)
        if self._last_t is not None and t > self._last_t:
            self.energy_kwh += p * (t - self._last_t) / 3600
        self._last_t = t
        volts = 230.0 + self._rng.gauss(0, 1.2)
        pf = 0.96
        amps = p * 1000 / (3 * volts * pf)
        return {
            "active_power_kw": p,
            "power_factor": pf,
            "frequency_hz": 50.0 + self._rng.gauss(0, 0.02),
            "voltage_l1_v": volts,
            "voltage_l2_v": volts + 0.8,
            "voltage_l3_v": volts - 0.6,
            "current_l1_a": amps,
            "current_l2_a": amps * 1.02,
            "current_l3_a": amps * 0.98,
            "energy_import_kwh": self.energy_kwh,
            "energy_export_kwh": 0.0,
        }


@dataclass(frozen=True)
class Served:
    """One request the simulated meter answered."""

    at: float
    function_code: int
    address: int
    words: tuple[int, ...]


_FC_DEVICE_ID = 43


_INT_RANGE = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


def register_raw(r: Register, value: float, scale_factors: dict[str, int]) -> float:
    """The number register `r` holds for `value` (an integer register: the nearest it can)."""
    raw = (value - r.offset) / r.scale
    if r.scale_factor is not None:
        raw /= 10.0 ** scale_factors.get(r.scale_factor, 0)
    span = _INT_RANGE.get(r.type)
    if span is not None:
        raw = min(max(round(raw), span[0]), span[1])
    return raw


def as_read(
    profile: Profile, values: dict[str, float], scale_factors: dict[str, int] | None = None
) -> dict[str, float]:
    """`values` as a poll of a `SimulatedMeter` serving them decodes them.

    Registers have a resolution (whole Wh, 0.1 kWh, a float32's 24 bits): a record made from
    the model's values must be rounded the same way, or a counter read live after it could
    come out a hair lower (a "reset" to the accounts).
    """
    sfs = scale_factors or {}
    out = dict(values)
    for r in profile.registers:
        if r.quantity in values:
            raw = register_raw(r, values[r.quantity], sfs)
            if r.type is DataType.FLOAT32:
                raw = struct.unpack(">f", struct.pack(">f", raw))[0]
            sf = sfs.get(r.scale_factor, 0) if r.scale_factor is not None else None
            out[r.quantity] = scaled(raw, r.scale, r.offset, sf)
    return out


class SimulatedMeter:
    """Serves `profile` on a loopback TCP port; values from `source(epoch_seconds)`.

    `static`: register words that never change (a SunSpec map's marker, headers, names and
    scale factors); `scale_factors`: the exponent each named scale factor register holds, used
    to encode the registers that refer to it. `answering(t)` False: every request gets
    exception 0x0B (gateway target device failed to respond), as from a meter behind a gateway
    that has lost it.
    """

    def __init__(
        self,
        profile: Profile,
        source: ValueSource,
        *,
        unit_id: int = 1,
        clock: Callable[[], float] = time.time,
        rtu_over_tcp: bool = False,
        identity: dict[str, str] | None = None,
        static: dict[int, int] | None = None,
        scale_factors: dict[str, int] | None = None,
        answering: Callable[[float], bool] | None = None,
        keep: int | None = None,
    ) -> None:
        self.identity = identity
        # how many requests the logs (served, function_codes) keep: None, all (tests); a
        # long-running demo keeps the last few
        self.keep = keep
        self.static = dict(static or {})
        self.scale_factors = dict(scale_factors or {})
        self.answering = answering
        self.refused = 0
        self.framer = FramerType.RTU if rtu_over_tcp else FramerType.SOCKET
        self.profile = profile
        self.source = source
        self.unit_id = unit_id
        self.clock = clock
        self.served: list[Served] = []
        self.function_codes: list[int] = []
        self.values: dict[str, float] = {}
        self.port = 0
        self._server: ModbusTcpServer | None = None
        spans = [(r.address, r.address + r.width) for r in profile.registers]
        spans += [(s.address, s.address + s.width) for s in profile.scale_factors]
        spans += [(a, a + 1) for a in self.static]
        self._lo = min(lo for lo, _ in spans)
        self._size = max(hi for _, hi in spans)
        sf_address = {s.name: s.address for s in profile.scale_factors}
        for name, exponent in self.scale_factors.items():
            self.static[sf_address[name]] = exponent & 0xFFFF

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (port 0 picks a free one); return the port."""
        device = SimDevice(
            id=self.unit_id,
            simdata=SimData(
                address=self._lo,
                values=[self.static.get(a, 0) for a in range(self._lo, self._size)],
                datatype=SimType.REGISTERS,
            ),
            action=self._action,
        )
        ident = None
        if self.identity is not None:
            ids = {name: i for i, name in IDENTITY_OBJECTS.items()}
            ident = ModbusDeviceIdentification(  # type: ignore[no-untyped-call]
                info={ids[k]: v.encode() for k, v in self.identity.items()}
            )
        self._server = ModbusTcpServer(
            device,
            address=(host, port),
            trace_pdu=self._trace,
            framer=self.framer,
            identity=ident,
        )
        await self._server.serve_forever(background=True)
        sockets = getattr(self._server.transport, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.function_codes.append(pdu.function_code)
            if self.keep is not None and len(self.function_codes) > 2 * self.keep:
                del self.function_codes[: -self.keep]
        elif pdu.function_code == _FC_DEVICE_ID and self.identity is None:
            # like most meters: no Read Device Identification
            refusal = ExceptionResponse(_FC_DEVICE_ID, ExcCodes.ILLEGAL_FUNCTION)
            refusal.transaction_id = pdu.transaction_id
            refusal.dev_id = pdu.dev_id
            return refusal
        return pdu

    async def _action(  # noqa: PLR0917 - pymodbus calls it positionally
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # a meter's measurements are read-only
        now = self.clock()
        if self.answering is not None and not self.answering(now):
            self.refused += 1
            return ExcCodes.GATEWAY_NO_RESPONSE
        self.values = self.source(now)
        # scale factor registers hold `scale_factors` (0, i.e. 10^0, unless given)
        for r in self.profile.registers:
            if r.quantity in self.values:
                raw = register_raw(r, self.values[r.quantity], self.scale_factors)
                words = encode_number(raw, r.type, r.order or self.profile.order)
                i = r.address - start_address
                registers[i : i + r.width] = words
        self.served.append(
            Served(
                now,
                function_code,
                address,
                tuple(registers[address - start_address : address - start_address + count]),
            )
        )
        if self.keep is not None and len(self.served) > 2 * self.keep:
            del self.served[: -self.keep]
        return None


def _text(s: str, regs: int) -> list[int]:
    raw = s.encode().ljust(regs * 2, b"\0")[: regs * 2]
    return [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]


# The exponent each SunSpec model 103 scale factor holds in the simulated inverter: watts in
# 100 W steps (an int16 reaches 3.2 MW), the lifetime yield in Wh (acc32: it wraps at 2^32 Wh).
INVERTER_SCALE = {
    "A_SF": -1,
    "V_SF": -1,
    "W_SF": 2,
    "Hz_SF": -2,
    "VA_SF": 2,
    "VAr_SF": 2,
    "PF_SF": 0,
    "WH_SF": 0,
    "DCA_SF": -1,
    "DCV_SF": -1,
    "DCW_SF": 2,
    "Tmp_SF": -1,
}


def sunspec_inverter(
    manufacturer: str, model: str, serial: str, *, base: int = 40000
) -> tuple[Profile, dict[int, int], dict[str, int]]:
    """A three-phase SunSpec inverter (common model 1, inverter model 103) at `base`.

    Returns the register map lingtan's discovery builds for it, the static words (marker,
    model headers, names, end marker) and the scale factors, ready for `SimulatedMeter`.
    """
    common_len = 66
    inverter_at = base + 2 + 2 + common_len
    inverter_len = 50
    static = {base: 0x5375, base + 1: 0x6E53, base + 2: 1, base + 3: common_len}
    static |= dict(enumerate(_text(manufacturer, 16), base + 4))
    static |= dict(enumerate(_text(model, 16), base + 20))
    static |= dict(enumerate(_text(serial, 16), base + 52))
    static |= {inverter_at: 103, inverter_at + 1: inverter_len}
    end = inverter_at + 2 + inverter_len
    static |= {end: 0xFFFF, end + 1: 0}
    spec = load_profile("sunspec")
    assert isinstance(spec, SunSpecProfile)
    profile = build_profile(
        spec, [Model(1, base + 2, common_len), Model(103, inverter_at, inverter_len)]
    )
    names = {p["sf"] for p in model_definition(103)["points"] if p.get("sf")}
    sfs = {}
    for sf in profile.scale_factors:
        point = sf.name.removeprefix("m103_")
        assert point in names, point
        sfs[sf.name] = INVERTER_SCALE.get(point, 0)
    return profile, static, sfs
