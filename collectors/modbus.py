"""Modbus reads with pymodbus' async clients — read function codes only, by construction.

The client objects never leave this module, and the only requests it can build are FC 1 (read
coils), FC 2 (read discrete inputs), FC 3 (read holding registers), FC 4 (read input
registers) and FC 43/14 (read device identification). One Reader per transport: every unit id
behind a gateway or on a serial line shares its connection, one request at a time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from collectors.config import SerialTransport, TcpTransport
from collectors.profile import AnyProfile, Profile, Read
from collectors.sunspec import discover

log = logging.getLogger(__name__)

# Reconnect backoff after a failed connect: jittered, doubling, capped.
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0


class ReadError(Exception):
    """A device did not answer a read, answered with an exception, or could not be reached."""


class ModbusReader:
    """One connection (TCP socket or serial line) and the requests on it."""

    def __init__(self, transport: TcpTransport | SerialTransport, *, timeout_s: float) -> None:
        self.transport = transport
        self.timeout_s = timeout_s
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient
        # pymodbus' own retry and reconnect loops would act behind our back: both off.
        if isinstance(transport, SerialTransport):
            self._client = AsyncModbusSerialClient(
                transport.device,
                framer=FramerType.RTU,
                baudrate=transport.baudrate,
                parity=transport.parity,
                stopbits=transport.stopbits,
                bytesize=transport.bytesize,
                timeout=timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        else:
            self._client = AsyncModbusTcpClient(
                transport.host,
                port=transport.port,
                framer=FramerType.RTU if transport.type == "rtu-over-tcp" else FramerType.SOCKET,
                timeout=timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        self._lock = asyncio.Lock()
        self._readers: dict[int, Callable[..., Awaitable[Any]]] = {
            1: self._client.read_coils,
            2: self._client.read_discrete_inputs,
            3: self._client.read_holding_registers,
            4: self._client.read_input_registers,
        }
        self._backoff_s = 0.0
        self._next_connect = 0.0
        self.requests = 0

    @property
    def name(self) -> str:
        """Where this reader connects."""
        return self.transport.key

    async def read(self, unit_id: int, plan: list[Read]) -> list[tuple[Read, list[int]]]:
        """Execute a read plan against one unit id; all reads or a ReadError."""
        async with self._lock:
            await self._connect()
            out: list[tuple[Read, list[int]]] = []
            try:
                # pymodbus times out each request; this bounds a stuck transport, one timer a poll
                async with asyncio.timeout(self.timeout_s * 2 * len(plan)):
                    for r in plan:
                        out.append((r, await self._one(unit_id, r)))
            except TimeoutError:
                self._client.close()
                raise ReadError(f"{self.name} unit {unit_id}: no answer in time") from None
            return out

    async def _connect(self) -> None:
        if self._client.connected:
            return
        now = time.monotonic()
        if now < self._next_connect:
            raise ReadError(
                f"{self.name}: not connected; next attempt in {self._next_connect - now:.1f} s"
            )
        try:
            ok = await asyncio.wait_for(self._client.connect(), self.timeout_s * 2)
        except (TimeoutError, OSError):
            ok = False
        if not ok:
            self._client.close()
            self._backoff_s = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, self._backoff_s * 2))
            self._next_connect = now + self._backoff_s * random.uniform(0.5, 1.0)  # noqa: S311
            raise ReadError(f"cannot connect to {self.name}")
        self._backoff_s = 0.0

    async def _one(self, unit_id: int, r: Read) -> list[int]:
        self.requests += 1
        try:
            rsp = await self._readers[r.function](r.address, count=r.count, device_id=unit_id)
        except (ModbusException, OSError) as exc:
            # a timeout may leave a late answer in the pipe: start the next request clean
            self._client.close()
            raise ReadError(
                f"{self.name} unit {unit_id}: {r!r} failed: {exc or type(exc).__name__}"
            ) from None
        if rsp.isError():
            raise ReadError(
                f"{self.name} unit {unit_id}: {r!r} answered exception code "
                f"{getattr(rsp, 'exception_code', '?')}"
            )
        if r.function in (1, 2):
            # bits come padded to a whole byte: keep the ones asked for
            words = [int(b) for b in list(getattr(rsp, "bits", []))[: r.count]]
        else:
            words = list(getattr(rsp, "registers", []))
        if len(words) != r.count:
            raise ReadError(f"{self.name} unit {unit_id}: {r!r} returned {len(words)} registers")
        return words

    async def identify(self, unit_id: int) -> dict[str, str]:
        """FC 43/14 (Read Device Identification): vendor, product code, revision and the rest.

        Asks for the regular objects (read code 2), which include the basic ones; a device that
        answers only read code 1 is asked for the basic ones. ReadError if it supports neither.
        """
        async with self._lock:
            await self._connect()
            errors = []
            for read_code in (2, 1):
                self.requests += 1
                try:
                    rsp = await asyncio.wait_for(
                        self._client.read_device_information(
                            read_code=read_code, object_id=0, device_id=unit_id
                        ),
                        self.timeout_s * 2,
                    )
                except (ModbusException, OSError, TimeoutError) as exc:
                    self._client.close()
                    raise ReadError(
                        f"{self.name} unit {unit_id}: device identification failed: "
                        f"{exc or type(exc).__name__}"
                    ) from None
                if rsp.isError():
                    errors.append(getattr(rsp, "exception_code", "?"))
                    continue
                info: dict[int, Any] = getattr(rsp, "information", {})
                return {
                    IDENTITY_OBJECTS.get(k, f"object_0x{k:02x}"): _text(v)
                    for k, v in sorted(info.items())
                }
            raise ReadError(
                f"{self.name} unit {unit_id}: device identification (FC 43/14) not supported "
                f"(exception codes {errors})"
            )

    def close(self) -> None:
        """Drop the connection."""
        self._client.close()


# Modbus Application Protocol V1.1b3, 6.21: object ids of Read Device Identification
IDENTITY_OBJECTS = {
    0x00: "vendor_name",
    0x01: "product_code",
    0x02: "revision",
    0x03: "vendor_url",
    0x04: "product_name",
    0x05: "model_name",
    0x06: "user_application_name",
}


def _text(value: Any) -> str:
    if isinstance(value, list):  # an object sent in several parts
        return "".join(_text(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip("\x00 ")
    return str(value)


async def identify_once(
    transport: TcpTransport | SerialTransport, unit_id: int, timeout_s: float
) -> dict[str, str]:
    """Read a device's identification once (for `lingtan poll --identify`)."""
    reader = ModbusReader(transport, timeout_s=timeout_s)
    try:
        return await reader.identify(unit_id)
    finally:
        reader.close()


async def resolve(reader: ModbusReader, unit_id: int, profile: AnyProfile) -> Profile:
    """The register map to poll: the profile's own, or the one discovered on a SunSpec device."""
    if isinstance(profile, Profile):
        return profile
    try:
        found = await discover(lambda plan: reader.read(unit_id, plan), profile)
    except LookupError as exc:
        raise ReadError(f"{reader.name} unit {unit_id}: {exc}") from None
    log.info(
        "%s unit %d: SunSpec at %d, models %s (%s %s, serial %s)",
        reader.name,
        unit_id,
        found.base,
        [m.id for m in found.models],
        found.manufacturer,
        found.model,
        found.serial,
    )
    return found.profile


async def read_once(
    transport: TcpTransport | SerialTransport, unit_id: int, profile: AnyProfile, timeout_s: float
) -> dict[str, float]:
    """Read a device once with its profile (for `lingtan poll`)."""
    reader = ModbusReader(transport, timeout_s=timeout_s)
    try:
        fixed = await resolve(reader, unit_id, profile)
        return fixed.decode(await reader.read(unit_id, fixed.plan()))
    finally:
        reader.close()
