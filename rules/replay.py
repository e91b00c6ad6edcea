"""Replay: the live engine run over recorded Samples, for backfill and audit.

Input is JSON lines in the wire format (one Sample, or a list, per line), or a CSV export with
one value per row (`site,device,seq,ts,quantity,value[,quality]`, the shape of the embedded
store's tables joined; rows of one Sample next to each other). Samples are applied
in time order; the ledger dedupes on (site, device, seq) through each meter's baseline, so
replaying a file in pieces, in order, gives the same ledger as replaying it in one go.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rules.accounts import Accounts
from rules.engine import Engine
from telemetry.sample import Sample, WireError, decode


class ReplayError(ValueError):
    """A line of the input that is not Samples; names the file and line."""


CSV_HEADER = ["site", "device", "seq", "ts", "quantity", "value"]


def read_samples(path: Path) -> Iterator[Sample]:
    """Samples from a JSON-lines or CSV file, each checked as ingest checks a message."""
    if path.suffix.lower() == ".csv":
        yield from _read_csv(path)
        return
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield from decode(raw)
            except WireError as exc:
                raise ReplayError(f"{path}:{n}: {exc}") from None


def _read_csv(path: Path) -> Iterator[Sample]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or header[:6] != CSV_HEADER or len(header) > 7:
            raise ReplayError(f"{path}:1: the header must be {','.join(CSV_HEADER)}[,quality]")
        key: tuple[str, ...] | None = None
        values: dict[str, float] = {}
        first = 2
        for n, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ReplayError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
            this = (row[0], row[1], row[2], row[3], *row[6:])
            if this != key and key is not None:
                yield _csv_sample(path, first, key, values)
                values = {}
            if this != key:
                key, first = this, n
            try:
                value = float(row[5])
            except ValueError:
                raise ReplayError(f"{path}:{n}: value {row[5]!r} is not a number") from None
            if not math.isfinite(value):
                raise ReplayError(f"{path}:{n}: value {row[5]!r} is not a finite number")
            if row[4] in values:
                raise ReplayError(f"{path}:{n}: {row[4]} given twice for one Sample")
            values[row[4]] = value
        if key is not None:
            yield _csv_sample(path, first, key, values)


def _csv_sample(path: Path, line: int, key: tuple[str, ...], values: dict[str, float]) -> Sample:
    try:
        fields: dict[str, Any] = {
            "site": key[0],
            "device": key[1],
            "seq": int(key[2]),
            "ts": int(key[3]),
            "values": values,
        }
        if len(key) > 4:
            fields["quality"] = key[4]
        return Sample.model_validate(fields)
    except ValueError as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ReplayError(f"{path}:{line}: {detail}") from None


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
