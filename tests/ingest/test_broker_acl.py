"""The broker as we ship it keeps sites apart: an edge box with site A's credential cannot publish
under site B, and its message never reaches the database. Real Mosquitto (deploy/mosquitto
config, ACL and add-edge.sh), TLS, and ingest running for real."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from ingest.config import IngestConfig, SqliteConfig
from ingest.service import IngestService
from ingest.sqlite_store import SqliteStore
from telemetry import topics
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.mqtt import make_client
from telemetry.sample import Sample, encode
from telemetry.timeutil import now_ms
from tests.ingest.harness import running
from tests.ingest.tls_broker import (
    OBSERVER,
    OBSERVER_ACL,
    TlsBroker,
    shipped_settings,
    tls_broker,
)
from tests.servers import wait_until

pytestmark = pytest.mark.integration

SITE_A = SiteInfo(id="site-a", timezone="Asia/Shanghai", region="CN")
EDGE = "edge-site-a-1"  # add-edge.sh site-a 1
INGEST = "lingtan-ingest"
RULES = "lingtan-rules"
# A test-only user that may receive everything: it shows that nothing at all was published on
# site-b, not only nothing that ingest may read. It adds a user; it changes no shipped one.
# After the last message we know about has been stored, how long we keep watching for one that
# should never come. Not a bound on anything: the ordering argument in the test is the proof.
SETTLE_S = 2.0
WAIT_S = 60.0  # generous: a loaded 2-core machine, TLS handshakes, ingest batches


class Client:
    """A paho client set up from a BrokerConfig, as lingtan's components do; records what the
    broker answers: the CONNACK reason, each PUBACK reason, and the messages delivered."""

    def __init__(self, broker: BrokerConfig, subscribe: str | None = None) -> None:
        self.broker = broker
        self.topic = subscribe
        self.connack: ReasonCode | None = None
        self.acks: dict[int, ReasonCode] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = make_client(broker, f"test-{uuid.uuid4().hex[:8]}", persistent=False)
        # After a refused PUBLISH Mosquitto 2.0 drops the connection: come back quickly.
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self.subscribed.set()

    def _on_connect(self, c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        with self._lock:
            if self.connack is None or self.connack.is_failure:
                self.connack = reason
        if not reason.is_failure and self.topic is not None:
            c.subscribe(self.topic, qos=1)

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._lock:
            self.acks[mid] = reason

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def start(self) -> ReasonCode:
        """Connect (TLS handshake included, so a TLS failure raises here); the CONNACK reason."""
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        wait_until(lambda: self.connack is not None, WAIT_S, "CONNACK")
        assert self.connack is not None
        if self.topic is not None and not self.connack.is_failure:
            assert self.subscribed.wait(WAIT_S), "SUBACK"
        return self.connack

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 (alone in flight) and return the broker's PUBACK reason."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self.acks, WAIT_S, f"PUBACK for {topic}")
        with self._lock:
            return self.acks[info.mid]

    def received(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of the messages received so far."""
        with self._lock:
            return list(self.messages)

    def topics_seen(self) -> list[str]:
        """Topics of the messages received so far."""
        return [t for t, _ in self.received()]


@contextmanager
def client(broker: BrokerConfig, subscribe: str | None = None) -> Iterator[Client]:
    """A connected Client for the duration of the block."""
    c = Client(broker, subscribe)
    try:
        reason = c.start()
        assert not reason.is_failure, f"{broker.username} refused: {reason}"
        yield c
    finally:
        c.stop()


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[TlsBroker]:
    """The shipped broker, with edge box 1 of site-a added by add-edge.sh."""
    with tls_broker(tmp_path / "broker", edges=[("site-a", "1")], extra_acl=OBSERVER_ACL) as b:
        yield b


def _sample(site: str, seq: int) -> Sample:
    return Sample(site=site, device="meter-1", seq=seq, ts=now_ms(),
                  values={"active_power_kw": 1.0})


def _wait_subscribed(reader: SqliteStore) -> None:
    # Ingest's own health Samples come back to it through its subscription: once one is stored,
    # ingest is subscribed (nothing published from now on can pass it by), and the ACL let it
    # publish them (a refusal would have cost it its connection).
    wait_until(lambda: reader.count_samples("site-a") > 0, WAIT_S,
               "ingest's first health Sample to be stored")


def _publish_sample(edge: Client, s: Sample) -> ReasonCode:
    return edge.publish(topics.sample(s.site, s.device), encode(s))


