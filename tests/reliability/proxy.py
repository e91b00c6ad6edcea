"""A TCP proxy on loopback that the test controls: the network between two real processes.

Modes, switchable while connections are open:
  pass      bytes flow both ways;
  pause     a partition: nothing flows either way and new connections get no answer, but
            nothing is lost either (a cable pulled and put back, TCP's retransmits: what was
            sent arrives when the link returns, if the ends still listen);
  garbage   (in front of a device) every request is answered with random bytes by the proxy
            itself; nothing reaches the device;
  reset     every open connection is closed, and new ones are closed as soon as they open.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

MODES = ("pass", "pause", "garbage", "reset")


@dataclass
class Proxy:
    """Listens on a free loopback port and forwards to `upstream_port`."""

    upstream_port: int
    mode: str = "pass"
    port: int = 0
    connections: int = 0  # accepted so far
    garbage_answers: int = 0
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> int:
        """Listen; return the port."""
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def set_mode(self, mode: str) -> None:
        """Switch mode (call on the proxy's event loop)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        self.mode = mode
        if mode == "pass":
            self._flowing.set()
        else:
            self._flowing.clear()
        if mode == "reset":
            for w in list(self._writers):
                w.transport.abort()

    async def stop(self) -> None:
        """Close every connection and the listener."""
        self._flowing.set()
        for w in list(self._writers):
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            await self._flowing_or_garbage(reader, writer)
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _flowing_or_garbage(self, reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> None:
        up_writer = None
        try:
            while self.mode == "garbage" or not self._flowing.is_set():
                if self.mode == "garbage":
                    if not await self._answer_garbage(reader, writer):
                        return
                else:
                    await self._wait_for_a_mode()
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_writer)
            await asyncio.gather(self._up(reader, up_writer, writer), self._down(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            if up_writer is not None:
                self._writers.discard(up_writer)
                up_writer.transport.abort()

    async def _wait_for_a_mode(self) -> None:
        # paused: until the link returns or the device turns to garbage
        while not self._flowing.is_set() and self.mode != "garbage":
            await asyncio.sleep(0.05)

    async def _answer_garbage(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> bool:
        data = await reader.read(4096)
        if not data:
            return False
        self.garbage_answers += 1
        writer.write(os.urandom(len(data) + 7))
        await writer.drain()
        return True

    async def _up(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                  client: asyncio.StreamWriter) -> None:
        """Client to upstream; in garbage mode the proxy answers the client itself."""
        try:
            while True:
                await self._wait_for_a_mode()
                data = await src.read(65536)  # paused: not read, so TCP holds the bytes
                if not data:
                    break
                await self._wait_for_a_mode()
                if self.mode == "garbage":
                    self.garbage_answers += 1
                    client.write(os.urandom(len(data) + 7))
                    await client.drain()
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()

    async def _down(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Upstream to client; in garbage mode what the device says is dropped."""
        try:
            while True:
                await self._wait_for_a_mode()
                data = await src.read(65536)
                if not data:
                    break
                await self._wait_for_a_mode()
                if self.mode != "garbage":
                    dst.write(data)
                    await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()
