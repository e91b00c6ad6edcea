"""The quantity vocabulary and the topic helpers."""

from __future__ import annotations

import pytest

from telemetry import topics
from telemetry.quantities import QuantityKind, Vocabulary, vocabulary
from telemetry.topics import Topic, TopicKind

CORE = ["active_power_kw", "reactive_power_kvar", "apparent_power_kva", "power_factor",
        "frequency_hz", "voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a",
        "current_l2_a", "current_l3_a", "energy_import_kwh", "energy_export_kwh", "gas_volume_m3",
        "fuel_volume_l", "heat_energy_kwh", "water_volume_m3", "temperature_c", "pressure_kpa"]


def test_core_names_of_design_are_all_there() -> None:
    v = vocabulary()
    assert [n for n in CORE if n not in v] == []


def test_counters_and_gauges() -> None:
    v = vocabulary()
    counters = {n for n in v.names() if v[n].kind is QuantityKind.COUNTER}
    energy = {n for n in counters if not n.startswith(("poll_", "outbox_", "ingest_"))}
    assert energy == {"energy_import_kwh", "energy_export_kwh", "reactive_energy_import_kvarh",
                      "reactive_energy_export_kvarh", "gas_volume_m3", "fuel_volume_l",
                      "fuel_mass_kg", "heat_energy_kwh", "water_volume_m3"}
    assert v["active_power_kw"].unit == "kW"
    assert v["power_factor"].unit == "1"


def test_unknown_quantity_lists_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown quantity 'power_w'.*active_power_kw"):
        vocabulary()["power_w"]


@pytest.mark.parametrize(("entry", "expected"), [
    ("{name: power_w, unit: kW, kind: gauge, description: x}", "must end in '_kw'"),
    ("{name: power_kw, unit: MW, kind: gauge, description: x}", "unit 'MW' is not one of"),
    ("{name: power_kw, unit: kW, kind: rate, description: x}", "kind"),
])
def test_vocabulary_entries_are_checked(entry: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        Vocabulary.from_yaml(f"quantities:\n  - {entry}\n")


def test_a_name_defined_twice_is_refused() -> None:
    e = "{name: power_kw, unit: kW, kind: gauge, description: x}"
    with pytest.raises(ValueError, match="defined twice"):
        Vocabulary.from_yaml(f"quantities:\n  - {e}\n  - {e}\n")


def test_topics_of_the_wire_format() -> None:
    assert topics.sample("s1", "m1") == "lingtan/v1/s1/m1/sample"
    assert topics.status("s1", "m1") == "lingtan/v1/s1/m1/status"
    assert topics.derived("s1") == "lingtan/v1/s1/derived"
    assert topics.alert("s1") == "lingtan/v1/s1/alert"
    assert topics.deadletter("s1") == "lingtan/v1/s1/deadletter"
    assert topics.all_samples() == "lingtan/v1/+/+/sample"


def test_topics_parse_back() -> None:
    assert Topic.parse("lingtan/v1/s1/m1/sample") == Topic("s1", TopicKind.SAMPLE, "m1")
    assert Topic.parse("lingtan/v1/s1/derived") == Topic("s1", TopicKind.DERIVED)


@pytest.mark.parametrize(("topic", "expected"), [
    ("lingtan/v2/s1/m1/sample", "not under"),
    ("lingtan/v1/s1/m1/samples", "unknown kind"),
    ("lingtan/v1/s1/derived/x", "unknown kind"),
    ("lingtan/v1/s1/m1/derived", "no device level"),
    ("lingtan/v1/s1/sample", "need a device level"),
    ("lingtan/v1/s 1/m1/sample", "site 's 1' is not a valid identifier"),
])
def test_bad_topics_say_why(topic: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        Topic.parse(topic)


def test_wildcards_cannot_be_smuggled_into_a_topic() -> None:
    with pytest.raises(ValueError, match="device '#'"):
        topics.sample("s1", "#")
