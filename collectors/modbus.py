"""Modbus TCP reads with pymodbus' async client — read function codes only, by construction.

The client object never leaves this module, and the only requests this module can build are
FC 3 (read holding registers) and FC 4 (read input registers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from collectors.profile import Read

log = logging.getLogger(__name__)


class ReadError(Exception):
    """A device did not answer a read, or answered with an exception."""


class ModbusTcpReader:
    """One TCP connection to a device or gateway; requests go one at a time."""

    def __init__(self, host: str, port: int, *, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        # pymodbus' own reconnect loop would retry behind our back; we reconnect per poll.
        self._client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0
        )
        self._lock = asyncio.Lock()
        self._readers: dict[int, Callable[..., Awaitable[Any]]] = {
            3: self._client.read_holding_registers,
            4: self._client.read_input_registers,
        }

    async def read(self, unit_id: int, plan: list[Read]) -> list[tuple[Read, list[int]]]:
        """Execute a read plan against one unit id; all reads or a ReadError."""
        async with self._lock:
            if not self._client.connected:
                ok = await asyncio.wait_for(self._client.connect(), self.timeout_s * 2)
                if not ok:
                    raise ReadError(f"cannot connect to {self.host}:{self.port}")
            out: list[tuple[Read, list[int]]] = []
            for r in plan:
                try:
                    rsp = await asyncio.wait_for(
                        self._readers[r.function](r.address, count=r.count, device_id=unit_id),
                        self.timeout_s * 2,
                    )
                except (ModbusException, TimeoutError, OSError) as exc:
                    self._client.close()
                    raise ReadError(
                        f"{self.host}:{self.port} unit {unit_id}: {r!r} failed: "
                        f"{exc or type(exc).__name__}"
                    ) from None
                if rsp.isError():
                    raise ReadError(
                        f"{self.host}:{self.port} unit {unit_id}: {r!r} answered "
                        f"exception code {getattr(rsp, 'exception_code', '?')}"
                    )
                words = list(rsp.registers)
                if len(words) != r.count:
                    raise ReadError(
                        f"{self.host}:{self.port} unit {unit_id}: {r!r} returned "
                        f"{len(words)} registers"
                    )
                out.append((r, words))
            return out

    def close(self) -> None:
        """Drop the connection."""
        self._client.close()
