"""MQTT plumbing shared by the edge, ingest and rules: client set-up and an acknowledging consumer.

For ingest and rules, paho runs its network loop in a thread; the consumer hands messages to
the caller through a bounded queue and acknowledges them only when the caller says what they
caused is durable. The edge runs paho's I/O on its asyncio loop instead (LoopDriver).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from telemetry.config import BrokerConfig

log = logging.getLogger(__name__)


def make_client(
    broker: BrokerConfig,
    client_id: str,
    *,
    persistent: bool,
    manual_ack: bool = False,
) -> paho.Client:
    """A paho client set up from config: protocol, credentials, TLS and reconnect backoff."""
    v5 = broker.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        # MQTT 3.1.1 persistent sessions are clean_session=False; v5 uses clean_start on connect.
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
    )
    if broker.username is not None:
        pw = broker.password()
        client.username_pw_set(broker.username, pw.get_secret_value() if pw else None)
    if broker.tls:
        client.tls_set(
            ca_certs=str(broker.ca_file) if broker.ca_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def connect_async(
    client: paho.Client,
    broker: BrokerConfig,
    *,
    persistent: bool,
    receive_maximum: int | None = None,
) -> None:
    """Start connecting in the background; paho reconnects on its own afterwards.

    `receive_maximum` (MQTT 5) caps the QoS 1 messages the broker sends before we acknowledge.
    """
    _connect_params(client, broker, persistent=persistent, receive_maximum=receive_maximum)
    client.loop_start()


def _connect_params(
    client: paho.Client, broker: BrokerConfig, *, persistent: bool, receive_maximum: int | None
) -> None:
    # paho's connect_async only records where and how to connect; nothing is sent yet
    if broker.protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            props.SessionExpiryInterval = broker.session_expiry_s
        if receive_maximum is not None:
            props.ReceiveMaximum = receive_maximum
        client.connect_async(
            broker.host,
            broker.port,
            keepalive=broker.keepalive_s,
            clean_start=not persistent,
            properties=props,
        )
    else:
        client.connect_async(broker.host, broker.port, keepalive=broker.keepalive_s)


# Reconnect backoff of a LoopDriver: doubling from the first to the last (make_client's).
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0


class LoopDriver:
    """Runs a paho client's network I/O on the running asyncio loop instead of paho's thread.

    For a process that publishes hundreds of QoS 1 messages a second from asyncio (the edge):
    with paho's thread, every publish writes a byte to wake that thread and every PUBACK is
    handed back across threads, about a sixth of the edge's CPU at 500 devices. Here a publish
    is queued and written when the socket is writable, PUBACKs are read when it is readable,
    and paho's callbacks run in the loop's thread. Only the blocking connect (name lookup, TCP, TLS
    handshake) runs in a worker thread, while nothing else touches the socket, so a broker that
    does not answer never stalls the loop. Reconnects back off, doubling from
    RECONNECT_MIN_S to RECONNECT_MAX_S, as paho's own loop does with make_client's settings.
    """

    def __init__(
        self,
        client: paho.Client,
        broker: BrokerConfig,
        *,
        persistent: bool,
        receive_maximum: int | None = None,
    ) -> None:
        self.client = client
        self.broker = broker
        self._loop = asyncio.get_running_loop()
        # the socket registered with the loop: adopted once a connect (worker thread) returns
        self._sock: Any = None
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        _connect_params(client, broker, persistent=persistent, receive_maximum=receive_maximum)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, keep connected and keep alive until `stop` is set."""
        delay = RECONNECT_MIN_S
        while not stop.is_set():
            if self.client.socket() is None:
                if not await self._connect():
                    await _wait(stop, delay * random.uniform(0.5, 1.0))  # noqa: S311
                    delay = min(RECONNECT_MAX_S, delay * 2)
                    continue
            else:
                self.client.loop_misc()  # keepalive pings; a silent broker is dropped here
                if self.client.is_connected():
                    delay = RECONNECT_MIN_S
            await _wait(stop, 1.0)

    async def disconnect(self, timeout_s: float = 2.0) -> bool:
        """Send DISCONNECT (queued publishes go first); False if not done in `timeout_s`."""
        self.client.disconnect()
        deadline = time.monotonic() + timeout_s
        while self.client.socket() is not None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _connect(self) -> bool:
        try:
            await self._loop.run_in_executor(None, self.client.reconnect)
        except OSError as exc:  # refused, unreachable, timed out, TLS (ssl.SSLError)
            log.warning("cannot connect to %s: %s", self.broker.url, exc or type(exc).__name__)
            return False
        except Exception:  # a bug or a setting paho rejects: say so loudly, keep trying
            log.exception("cannot connect to %s", self.broker.url)
            return False
        sock = self.client.socket()
        if sock is not None:
            # paho's socket callbacks for it came from the worker thread and found no socket
            # registered: register it here, in the loop's thread
            self._sock = sock
            self._loop.add_reader(sock, self._read)
            if self.client.want_write():  # the CONNECT, at least
                self._loop.add_writer(sock, self._write)
        return True

    def _read(self) -> None:
        self.client.loop_read()
        sock = self.client.socket()
        # TLS may hold decrypted bytes that the file descriptor no longer signals
        while sock is not None and isinstance(sock, ssl.SSLSocket) and sock.pending():
            self.client.loop_read()
            sock = self.client.socket()

    def _write(self) -> None:
        self.client.loop_write()

    def _on_close(self, _c: paho.Client, _ud: Any, sock: Any) -> None:
        if sock is self._sock:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            self._sock = None

    def _on_register_write(self, _c: paho.Client, _ud: Any, sock: Any) -> None:
        if sock is self._sock:
            self._loop.add_writer(sock, self._write)

    def _on_unregister_write(self, _c: paho.Client, _ud: Any, sock: Any) -> None:
        if sock is self._sock:
            self._loop.remove_writer(sock)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def wait_published(info: paho.MQTTMessageInfo, timeout_s: float) -> bool:
    """Wait for a QoS 1 PUBACK without blocking the loop that reads it (LoopDriver).

    False if it did not come in `timeout_s`, or paho gave the message up (connection lost).
    """
    deadline = time.monotonic() + timeout_s
    try:
        while not info.is_published():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
    except (RuntimeError, ValueError):  # paho: not queued, or not sent (no connection)
        return False
    return True


