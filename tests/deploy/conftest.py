"""Tests marked `long` run only when asked: LINGTAN_TEST_LONG=1 (what `make test-long` sets)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("LINGTAN_TEST_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="long: run with `make test-long` (LINGTAN_TEST_LONG=1)")
    for item in items:
        if item.get_closest_marker("long"):
            item.add_marker(skip)
