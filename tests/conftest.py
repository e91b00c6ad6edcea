"""Fixtures: real servers on loopback, fresh per test; `long` tests only when asked."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemetry.config import BrokerConfig
from tests import servers


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[servers.Server]:
    """A Mosquitto 2 broker of this test's own."""
    with servers.mosquitto(tmp_path) as server:
        yield server


@pytest.fixture
def broker(mosquitto: servers.Server) -> BrokerConfig:
    """Config for the test's Mosquitto, over MQTT 5."""
    return BrokerConfig(url=f"mqtt://127.0.0.1:{mosquitto.port}", protocol="5")


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[servers.VictoriaMetrics]:
    """A VictoriaMetrics of this test's own."""
    with servers.victoria_metrics(tmp_path) as vm:
        yield vm


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `long` run only with LINGTAN_TEST_LONG=1 (what `make test-long` sets),
    however pytest was invoked (`-m integration` included); otherwise they are deselected, and
    pytest's summary counts them as such."""
    if os.environ.get("LINGTAN_TEST_LONG") == "1":
        return
    long = [item for item in items if item.get_closest_marker("long")]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if not item.get_closest_marker("long")]
