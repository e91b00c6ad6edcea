"""Market-based allocation: the GHG Protocol hierarchy, no volume used twice, final hour by hour."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.factors import Factor, FactorKind
from rules.market import HOUR_MS, PPA, Certificate, HourFlow, Instruments, allocate, cfe

RESIDUAL = Factor(
    id="test-residual",
    kind=FactorKind.RESIDUAL_MIX,
    value=0.5,
    unit="kgCO2/kWh",
    gases=["CO2"],
    region="XX",
    year=2026,
    valid_from=date(2026, 1, 1),
    source="a residual mix written for this test",
    publisher="test",
    published=date(2026, 1, 1),
)
H0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)


def _cert(cid: str, mwh: float, hour: int | None = None, **kw: object) -> Certificate:
    args: dict[str, object] = {
        "id": cid,
        "scheme": "GO",
        "volume_mwh": mwh,
        "technology": "wind",
        "vintage": 2026,
        "generation_from": date(2026, 1, 1),
        "generation_to": date(2026, 12, 31),
    }
    if hour is not None:
        args["hour"] = datetime.fromtimestamp((H0 + hour * HOUR_MS) / 1000, UTC)
    return Certificate.model_validate(args | kw)


def _hours(imports: list[float]) -> list[HourFlow]:
    return [HourFlow(H0 + i * HOUR_MS, kwh, kwh, 0.0) for i, kwh in enumerate(imports)]


def test_hour_instruments_first_then_pools_then_the_residual_mix() -> None:
    inst = Instruments(
        certificates=[_cert("annual", 0.15), _cert("granular-h1", 0.05, hour=1)],
        ppas=[PPA(id="ppa", technology="solar", meter="ppa-meter")],
    )
    ppa = {"ppa": {H0 + 2 * HOUR_MS: 80.0}}
    a = allocate(_hours([100, 100, 100, 100]), inst, ppa, lambda _h: RESIDUAL, "UTC")
    # hour 0: the annual pool covers 100 (50 left); hour 1: the granular 50 first, then the
    # pool's last 50; hour 2: the PPA's 80, 20 at the residual mix; hour 3: all residual
    assert [h.covered for h in a.hours] == [
        {"annual": 100},
        {"granular-h1": 50, "annual": 50},
        {"ppa": 80},
        {},
    ]
    assert [h.residual_kwh for h in a.hours] == [0, 0, 20, 100]
    assert [h.market_kgco2e for h in a.hours] == [0, 0, 10, 50]
    # only what is delivered within the hour is clean supply for CFE
    assert [h.hourly_clean_kwh for h in a.hours] == [0, 50, 80, 0]


def test_a_ppa_hours_surplus_serves_later_hours_not_earlier_ones() -> None:
    inst = Instruments(ppas=[PPA(id="ppa", technology="solar", meter="m")])
    a = allocate(
        _hours([10, 10, 10]), inst, {"ppa": {H0 + HOUR_MS: 25.0}}, lambda _h: RESIDUAL, "UTC"
    )
    assert [h.residual_kwh for h in a.hours] == [10, 0, 0]
    assert a.hours[2].covered == {"ppa": 10}
    left = next(p for p in a.pools if p.instrument == "ppa")
    assert left.volume_kwh - left.used_kwh == pytest.approx(5)


def test_monthly_ppa_volumes_and_a_certificate_outside_its_window() -> None:
    inst = Instruments(
        certificates=[
            _cert("next-year", 1, covers_from=date(2027, 1, 1), covers_to=date(2027, 12, 31))
        ],
        ppas=[PPA(id="vppa", technology="wind", monthly_mwh={"2026-01": 0.03})],
    )
    a = allocate(_hours([20, 20]), inst, {}, lambda _h: RESIDUAL, "UTC")
    assert [h.covered for h in a.hours] == [{"vppa/2026-01": 20}, {"vppa/2026-01": 10}]
    assert a.hours[1].residual_kwh == 10


def test_a_monthly_ppa_volume_covers_its_own_month_only() -> None:
    # 30 kWh delivered in January; 20 kWh used on 31 January 23:00 (UTC), 20 kWh on 1 February
    # 00:00: January's delivery covers its 20 kWh, the 10 kWh left do not move to February
    inst = Instruments(
        ppas=[PPA(id="vppa", technology="wind", monthly_mwh={"2026-01": 0.03, "2026-02": 0.005})]
    )
    jan31_23h = int(datetime(2026, 1, 31, 23, tzinfo=UTC).timestamp() * 1000)
    hours = [HourFlow(jan31_23h + i * HOUR_MS, 20.0, 20.0, 0.0) for i in range(2)]
    a = allocate(hours, inst, {}, lambda _h: RESIDUAL, "UTC")
    assert [h.covered for h in a.hours] == [{"vppa/2026-01": 20}, {"vppa/2026-02": 5}]
    assert [h.residual_kwh for h in a.hours] == [0, 15]
    jan = next(p for p in a.pools if p.instrument == "vppa/2026-01")
    assert jan.volume_kwh - jan.used_kwh == pytest.approx(10)  # reported as left over


def test_bad_instruments_are_refused_with_the_instrument_named() -> None:
    with pytest.raises(ValueError, match="certificate c1: vintage 2025 is outside"):
        _cert("c1", 1, vintage=2025)
    with pytest.raises(ValueError, match="ppa p: give either `meter` or `monthly_mwh`"):
        PPA(id="p", technology="wind")
    with pytest.raises(ValueError, match=r"instrument id\(s\) \['x'\] used twice"):
        Instruments(certificates=[_cert("x", 1)], ppas=[PPA(id="x", technology="wind", meter="m")])


@settings(max_examples=150, deadline=None)
@given(
    imports=st.lists(st.floats(0, 500), min_size=1, max_size=60),
    certs=st.lists(
        st.tuples(st.floats(0.001, 2), st.one_of(st.none(), st.integers(0, 59))), max_size=5
    ),
    ppa=st.dictionaries(st.integers(0, 59), st.floats(0, 300), max_size=20),
    cut=st.integers(0, 60),
)
def test_no_volume_is_used_twice_and_hours_are_final(
    imports: list[float],
    certs: list[tuple[float, int | None]],
    ppa: dict[int, float],
    cut: int,
) -> None:
    inst = Instruments(
        certificates=[_cert(f"c{i}", mwh, hour) for i, (mwh, hour) in enumerate(certs)],
        ppas=[PPA(id="ppa", technology="wind", meter="m")],
    )
    deliveries = {"ppa": {H0 + h * HOUR_MS: kwh for h, kwh in ppa.items()}}
    hours = _hours(imports)
    a = allocate(hours, inst, deliveries, lambda _h: RESIDUAL, "UTC")
    for p in a.pools:
        assert p.used_kwh <= p.volume_kwh + 1e-9
    for hf, res in zip(hours, a.hours, strict=True):
        # each hour's import is covered once: instruments plus the residual make it up exactly
        assert sum(res.covered.values()) + res.residual_kwh == pytest.approx(hf.grid_import_kwh)
    used: dict[str, float] = {}
    for res in a.hours:
        for k, v in res.covered.items():
            used[k] = used.get(k, 0.0) + v
    by_instrument: dict[str, float] = {}
    for p in a.pools:  # a metered PPA has a pool per hour it delivered
        by_instrument[p.instrument] = by_instrument.get(p.instrument, 0.0) + p.used_kwh
    for k, v in by_instrument.items():
        assert used.get(k, 0.0) == pytest.approx(v)
    # allocating only the first hours gives those hours exactly as the whole run does
    part = allocate(hours[:cut], inst, deliveries, lambda _h: RESIDUAL, "UTC")
    assert [h.covered for h in part.hours] == [h.covered for h in a.hours[:cut]]


def test_cfe_scores() -> None:
    inst = Instruments(ppas=[PPA(id="ppa", technology="wind", meter="m")])
    flows = [HourFlow(H0, 100, 100, 0), HourFlow(H0 + HOUR_MS, 100, 40, 60)]
    a = allocate(flows, inst, {"ppa": {H0: 30.0, H0 + HOUR_MS: 100.0}}, lambda _h: RESIDUAL, "UTC")
    # hour 0: min(100, 30) = 30; hour 1: min(100, 60 on-site + 100 PPA) = 100
    score = cfe(a.hours, {H0: 0.5, H0 + HOUR_MS: 0.5})
    assert score.energytag == pytest.approx(130 / 200)
    assert score.google == pytest.approx((30 + 0.5 * 70 + 100) / 200)
    assert cfe(a.hours, {H0: 0.5}).google is None  # one hour without the grid's share
