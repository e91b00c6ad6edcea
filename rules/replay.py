"""Replay: the live engine run over recorded Samples, for backfill and audit.

Input is JSON lines in the wire format (one Sample, or a list, per line). Samples are applied
in time order; the ledger dedupes on (site, device, seq) through each meter's baseline, so
replaying a file in pieces, in order, gives the same ledger as replaying it in one go.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rules.accounts import Accounts
from rules.engine import Engine
from telemetry.sample import Sample, WireError, decode


class ReplayError(ValueError):
    """A line of the input that is not Samples; names the file and line."""


def read_samples(path: Path) -> Iterator[Sample]:
    """Samples from a JSON-lines file, each line checked as ingest checks a message."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield from decode(raw)
            except WireError as exc:
                raise ReplayError(f"{path}:{n}: {exc}") from None


def replay(engine: Engine, samples: Iterable[Sample], *, chunk: int = 10_000) -> int:
    """Apply Samples in time order (per chunk of `chunk`); return how many were accounted."""
    applied = 0
    batch: list[Sample] = []

    def flush() -> None:
        nonlocal applied
        batch.sort(key=lambda s: (s.ts, s.device, s.seq))
        with engine.ledger.transaction():
            applied += sum(engine.apply(s) for s in batch)
        batch.clear()

    for s in samples:
        batch.append(s)
        if len(batch) >= chunk:
            flush()
    flush()
    return applied


def summary(
    engine: Engine, start_ms: int = 0, end_ms: int = 2**62, grid_cfe: dict[int, float] | None = None
) -> dict[str, Any]:
    """The period's figures from the ledger (rules/accounts.py)."""
    return Accounts(engine, grid_cfe).period(start_ms, end_ms)
