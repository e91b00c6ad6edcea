"""Devices that misbehave on the wire: one that never answers, one that answers garbage."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field


@dataclass
class BadDevice:
    """A TCP server on loopback that accepts Modbus requests and answers them wrongly."""

    mode: str  # "hang": read and never answer; "garbage": answer random bytes
    requests: int = 0
    _server: asyncio.base_events.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while data := await reader.read(260):
                self.requests += 1
                if self.mode == "garbage":
                    writer.write(os.urandom(len(data) + 7))
                    await writer.drain()
        except ConnectionError:
            pass

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
