"""Delivery through apprise to real servers on loopback: aiosmtpd for mail, http.server for
webhooks; a hung or failing channel holds up nobody else; the outbox survives a restart."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from rules.alerts import Alerts, AlertsConfig, publish_events
from telemetry import topics
from telemetry.config import BrokerConfig
from tests.rules.alerts.helpers import POWER_RULE, SITE, T0, Clock, config, power
from tests.rules.alerts.servers import Http, Smtp, http_server, smtp_server
from tests.servers import wait_until

FAST_RETRY = {"attempts": 5, "initial_s": 0.01, "max_s": 0.05}


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    with smtp_server() as s:
        yield s


@pytest.fixture
def hook() -> Iterator[Http]:
    with http_server() as h:
        yield h


def _alerts(tmp_path: Path, cfg: AlertsConfig, clock: Clock) -> Alerts:
    return Alerts(SITE, cfg, base_dir=tmp_path, clock=clock, poll_s=0.2)


def _channels(monkeypatch: pytest.MonkeyPatch, **urls: str) -> dict[str, Any]:
    """Channels whose URLs are in the environment, as a real deployment has them."""
    for name, url in urls.items():
        monkeypatch.setenv(f"LT_TEST_{name.upper()}", url)
    return {n: {"url_env": f"LT_TEST_{n.upper()}", "timeout_s": 30} for n in urls}


def test_mail_carries_figure_threshold_site_local_time_and_link(
    tmp_path: Path, smtp: Smtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    chans = _channels(monkeypatch, mail=smtp.url())
    cfg = config(rules=[POWER_RULE | {"for": "5m"}], channels=chans,
                 grafana_url="https://grafana.example.com/d/lingtan-site/site")
    alerts = _alerts(tmp_path, cfg, clock)
    alerts.start()
    try:
        alerts.evaluate(power(230, clock()))
        clock.advance(5)
        alerts.evaluate(power(212.5, clock()))
        wait_until(lambda: len(smtp.messages) == 1, 10, "the firing mail")
        clock.advance(42)
        alerts.evaluate(power(150, clock()))
        wait_until(lambda: len(smtp.messages) == 2, 10, "the resolved mail")
    finally:
        alerts.close()
    firing, resolved = smtp.messages
    assert firing["Subject"] == (
        "[warning] Wuhan Fab 1: active_power_kw of compressor-1 above 200")
    assert firing["To"] == "energy@example.com"
    text = firing.get_content()
    assert "Now: 212.5 kW (threshold 200 kW)" in text
    assert "Site: Wuhan Fab 1 (wuhan-fab1)" in text
    assert "Since: 2025-06-02 10:05:00 CST (UTC+08:00)" in text
    fired_ms = T0 + 5 * 60_000
    assert ("Grafana: https://grafana.example.com/d/lingtan-site/site?var-site=wuhan-fab1"
            f"&from={fired_ms - 3_600_000}&to={fired_ms + 900_000}&viewPanel=12") in text
    assert resolved["Subject"] == (
        "[resolved] Wuhan Fab 1: active_power_kw of compressor-1 above 200")
    text = resolved.get_content()
    assert "Now: 150 kW (threshold 200 kW)" in text
    assert ("Resolved at: 2025-06-02 10:47:00 CST (UTC+08:00) "
            "(firing since 2025-06-02 10:05:00 CST (UTC+08:00))") in text


def test_json_and_form_webhooks_and_a_chat_plugin_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    with http_server() as hook, http_server() as ntfy:
        chans = _channels(
            monkeypatch,
            hook=hook.url("json", "/lingtan"),
            # DingTalk's own message shape, made with the generic JSON plugin's field mapping
            dingtalk_shape=hook.url("json", "/robot/send") + "?:msgtype=text&:message=content",
            form=hook.url("form", "/form"),
            # ntfy is a chat/push plugin whose host apprise lets us set (DingTalk, WeCom,
            # Feishu, Lark, Slack and Teams have theirs fixed in the plugin)
            ntfy=ntfy.url("ntfy", "/energy-managers"),
        )
        alerts = _alerts(tmp_path, config(rules=[POWER_RULE | {"for": 0}], channels=chans),
                         clock)
        alerts.start()
        try:
            alerts.evaluate(power(250, clock()))
            wait_until(lambda: len(hook.answered()) == 3 and len(ntfy.answered()) == 1, 10,
                       "the four channels")
        finally:
            alerts.close()
    by_path = {r.path.split("?")[0]: r for r in hook.answered()}
    body = json.loads(by_path["/lingtan"].body)
    assert body["title"] == "[warning] Wuhan Fab 1: active_power_kw of compressor-1 above 200"
    assert "Now: 250 kW (threshold 200 kW)" in body["message"]
    assert body["type"] == "warning"
    ding = json.loads(by_path["/robot/send"].body)
    assert ding["msgtype"] == "text"
    assert "Now: 250 kW (threshold 200 kW)" in ding["content"]
    form = parse_qs(by_path["/form"].body.decode())
    assert "Now: 250 kW (threshold 200 kW)" in form["message"][0]
    [pushed] = ntfy.answered()
    assert "Now: 250 kW" in pushed.body.decode()


def test_a_hung_channel_and_a_failing_one_delay_nobody(
    tmp_path: Path, smtp: Smtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    with http_server(hang=True) as hung, http_server(fail_first=2) as flaky, \
            http_server() as hook:
        chans = _channels(monkeypatch, hung=hung.url(), flaky=flaky.url(), hook=hook.url(),
                          mail=smtp.url())
        cfg = config(rules=[POWER_RULE | {"for": 0}], channels=chans, retry=FAST_RETRY)
        alerts = _alerts(tmp_path, cfg, clock)
        alerts.start()
        try:
            [fired] = alerts.evaluate(power(250, clock()))
            wait_until(hung.seen, 10, "the hung endpoint to get its request")
            # the engine is not held up: the resolve is queued while the hung request waits
            clock.advance(10)
            [resolved] = alerts.evaluate(power(100, clock()))
            wait_until(lambda: len(hook.answered()) == 2 and len(smtp.messages) == 2, 10,
                       "the healthy channels to get firing and resolved")
            wait_until(lambda: len(flaky.answered()) == 2, 10,
                       "the failing channel to get through after its retries")
            assert hung.answered() == []  # everything above happened while it hung
            hung.hold.set()
            wait_until(lambda: len(hung.answered()) == 2, 10, "the hung channel to catch up")
        finally:
            alerts.close()
    assert [fired.kind, resolved.kind] == ["firing", "resolved"]
    assert len(flaky.seen()) == 4  # two 500s, then firing and resolved
    titles = [json.loads(r.body)["title"] for r in hung.answered()]
    assert [t.split("]")[0] for t in titles] == ["[warning", "[resolved"]


def test_retries_are_recorded_in_the_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    with http_server(fail_first=2) as flaky, http_server(fail_first=100) as dead:
        chans = _channels(monkeypatch, flaky=flaky.url(), dead=dead.url())
        retry = FAST_RETRY | {"attempts": 3}
        cfg = config(rules=[POWER_RULE | {"for": 0}], channels=chans, retry=retry)
        alerts = _alerts(tmp_path, cfg, clock)
        alerts.start()
        try:
            alerts.evaluate(power(250, clock()))
            wait_until(lambda: {r["state"] for r in alerts.store.outbox()} == {"sent", "failed"},
                       10, "one message sent and one given up")
            outbox = {str(r["channel"]): r for r in alerts.store.outbox()}
        finally:
            alerts.close()
    assert (outbox["flaky"]["state"], outbox["flaky"]["attempts"]) == ("sent", 3)
    assert (outbox["dead"]["state"], outbox["dead"]["attempts"]) == ("failed", 3)
    assert "500" in str(outbox["dead"]["last_error"])
    assert len(dead.seen()) == 3


def test_an_unsent_message_survives_a_restart_and_is_sent_once(
    tmp_path: Path, hook: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    cfg = config(rules=[POWER_RULE | {"for": 0}], channels=_channels(monkeypatch, hook=hook.url()))
    first = _alerts(tmp_path, cfg, clock)  # never started: it dies before delivering
    assert [e.kind for e in first.evaluate(power(250, clock()))] == ["firing"]
    first.close()
    second = _alerts(tmp_path, cfg, clock)
    second.start()
    try:
        clock.advance(1)
        assert second.evaluate(power(260, clock())) == []  # still firing: nothing new
        wait_until(lambda: len(hook.answered()) == 1, 10, "the message left by the first run")
        clock.advance(1)
        assert [e.kind for e in second.evaluate(power(100, clock()))] == ["resolved"]
        wait_until(lambda: len(hook.answered()) == 2, 10, "the resolve")
        # nothing more is coming: the outbox is empty
        assert {r["state"] for r in second.store.outbox()} == {"sent"}
    finally:
        second.close()
    assert [json.loads(r.body)["title"].split("]")[0] for r in hook.answered()] == [
        "[warning", "[resolved"]


@pytest.mark.integration
def test_events_are_published_on_the_alert_topic(tmp_path: Path, broker: BrokerConfig) -> None:
    clock = Clock()
    cfg = config(rules=[POWER_RULE | {"for": 0}], channel_names=[])
    alerts = _alerts(tmp_path, cfg, clock)
    got: list[dict[str, Any]] = []
    acked: list[int] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="alert-sub")
    sub.on_message = lambda _c, _u, m: got.append(orjson.loads(m.payload))
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect(broker.host, broker.port)
    sub.subscribe(topics.alert(SITE.id), qos=1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="alert-pub")
    pub.on_publish = lambda _c, _u, mid, _rc, _p: acked.append(mid)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        wait_until(subscribed.is_set, 10, "the subscription")
        mids = publish_events(pub, SITE.id, alerts.evaluate(power(250, clock())))
        assert [e.kind for e in alerts.unpublished()] == ["firing"]
        wait_until(lambda: set(mids) <= set(acked), 10, "the broker's PUBACK")
        alerts.mark_published([mids[m] for m in acked if m in mids])
        assert alerts.unpublished() == []
        wait_until(lambda: len(got) == 1, 10, "the event on the alert topic")
    finally:
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()
        alerts.close()
    [event] = got
    assert event["kind"] == "firing"
    assert event["site"] == "wuhan-fab1"
    assert event["key"] == "compressor-power{device=compressor-1,quantity=active_power_kw}"
    assert (event["value"], event["threshold"], event["unit"]) == (250, 200, "kW")
    assert event["time_local"] == "2025-06-02T10:00:00+08:00"
    assert event["channels"] == []