@dataclass(frozen=True, slots=True)
class Message:
    """A received message, to be acknowledged once what it caused is durable."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    # which connection brought it: an acknowledgement only means something on that connection
    connection: int = 0


class Consumer:
    """Subscribes with a persistent session and QoS 1; acknowledges on request, in order.

    Flow control: over MQTT 5 the CONNECT announces Receive Maximum = `max_pending`, so the
    broker stops sending once that many messages wait for our acknowledgement (the caller's
    sink is down) and holds the rest in the session. The queue is bounded by the same number;
    over MQTT 3.1.1 a full queue blocks the paho thread, which stops reading the socket.

    An acknowledgement goes out only on the connection the message came in on: after a
    reconnect, packet ids are reused, and the broker resends what was not acknowledged.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        subscriptions: Sequence[str],
        *,
        max_pending: int = 10_000,
    ) -> None:
        self.broker = broker
        self.subscriptions = list(subscriptions)
        # Handed from the paho thread to the caller in whole batches: one wake-up per batch.
        self._buffer: collections.deque[Message] = collections.deque()
        self._cond = threading.Condition()
        self._wanted = 1
        self.max_pending = max_pending
        self._stopping = threading.Event()
        self.connected = threading.Event()
        self.connection = 0  # incremented on every successful connect
        self.received = 0  # messages received since start
        self.client = make_client(broker, client_id, persistent=True, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.on_connected: Callable[[], None] | None = None

    def start(self) -> None:
        """Connect in the background."""
        connect_async(self.client, self.broker, persistent=True, receive_maximum=self.max_pending)

    def stop(self) -> None:
        """Disconnect; unacknowledged messages stay with the broker's session."""
        self._stopping.set()
        self.client.disconnect()
        self.client.loop_stop()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (and subscribed) or `timeout` seconds pass."""
        return self.connected.wait(timeout)

    def _on_connect(
        self, client: paho.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker %s refused connection: %s", self.broker.url, reason)
            return
        self.connection += 1
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        log.info("connected to %s, subscribed to %s", self.broker.url, self.subscriptions)
        self.connected.set()
        if self.on_connected is not None:
            self.on_connected()

    def _on_disconnect(
        self, _c: paho.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self.connected.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from %s: %s; reconnecting", self.broker.url, reason)

    def _on_message(self, _c: paho.Client, _ud: Any, msg: paho.MQTTMessage) -> None:
        m = Message(
            msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain), self.connection
        )
        self.received += 1
        with self._cond:
            while len(self._buffer) >= self.max_pending and not self._stopping.is_set():
                self._cond.wait(0.5)  # full (MQTT 3.1.1 has no Receive Maximum): stop reading
            self._buffer.append(m)
            # wake the caller only when its batch is complete (or it waits for a first message)
            if len(self._buffer) >= self._wanted:
                self._cond.notify()

    def get_batch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        """Up to `max_messages`, waiting at most `max_wait_s` after the first one arrives."""
        buf = self._buffer
        with self._cond:
            if not buf:
                self._wanted = 1
                self._cond.wait(max_wait_s)
                if not buf:
                    return []
            deadline = time.monotonic() + max_wait_s
            self._wanted = max_messages
            while len(buf) < max_messages:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._wanted = 1
            n = min(max_messages, len(buf))
            batch = [buf.popleft() for _ in range(n)]
            self._cond.notify_all()  # room again for a blocked paho thread
        return batch

    def pending(self) -> int:
        """Messages received and not yet taken by the caller."""
        return len(self._buffer)

    def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge messages whose effects are durable (in the order received)."""
        for m in messages:
            if m.qos == 0:
                continue
            if m.connection != self.connection:
                continue  # the broker resends it on the new connection
            self.client.ack(m.mid, m.qos)

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> paho.MQTTMessageInfo:
        """Publish through the same connection."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)
