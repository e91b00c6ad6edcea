"""Hostile input: fuzzed decoders and loaders, hostile MQTT traffic, secrets kept out of sight.

The fuzz tests run a few thousand cases in the default suite; `make test-long` sets
LINGTAN_FUZZ_SCALE=10 for ten times as many.
"""

from __future__ import annotations

import os

SCALE = float(os.environ.get("LINGTAN_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    """`n` hypothesis examples, scaled by LINGTAN_FUZZ_SCALE."""
    return max(1, int(n * SCALE))
