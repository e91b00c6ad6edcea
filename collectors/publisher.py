"""Publishes the outbox in order at QoS 1 and deletes each Sample when its PUBACK arrives."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import paho.mqtt.client as paho

from collectors.outbox import Outbox

log = logging.getLogger(__name__)


class OutboxPublisher:
    """Hands at most `window` Samples to paho at a time; paho resends them after a reconnect.

    The client's I/O runs on the same asyncio loop (telemetry.mqtt.LoopDriver): PUBACKs arrive
    in this thread.
    """

    def __init__(
        self, outbox: Outbox, client: paho.Client, *, window: int, coalesce_s: float = 0.01
    ) -> None:
        self.coalesce_s = coalesce_s
        self._acks: list[tuple[int, bool, str]] = []
        self.outbox = outbox
        self.client = client
        self.window = window
        self._inflight: dict[int, int] = {}  # mid -> outbox id
        self._last_handed = 0
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.published = 0
        self.acked = 0
        self.rejected = 0
        client.on_publish = self._on_publish

    def wake(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    @property
    def inflight(self) -> int:
        """Samples handed to paho and not yet acknowledged."""
        return len(self._inflight)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set."""
        while not stop.is_set():
            self.outbox.flush()  # commit the readings and acks gathered since the last turn
            room = self.window - len(self._inflight)
            if room > 0:
                for row_id, topic, payload in self.outbox.pending(self._last_handed, room):
                    info = self.client.publish(topic, payload, qos=1)
                    self._inflight[info.mid] = row_id
                    self._last_handed = row_id
                    self.published += 1
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self._wake.is_set() and not stop.is_set():
                # let the rest of this poll tick arrive: one transaction, one fsync for all
                await asyncio.sleep(self.coalesce_s)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything in the outbox is acknowledged, at most `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.outbox.cached_depth == 0 and not self._inflight:
                return True
            self._wake.set()
            await asyncio.sleep(0.05)
        return self.outbox.cached_depth == 0

    def _on_publish(self, _c: paho.Client, _ud: Any, mid: int, reason: Any, _props: Any) -> None:
        # in the loop's thread (LoopDriver), amid a read of many PUBACKs: settle them together
        failed = bool(getattr(reason, "is_failure", False))
        self._acks.append((mid, failed, str(reason) if failed else ""))
        if len(self._acks) == 1:
            self._loop.call_soon(self._settle)

    def _settle(self) -> None:
        acks, self._acks = self._acks, []
        done: list[int] = []
        for mid, failed, reason in acks:
            row_id = self._inflight.pop(mid, None)
            if row_id is None:
                continue
            if failed:
                # An MQTT 5 broker refused it (ACL, quota): keep it on disk for the next start.
                self.rejected += 1
                log.error("broker refused outbox row %d: %s; kept in the outbox", row_id, reason)
                continue
            done.append(row_id)
        if done:
            self.outbox.delete(done)
            self.acked += len(done)
            self._wake.set()