@pytest.mark.parametrize("share_group", [None, "ingest"], ids=["subscription", "shared"])
def test_site_a_credential_cannot_get_a_sample_into_site_b(
        tmp_path: Path, tls: TlsBroker, share_group: str | None) -> None:
    cfg = IngestConfig(sites=["site-a", "site-b"], share_group=share_group, batch_wait_s=0.1,
                       sqlite=SqliteConfig(path=Path("ts.sqlite")),
                       state_path=Path("ingest-state.sqlite"), health_interval_s=0.5)
    svc = IngestService(SITE_A, tls.config(INGEST), cfg, base_dir=tmp_path)
    # the shared form is `$share/ingest/lingtan/v1/...`: the ACL has no $share lines, and
    # Mosquitto checks what it delivers against `read lingtan/v1/...`
    assert all(t.startswith("$share/ingest/lingtan/v1/") is (share_group is not None)
               for t in svc.consumer.subscriptions)
    reader = SqliteStore(tmp_path / "ts.sqlite")
    try:
        with client(tls.config(OBSERVER), "#") as observer, \
                client(tls.config(INGEST), "lingtan/v1/+/+/sample") as ingest_eye, \
                running(svc, connected=False), client(tls.config(EDGE)) as edge:
            _wait_subscribed(reader)
            assert reader.query("site-a", cfg.self_device, "ingest_messages_count")

            a0, b0, a1 = _sample("site-a", 0), _sample("site-b", 0), _sample("site-a", 1)
            assert not _publish_sample(edge, a0).is_failure
            refused = _publish_sample(edge, b0)
            assert refused.is_failure
            assert refused.getName() == "Not authorized"  # 0x87; the broker then disconnects
            # paho reconnects and sends a1 only now: b0 was settled (refused) before a1 left,
            # so once a1 is stored, anything b0 could have caused would have reached ingest.
            assert not _publish_sample(edge, a1).is_failure

            def stored_a() -> list[int]:
                return [seq for _, seq, _ in reader.query("site-a", "meter-1", "active_power_kw")]

            wait_until(lambda: stored_a() == [0, 1], WAIT_S, "site-a Samples 0 and 1 stored")
            wait_until(lambda: topics.sample("site-a", "meter-1") in ingest_eye.topics_seen(),
                       WAIT_S, "the ingest credential to receive site-a")
            time.sleep(SETTLE_S)

            assert reader.count_samples("site-b") == 0
            assert not [t for t in ingest_eye.topics_seen() if t.startswith("lingtan/v1/site-b/")]
            seen = observer.topics_seen()
            assert topics.sample("site-a", "meter-1") in seen  # the observer does see
            assert not [t for t in seen if t.startswith("lingtan/v1/site-b/")]
            assert sum(svc.stats.rejected.values()) == 0  # not even a dead letter from site-b
    finally:
        reader.close()


def test_ingest_publishes_dead_letters_under_the_shipped_acl(tmp_path: Path,
                                                             tls: TlsBroker) -> None:
    # Ingest acknowledges a batch only once the broker took its dead letters: were they refused,
    # ingest would be disconnected and never move on.
    cfg = IngestConfig(sites=["site-a"], batch_wait_s=0.1, health_interval_s=0.5,
                       sqlite=SqliteConfig(path=Path("ts.sqlite")),
                       state_path=Path("ingest-state.sqlite"))
    svc = IngestService(SITE_A, tls.config(INGEST), cfg, base_dir=tmp_path)
    reader = SqliteStore(tmp_path / "ts.sqlite")
    try:
        with client(tls.config(OBSERVER), "lingtan/v1/+/deadletter") as dead, \
                running(svc, connected=False), client(tls.config(EDGE)) as edge:
            _wait_subscribed(reader)
            assert not edge.publish(topics.sample("site-a", "meter-1"), b"{not json").is_failure
            wait_until(lambda: dead.topics_seen() == [topics.deadletter("site-a")], WAIT_S,
                       "ingest's dead letter")
            wait_until(lambda: sum(svc.stats.rejected.values()) == 1, WAIT_S,
                       "ingest to acknowledge the batch with the dead letter")
    finally:
        reader.close()


