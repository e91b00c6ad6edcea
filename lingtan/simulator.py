"""Simulated meters served for real over Modbus TCP (pymodbus), for the demo and the tests.

A simulated meter serves a shipped profile's register map; its values come from a model of
a factory's load, and every request it answers is logged (function code, address, words), so a
test can compare what was stored with what was served.
"""

from __future__ import annotations

import math
import random
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

from collectors.codec import encode_number
from collectors.modbus import IDENTITY_OBJECTS
from collectors.profile import Profile

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


class SimulatedMeter:
    """Serves `profile` on a loopback TCP port; values from `source(epoch_seconds)`."""

    def __init__(
        self,
        profile: Profile,
        source: ValueSource,
        *,
        unit_id: int = 1,
        clock: Callable[[], float] = time.time,
        rtu_over_tcp: bool = False,
        identity: dict[str, str] | None = None,
    ) -> None:
        self.identity = identity
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
        self._size = max(r.address + r.width for r in profile.registers)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (port 0 picks a free one); return the port."""
        device = SimDevice(
            id=self.unit_id,
            simdata=SimData(address=0, count=self._size, values=0, datatype=SimType.REGISTERS),
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
        self.values = self.source(now)
        # scale factor registers stay 0 (10^0), so raw values carry the plain scale
        for r in self.profile.registers:
            if r.quantity in self.values:
                raw = (self.values[r.quantity] - r.offset) / r.scale
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
        return None
