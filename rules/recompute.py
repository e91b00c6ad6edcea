"""Recompute past emissions when a factor is revised, keeping the previous result.

Emission rows are a function of the activity data in the ledger (what each meter measured per
interval) and the factor library. After a factor file changes (a new vintage, a corrected
value), `recompute` books every row from a date again with the library as it is now. Rows
whose figure or factors changed are replaced; each replaced row's previous figure and factor
ids are kept in `revision_change`, and the period's totals before and after in `revision`,
so a figure once reported stays auditable.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from rules.accounts import Accounts
from rules.engine import Engine
from rules.ledger import EmissionRow

_Key = tuple[int, str, str, str, str]  # start, source, scope, method, gas


def _key(r: EmissionRow) -> _Key:
    return (r.start_ms, r.source, r.scope, r.method, r.gas)


def _same(a: EmissionRow, b: EmissionRow) -> bool:
    # rows booked reading by reading and recomputed from the interval's sum differ in the last
    # bits of a float; that is not a change
    return a.factor_ids == b.factor_ids and abs(a.kgco2e - b.kgco2e) <= 1e-9 * max(
        1.0, abs(a.kgco2e)
    )


@dataclass(frozen=True)
class Revision:
    """What a recomputation changed."""

    id: int | None  # None: nothing changed, nothing recorded
    rows_changed: int
    before: dict[str, Any]
    after: dict[str, Any]


def _totals(engine: Engine, from_ms: int) -> dict[str, Any]:
    p = Accounts(engine).period(from_ms)
    return {
        k: p[k]
        for k in (
            "scope1_kgco2e",
            "scope2_location_kgco2e",
            "scope2_market_kgco2e",
            "biogenic_co2_kg",
        )
    } | {"factors": [f["id"] for f in p["factors"]]}


def recompute(engine: Engine, from_ms: int, reason: str, now_ms: int) -> Revision:
    """Book the emissions of intervals from `from_ms` again with the current factor library."""
    if not reason.strip():
        raise ValueError("a recomputation needs a reason (it is kept with the revision)")
    site, ledger = engine.site.id, engine.ledger
    engine.clear_caches()
    new: dict[_Key, EmissionRow] = {}
    for device, _, start, amount, _, _ in ledger.meter_amounts(site, from_ms):
        meter = engine.meters.get(device)
        if meter is None:
            continue  # a meter no longer in the config keeps the rows it had
        for row in engine.emission_rows(meter, start, amount):
            new[_key(row)] = row
    for row in engine.manual_rows().values():
        if row.start_ms >= from_ms:
            new[_key(row)] = row
    kept_sources = {m for m in engine.meters} | {r.id for r in engine.cfg.refrigerants}
    old = {_key(r): r for r in ledger.emissions(site, from_ms) if r.source in kept_sources}
    changed = sorted(
        k
        for k in old.keys() | new.keys()
        if k not in old or k not in new or not _same(old[k], new[k])
    )
    with ledger.transaction():
        before = _totals(engine, from_ms)
        if not changed:
            return Revision(None, 0, before, before)
        groups: dict[tuple[int, str], list[EmissionRow]] = defaultdict(list)
        for k, row in new.items():
            groups[(k[0], k[1])].append(row)
        touched = {(k[0], k[1]) for k in changed}
        for start, source in sorted(touched):
            ledger.replace_emissions(site, start, source, groups.get((start, source), []))
        for start in sorted({s for s, src in touched if src in engine.meters}):
            rows = [
                r
                for (s, src), rs in groups.items()
                if s == start
                for r in rs
                if r.category == "electricity"
            ]
            if rows:
                ids = ";".join(sorted({r.factor_ids for r in rows}))
                ledger.set_site_location(site, start, sum(r.kgco2e for r in rows), ids)
        after = _totals(engine, from_ms)
        rev = ledger.add_revision(
            site,
            now_ms,
            from_ms,
            reason,
            orjson.dumps(before).decode(),
            orjson.dumps(after).decode(),
        )
        for k in changed:
            ledger.add_revision_change(rev, old.get(k), new.get(k))
    return Revision(rev, len(changed), before, after)