# (user, topic, may publish): what each shipped ACL block allows, and its nearest refusals.
PUBLISH_RIGHTS = [
    (EDGE, "lingtan/v1/site-a/meter-1/sample", True),
    (EDGE, "lingtan/v1/site-a/meter-1/status", True),
    (EDGE, "lingtan/v1/site-b/meter-1/sample", False),
    (EDGE, "lingtan/v1/site-b/meter-1/status", False),
    (EDGE, "lingtan/v1/site-a/derived", False),
    (EDGE, "lingtan/v1/site-a/alert", False),
    (EDGE, "lingtan/v1/site-a/deadletter", False),
    (EDGE, "lingtan/v2/site-a/meter-1/sample", False),
    (INGEST, "lingtan/v1/site-b/ingest-lingtan-ingest/sample", True),
    (INGEST, "lingtan/v1/site-b/deadletter", True),
    (INGEST, "lingtan/v1/site-b/derived", False),
    (INGEST, "lingtan/v1/site-b/alert", False),
    (RULES, "lingtan/v1/site-b/derived", True),
    (RULES, "lingtan/v1/site-b/alert", True),
    (RULES, "lingtan/v1/site-b/meter-1/sample", False),
    (OBSERVER, "lingtan/v1/site-a/meter-1/sample", False),
]


def test_each_user_publishes_only_what_the_shipped_acl_grants(tls: TlsBroker) -> None:
    end = ("lingtan/v1/site-b/alert", b"end")
    with client(tls.config(OBSERVER), "#") as observer:
        for user, topic, allowed in PUBLISH_RIGHTS:
            # a fresh connection each time: Mosquitto 2.0 disconnects after a refusal
            with client(tls.config(user)) as c:
                reason = c.publish(topic, f"{user} {topic}".encode())
            assert reason.is_failure is not allowed, (user, topic, str(reason))
            if not allowed:
                assert reason.getName() == "Not authorized", (user, topic)
        # Each publish above was acknowledged before the next was sent, and the broker queues a
        # message for the observer before it acknowledges it: once `end` is in, all are.
        with client(tls.config(RULES)) as c:
            assert not c.publish(*end).is_failure
        wait_until(lambda: end in observer.received(), WAIT_S, "the closing message")
        delivered = set(observer.received())
    for user, topic, allowed in PUBLISH_RIGHTS:
        assert ((topic, f"{user} {topic}".encode()) in delivered) is allowed, (user, topic)


def _connack(broker: BrokerConfig) -> ReasonCode:
    c = Client(broker)
    try:
        return c.start()
    finally:
        c.stop()


def test_an_edge_box_added_while_running_works_after_a_reload(tls: TlsBroker) -> None:
    # what deploy/mosquitto/README.md says to do: add-edge.sh, then `systemctl reload mosquitto`
    user = tls.add_edge("site-b", "7")
    assert _connack(tls.config(user)).getName() == "Not authorized"  # not before the reload
    tls.reload()
    wait_until(lambda: not _connack(tls.config(user)).is_failure, WAIT_S,
               f"{user} to be accepted after SIGHUP")
    with client(tls.config(user)) as c:
        assert not c.publish("lingtan/v1/site-b/meter-9/sample", b"{}").is_failure
    with client(tls.config(user)) as c:
        assert c.publish("lingtan/v1/site-a/meter-9/sample", b"{}").is_failure
    with client(tls.config(EDGE)) as c:  # the boxes added before are untouched
        assert not c.publish("lingtan/v1/site-a/meter-1/status", b"{}").is_failure


def test_wrong_password_and_anonymous_clients_are_refused(tmp_path: Path,
                                                          tls: TlsBroker) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    cases = {
        "wrong password": tls.config(EDGE, password_file=wrong),
        "unknown user": tls.config("edge-site-z-9", password_file=wrong),
        "anonymous over TLS": tls.config(None),
        "anonymous on the local listener": tls.config(None, tls=False),
    }
    for what, broker in cases.items():
        reason = _connack(broker)
        # Mosquitto 2.0 answers a bad password with 0x87, not 0x86 "Bad user name or password"
        assert reason.is_failure, what
        assert reason.getName() == "Not authorized", (what, str(reason))
    # the right password on the local listener is fine: credentials, not the port, decide
    with client(tls.config(INGEST, tls=False)):
        pass


def test_a_client_that_does_not_trust_our_ca_cannot_connect(tls: TlsBroker) -> None:
    c = Client(tls.config(EDGE, trust_ca=False))
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            c.start()
    finally:
        c.stop()
    assert c.connack is None


def test_shipped_config_keeps_every_queued_message_and_refuses_strangers() -> None:
    s = shipped_settings()
    assert s["max_queued_messages"] == ["0"]
    assert s["max_queued_bytes"] == ["0"]
    assert s["persistence"] == ["true"]
    assert s["allow_anonymous"] == ["false"]
    assert s["per_listener_settings"] == ["false"]
    assert s["tls_version"] == ["tlsv1.2"]
    # every listener but the loopback one speaks TLS (one cafile/certfile/keyfile each)
    plain = [v for v in s["listener"] if v.endswith(" 127.0.0.1")]
    assert len(s["listener"]) - len(plain) == len(s["certfile"]) == len(s["keyfile"])
