"""Small paho helpers for tests: publish and wait for PUBACK, collect messages on a topic."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from telemetry.config import BrokerConfig


def _login(c: paho.Client, broker: BrokerConfig) -> None:
    if broker.username:
        pw = broker.password()
        c.username_pw_set(broker.username, pw.get_secret_value() if pw else None)


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
def collect(broker: BrokerConfig, topic: str) -> Iterator[Collector]:
    """Subscribe to `topic` for the duration of the block."""
    col = Collector()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}",
                    protocol=paho.MQTTv5 if broker.protocol == "5" else paho.MQTTv311)

    def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        with col.lock:
            col.messages.append((m.topic, bytes(m.payload)))

    c.on_message = on_message
    c.on_subscribe = lambda *_: col.subscribed.set()
    _login(c, broker)
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.subscribe(topic, qos=1)
    assert col.subscribed.wait(10)
    try:
        yield col
    finally:
        c.disconnect()
        c.loop_stop()
