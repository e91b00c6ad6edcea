"""Wire codec throughput: lingtan's encode/decode against the plain stdlib-json way, same run.

Prints Samples per second and the ratio to the baseline (a ratio survives a noisy machine).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from telemetry.sample import Sample, decode, encode

BATCH = 50
ROUNDS = 400


def _samples() -> list[Sample]:
    return [Sample(site="wuhan-fab1", device=f"meter-{i:03d}", seq=10_000 + i,
                   ts=1_764_000_000_000 + i,
                   values={"active_power_kw": 812.5 + i, "energy_import_kwh": 48210.25 + i,
                           "voltage_l1_v": 230.1, "voltage_l2_v": 231.0, "voltage_l3_v": 229.4,
                           "current_l1_a": 1225.0, "current_l2_a": 1240.5,
                           "current_l3_a": 1210.0, "power_factor": 0.96,
                           "frequency_hz": 50.01}) for i in range(BATCH)]


def _rate(fn: Callable[[], object]) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(ROUNDS):
            fn()
        best = min(best, time.perf_counter() - t)
    return BATCH * ROUNDS / best


def main() -> None:
    samples = _samples()
    payload = encode(samples)
    baseline_payload = json.dumps([s.model_dump(mode="json") for s in samples]).encode()
    rows = [
        ("encode", _rate(lambda: encode(samples)),
         _rate(lambda: json.dumps([s.model_dump(mode="json") for s in samples]).encode())),
        ("decode + validate", _rate(lambda: decode(payload)),
         _rate(lambda: [Sample.model_validate(d) for d in json.loads(baseline_payload)])),
    ]
    print(f"wire codec, {BATCH} Samples of 10 values per message, best of 3 x {ROUNDS} messages")
    print(f"{'operation':<20}{'lingtan /s':>14}{'baseline /s':>14}{'ratio':>8}")
    for name, ours, base in rows:
        print(f"{name:<20}{ours:>14,.0f}{base:>14,.0f}{ours / base:>8.2f}")
    print("baseline: stdlib json + pydantic model_dump / model_validate per Sample")


if __name__ == "__main__":
    main()
