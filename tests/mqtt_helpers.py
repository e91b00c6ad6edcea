"""Small paho helpers for tests: publish and wait for PUBACK, collect messages on a topic."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from telemetry.config import BrokerConfig


def _login(c: paho.Client, broker: BrokerConfig) -> None:
    if broker.username:
        pw = broker.password()
        c.username_pw_set(broker.username, pw.get_secret_value() if pw else None)


def session_properties(expiry_s: int) -> Properties:
    """CONNECT properties of an MQTT 5 session the broker keeps `expiry_s` after a disconnect
    (connect with clean_start=False to resume it)."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry_s
    return props


def _client(broker: BrokerConfig) -> paho.Client:
    v5 = broker.protocol == "5"
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}",
                    protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
    _login(c, broker)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def publish(broker: BrokerConfig, messages: list[tuple[str, bytes]], *,
            retain: bool = False) -> None:
    """Publish at QoS 1 and wait until the broker acknowledged each."""
    c = _client(broker)
    try:
        infos = [c.publish(t, p, qos=1, retain=retain) for t, p in messages]
        for i in infos:
            i.wait_for_publish(10)
            assert i.is_published()
    finally:
        c.disconnect()
        c.loop_stop()


class Collector:
    """Messages received on a subscription, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [p for _, p in self.messages]


@contextmanager
def collect(broker: BrokerConfig, topic: str, *, persistent: bool = False
            ) -> Iterator[Collector]:
    """Subscribe to `topic` for the duration of the block.

    `persistent` (MQTT 5 only) keeps the subscription in a broker session that outlives a
    restart of a broker with persistence: messages that arrive while the subscriber is
    reconnecting wait for it.
    """
    col = Collector()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}",
                    protocol=paho.MQTTv5 if broker.protocol == "5" else paho.MQTTv311)
    c.reconnect_delay_set(min_delay=0.1, max_delay=1)

    def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        with col.lock:
            col.messages.append((m.topic, bytes(m.payload)))

    c.on_message = on_message
    c.on_subscribe = lambda *_: col.subscribed.set()
    _login(c, broker)
    if persistent:
        assert broker.protocol == "5", "a persistent collector speaks MQTT 5"
        c.connect(broker.host, broker.port, clean_start=False,
                  properties=session_properties(600))
    else:
        c.connect(broker.host, broker.port)
    c.loop_start()
    c.subscribe(topic, qos=1)
    assert col.subscribed.wait(10)
    try:
        yield col
    finally:
        c.disconnect()
        c.loop_stop()
