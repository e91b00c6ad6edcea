"""Devices that publish JSON: declarative mapping, bad payloads counted, through the outbox."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from collectors.agent import EdgeAgent
from collectors.config import EdgeConfig
from collectors.mqtt_devices import MqttDeviceConfig, MqttDeviceListener, PayloadError, extract
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.sample import decode
from tests.mqtt_helpers import collect, publish
from tests.servers import wait_until

# A Shelly Plus 1PM's status/switch:0 message (Gen2 API: apower in W, aenergy.total in Wh).
SHELLY = {"id": 0, "source": "timer", "output": True, "apower": 8.9, "voltage": 237.5,
          "current": 0.068, "aenergy": {"total": 6532.25, "by_minute": [45.2, 47.1, 88.4],
                                        "minute_ts": 1654511972},
          "temperature": {"tC": 23.5, "tF": 74.4}}
SHELLY_MAP = MqttDeviceConfig.model_validate({
    "id": "hvac-plug", "topic": "shellyplus1pm-a8032ab12345/status/switch:0",
    "fields": [{"path": "apower", "quantity": "active_power_kw", "scale": 0.001},
               {"path": "voltage", "quantity": "voltage_l1_v"},
               {"path": "current", "quantity": "current_l1_a"},
               {"path": "aenergy.total", "quantity": "energy_import_kwh", "scale": 0.001},
               {"path": "temperature.tC", "quantity": "temperature_c"}],
    "timestamp": {"path": "aenergy.minute_ts", "format": "epoch_s"}})

# A Tasmota tele/<topic>/SENSOR message: local time without a zone, Total in kWh, Power in W.
TASMOTA = {"Time": "2026-11-25T10:15:00", "ENERGY": {"Total": 1234.567, "Today": 3.2,
                                                       "Power": 1450, "Voltage": 229,
                                                       "Current": 6.33, "Factor": 0.98}}
TASMOTA_MAP = MqttDeviceConfig.model_validate({
    "id": "compressor", "topic": "tele/compressor/SENSOR",
    "fields": [{"path": "ENERGY.Total", "quantity": "energy_import_kwh"},
               {"path": "ENERGY.Power", "quantity": "active_power_kw", "scale": 0.001},
               {"path": "ENERGY.Factor", "quantity": "power_factor"}],
    "timestamp": {"path": "Time", "format": "iso"}})


def test_shelly_payload() -> None:
    ts, values = extract(orjson.dumps(SHELLY), SHELLY_MAP, "Asia/Shanghai", 0)
    assert ts == 1654511972000
    assert values == {"active_power_kw": 0.0089, "voltage_l1_v": 237.5, "current_l1_a": 0.068,
                      "energy_import_kwh": 6.53225, "temperature_c": 23.5}


def test_tasmota_local_time_is_read_in_the_site_zone() -> None:
    ts, values = extract(orjson.dumps(TASMOTA), TASMOTA_MAP, "Asia/Shanghai", 0)
    assert ts == 1795572900000  # 2026-11-25 10:15 in Shanghai is 02:15 UTC
    assert values == {"energy_import_kwh": 1234.567, "active_power_kw": 1.45,
                      "power_factor": 0.98}


def test_receive_time_when_the_payload_has_none() -> None:
    dev = SHELLY_MAP.model_copy(update={"timestamp": None})
    assert extract(orjson.dumps(SHELLY), dev, "UTC", 1234)[0] == 1234


def test_a_partial_message_keeps_what_it_has() -> None:
    _, values = extract(b'{"apower": 12.5}', SHELLY_MAP.model_copy(update={"timestamp": None}),
                        "UTC", 0)
    assert values == {"active_power_kw": 0.0125}


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{oops", "not JSON"),
    (b'{"apower": "12"}', r"apower='12': not a number"),
    (b'{"apower": true}', "apower=True: not a number"),
    (b'{"status": "ok"}', r"none of \['apower'"),
    (b'{"apower": 1, "aenergy": {"minute_ts": "soon"}}', "aenergy.minute_ts='soon': not an epoch"),
])
def test_payloads_that_do_not_fit_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        extract(payload, SHELLY_MAP, "UTC", 0)


@pytest.mark.parametrize(("change", "reason"), [
    ({"topic": "shellies/+/status"}, "without wildcards"),
    ({"fields": [{"path": "a..b", "quantity": "active_power_kw"}]}, "not a dotted path"),
    ({"fields": [{"path": "a", "quantity": "power_w"}]}, "not in the vocabulary"),
    ({"fields": [{"path": "a", "quantity": "active_power_kw"},
                 {"path": "b", "quantity": "active_power_kw"}]}, "mapped twice"),
])
def test_mappings_are_validated(change: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        MqttDeviceConfig.model_validate({**SHELLY_MAP.model_dump(), **change})


def test_device_ids_are_unique_across_modbus_and_mqtt() -> None:
    with pytest.raises(ValidationError, match=r"mqtt.devices\[0\]: device id 'e1' is the agent"):
        EdgeConfig.model_validate({"agent_id": "e1", "mqtt": {"devices": [
            {**SHELLY_MAP.model_dump(), "id": "e1"}]}})



def test_two_mqtt_devices_cannot_share_a_topic() -> None:
    with pytest.raises(ValidationError, match=(
            rf"mqtt.devices\[1\] \(plug-2\): topic '{SHELLY_MAP.topic}' is also plug-1's")):
        EdgeConfig.model_validate({"mqtt": {"devices": [
            {**SHELLY_MAP.model_dump(), "id": "plug-1"},
            {**SHELLY_MAP.model_dump(), "id": "plug-2"}]}})


def test_devices_on_one_line_or_gateway_share_its_settings() -> None:
    def rtu(dev_id: str, unit: int, **line: object) -> dict[str, object]:
        return {"id": dev_id, "profile": "eastron-sdm630", "unit_id": unit,
                "transport": {"type": "serial", "device": "/dev/ttyUSB0", **line}}

    ok = EdgeConfig.model_validate({"devices": [
        rtu("m1", 1, baudrate=19200), rtu("m2", 2, baudrate=19200),
        {**rtu("m3", 1), "transport": {"type": "serial", "device": "/dev/ttyUSB1"}}]})
    assert len(ok.devices) == 3  # another line may have other settings
    with pytest.raises(ValidationError, match=(
            r"devices\[1\] \(m2\): serial line /dev/ttyUSB0 is shared with m1, but baudrate "
            r"9600 where m1 has 19200, parity E where m1 has N: the devices on one connection")):
        EdgeConfig.model_validate({"devices": [rtu("m1", 1, baudrate=19200),
                                               rtu("m2", 2, parity="E")]})
    gateway = {"type": "rtu-over-tcp", "host": "10.0.0.9", "port": 4196}
    with pytest.raises(ValidationError, match=(
            r"devices\[1\] \(m2\): rtu-over-tcp://10.0.0.9:4196 is shared with m1, but "
            r"timeout_s 5.0 where m1 has 2.0")):
        EdgeConfig.model_validate({"devices": [
            {"id": "m1", "profile": "eastron-sdm630", "transport": gateway},
            {"id": "m2", "profile": "eastron-sdm630", "unit_id": 2, "transport": gateway,
             "timeout_s": 5}]})


@pytest.mark.integration
def test_a_reading_sent_again_is_not_a_new_reading(broker: BrokerConfig) -> None:
    # the broker resends a device's retained message on every reconnect, and some devices
    # repeat a publish: the same time and values are the reading already taken
    got: list[tuple[int, dict[str, float]]] = []
    listener = MqttDeviceListener(
        broker, "t-devices", [SHELLY_MAP], tz="Asia/Shanghai", dispatch=lambda f: f(),
        on_reading=lambda _d, ts, v: got.append((ts, v)), on_error=lambda _d, r: None)
    publish(broker, [(SHELLY_MAP.topic, orjson.dumps(SHELLY))], retain=True)
    listener.start()
    try:
        wait_until(lambda: len(got) == 1, 10, "the retained reading")
        listener.client.reconnect()  # as after a network blip: the retained copy again
        wait_until(lambda: listener.repeats == 1, 10, "the retained copy after reconnecting")
        publish(broker, [(SHELLY_MAP.topic, orjson.dumps(SHELLY)),
                         (SHELLY_MAP.topic, orjson.dumps({**SHELLY, "apower": 20.0}))])
        wait_until(lambda: len(got) == 2, 10, "the new reading")
    finally:
        listener.stop()
    assert listener.repeats == 2
    assert [v["active_power_kw"] for _, v in got] == [0.0089, 0.02]


@pytest.mark.integration
async def test_mqtt_devices_go_through_the_outbox(tmp_path: Path, broker: BrokerConfig) -> None:
    edge = EdgeConfig.model_validate({
        "agent_id": "e1", "state_dir": str(tmp_path / "edge"), "health_interval_s": 0,
        "mqtt": {"devices": [SHELLY_MAP.model_dump(),
                             {**TASMOTA_MAP.model_dump(), "offline_after_s": 1.0}]}})
    agent = EdgeAgent(SiteInfo(id="s1", timezone="Asia/Shanghai"), broker, edge)
    stop = asyncio.Event()
    with collect(broker, "lingtan/v1/s1/#") as got:
        task = asyncio.create_task(agent.run(stop))
        try:
            await asyncio.sleep(1.0)  # let the agent connect and its listener subscribe
            publish(broker, [
                (SHELLY_MAP.topic, orjson.dumps(SHELLY)),
                (SHELLY_MAP.topic, b"{garbage"),
                (SHELLY_MAP.topic, orjson.dumps({**SHELLY, "apower": 20.0})),
                (TASMOTA_MAP.topic, orjson.dumps(TASMOTA)),
            ])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (
                    agent.health["compressor"].online is False
                    and len([p for t, p in got.messages if t.endswith("/sample")]) >= 3):
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    samples = [s for t, p in got.messages if t.endswith("/sample") for s in decode(p)]
    plug = [s for s in samples if s.device == "hvac-plug"]
    assert [s.seq for s in plug] == [0, 1]
    assert [s.values["active_power_kw"] for s in plug] == [0.0089, 0.02]
    assert [s.device for s in samples if s.device == "compressor"] == ["compressor"]
    h = agent.health["hvac-plug"]
    assert (h.ok, h.failures) == (2, 1)
    assert "not JSON" in h.last_error
    statuses = [(t.split("/")[3], orjson.loads(p)["state"]) for t, p in got.messages
                if t.endswith("/status")]
    assert ("compressor", "offline") in statuses  # silent for longer than 1 s
