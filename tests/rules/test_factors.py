"""The factor library: data with sources, and which grid factor applies."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date
from importlib import resources
from pathlib import Path

import pytest

from rules.factors import Factor, FactorKind, FactorLibrary, GasOrigin, _parse

# A made-up city under Hubei (CN-HB-WH) so that the shipped Hubei provincial factors stay the
# next most specific region.
EXTRA = """
factors:
  - id: cn-hb-wh-2022-test-city
    kind: grid_electricity
    value: 450
    unit: gCO2/kWh
    gases: [CO2]
    region: CN-HB-WH
    year: 2022
    valid_from: 2022-01-01
    source: a city figure written for this test only
    publisher: test
    published: 2024-12-20
  - id: cn-2020-test-old
    kind: grid_electricity
    value: 0.6
    unit: tCO2/MWh
    gases: [CO2]
    region: CN
    year: 2020
    valid_from: 2020-01-01
    valid_to: 2021-12-31
    source: an old national figure written for this test only
    publisher: test
    published: 2022-01-01
"""


def _shipped() -> dict[str, list[Factor]]:
    folder = resources.files("rules").joinpath("factors")
    return {
        e.name: _parse(e.read_text("utf-8"), e.name)
        for e in sorted(folder.iterdir(), key=lambda e: e.name)
        if e.name.endswith(".yaml")
    }


LIB = FactorLibrary.load()


def test_every_shipped_factor_carries_its_source_and_vintage() -> None:
    lib = FactorLibrary.load()
    assert len(lib) >= 1
    f = lib["cn-mee-2022-grid-national-average"]
    assert (f.region, f.year, f.unit) == ("CN", 2022, "kgCO2/kWh")
    assert "2022年电力二氧化碳排放因子" in f.source
    assert f.published == date(2024, 12, 20)


def test_every_shipped_file_loads_and_every_entry_says_where_it_is_from() -> None:
    files = _shipped()
    assert set(files) >= {
        "cn-mee-grid.yaml",
        "cn-mee-grid-provincial.yaml",
        "us-epa-egrid.yaml",
        "ipcc-2006-fuels.yaml",
        "ipcc-gwp100.yaml",
    }
    for name, factors in files.items():
        assert factors, name
        for f in factors:
            for field in ("source", "publisher", "verification"):
                assert getattr(f, field).strip(), f"{name}: {f.id} has no {field}"
            assert f.published.year >= 2006, f"{name}: {f.id}"
            assert f.published >= date(f.year, 1, 1), f"{name}: {f.id} published before its year"


def test_no_two_selectable_factors_tie() -> None:
    """Exactly one factor for a kind, region, year (and fuel, gas, GWP set, origin) at a time."""
    groups: defaultdict[tuple[object, ...], list[Factor]] = defaultdict(list)
    for f in LIB:
        if f.pinned_only:
            continue
        for gas in f.gases:
            groups[(f.kind, f.region, f.year, f.fuel, gas, f.gwp_set, f.origin)].append(f)
    for key, fs in groups.items():
        for i, a in enumerate(fs):
            for b in fs[i + 1 :]:
                a_end = a.valid_to or date.max
                b_end = b.valid_to or date.max
                overlap = a.valid_from <= b_end and b.valid_from <= a_end
                assert not overlap, f"{a.id} and {b.id} tie on {key}"


def test_a_gwp_of_a_blend_is_the_shares_times_the_components_gwps() -> None:
    blends = [f for f in LIB if f.composition is not None]
    assert {(f.gases[0], f.gwp_set) for f in blends} == {
        (b, s) for b in ("R-410A", "R-404A") for s in ("AR4", "AR5", "AR6")
    }
    for f in blends:
        assert f.composition is not None
        assert f.gwp_set is not None
        computed = sum(
            share * LIB.gwp(gas, f.gwp_set).value for gas, share in f.composition.items()
        )
        assert f.value == pytest.approx(computed, abs=0.05), f.id


def test_table_1_4_co2_factors_are_the_carbon_content_times_44_over_12() -> None:
    """The notes carry Table 1.3's carbon content; IPCC rounds the CO2 factor to 100 kg/TJ."""
    co2 = [f for f in LIB if f.id.startswith("ipcc2006-co2-")]
    assert len(co2) == 5
    for f in co2:
        m = re.search(r"carbon content ([\d.]+) kg C/GJ", " ".join(f.notes.split()))
        assert m, f.id
        kg_per_tj = float(m.group(1)) * 44 / 12 * 1000
        assert abs(f.kg_per_tj - kg_per_tj) <= 50, f.id


def test_every_fuel_has_a_calorific_value_and_a_factor_per_gas() -> None:
    day = date(2026, 3, 1)
    for fuel in ("natural_gas", "diesel", "gasoline", "lpg", "bituminous_coal"):
        ncv = LIB.find(FactorKind.NET_CALORIFIC_VALUE, "CN-HB", day, fuel=fuel)
        assert (ncv.fuel_unit, ncv.region) == ("kg", "GLOBAL")
        for gas in ("CO2", "CH4", "N2O"):
            f = LIB.find(FactorKind.FUEL_EMISSION, "CN-HB", day, fuel=fuel, gas=gas)
            assert f.gases == [gas]
            assert f.source.startswith("2006 IPCC Guidelines")
    assert LIB.find(FactorKind.NET_CALORIFIC_VALUE, "US", day, fuel="natural_gas").mj_per_unit == 48
    coal_ch4 = LIB.find(FactorKind.FUEL_EMISSION, "CN", day, fuel="bituminous_coal", gas="CH4")
    assert (coal_ch4.id, coal_ch4.kg_per_tj) == ("ipcc2006-t2.3-ch4-bituminous-coal", 10)


def test_grid_lookups() -> None:
    cn = LIB.grid("CN", date(2023, 6, 1))
    assert (cn.id, cn.value) == ("cn-mee-2023-grid-national-average", 0.5306)
    assert LIB.grid("CN", date(2022, 6, 1)).id == "cn-mee-2022-grid-national-average"
    hubei = LIB.grid("CN-HB", date(2024, 6, 1))
    assert (hubei.id, hubei.region, hubei.value) == (
        "cn-mee-2023-grid-province-hubei",
        "CN-HB",
        0.4044,
    )
    assert LIB.grid("CN-HB", date(2022, 6, 1)).id == "cn-mee-2022-grid-province-hubei"
    # Tibet has no provincial row: the national average
    assert LIB.grid("CN-XZ", date(2024, 6, 1)).id == "cn-mee-2023-grid-national-average"
    assert LIB.grid("CN-GRID-CENTRAL", date(2024, 6, 1)).id == "cn-mee-2023-grid-region-huazhong"
    us = LIB.grid("US", date(2024, 1, 1))
    assert (us.id, us.unit, us.gases) == (
        "us-egrid2023-national-co2e",
        "lbCO2e/MWh",
        ["CO2", "CH4", "N2O"],
    )
    assert us.kg_per_kwh == pytest.approx(770.884 * 0.45359237e-3)
    assert us.kg_per_kwh == pytest.approx(0.349667, abs=5e-7)
    assert LIB.grid("US", date(2022, 7, 1)).id == "us-egrid2022-national-co2"


def test_reference_factors_are_pinned_only() -> None:
    for fid in (
        "cn-mee-2022-reporting-grid-average",
        "cn-mee-2023-grid-national-fossil",
        "us-egrid2023-national-co2",
    ):
        assert LIB[fid].pinned_only
    reporting = LIB["cn-mee-2022-reporting-grid-average"]
    assert (reporting.kind, reporting.region, reporting.year, reporting.kg_per_kwh) == (
        FactorKind.GRID_ELECTRICITY,
        "CN",
        2022,
        pytest.approx(0.5703),
    )
    assert "NOT the MEE/NBS statistical 2022" in " ".join(reporting.notes.split())
    assert LIB.grid("CN", date(2022, 6, 1)).value == 0.5366


def test_the_residual_mix_is_the_national_average_without_traded_green_power() -> None:
    res = LIB.find(FactorKind.RESIDUAL_MIX, "CN-HB", date(2023, 6, 1))
    assert (res.id, res.value) == ("cn-mee-2023-grid-national-excl-market-nonfossil", 0.6096)
    assert LIB.find(FactorKind.RESIDUAL_MIX, "CN", date(2022, 6, 1)).value == 0.5856
    # none was found for 2021
    with pytest.raises(LookupError, match="no residual mix factor"):
        LIB.find(FactorKind.RESIDUAL_MIX, "CN", date(2021, 6, 1))


def test_gwp_lookups() -> None:
    assert LIB.gwp("CH4", "AR6", GasOrigin.FOSSIL).value == 29.8
    assert LIB.gwp("CH4", "AR6", GasOrigin.NON_FOSSIL).value == 27.0
    assert LIB.gwp("CH4", "AR6").value == 27.9
    assert LIB.gwp("CH4", "AR5", GasOrigin.FOSSIL).value == 28  # AR5's single value
    assert LIB.gwp("N2O", "AR5").value == 265
    assert LIB.gwp("R-410A", "AR5").value == 1923.5
    for s in ("AR4", "AR5", "AR6"):
        assert LIB.gwp("CO2", s).value == 1
        for gas in ("N2O", "R-134a", "R-32", "R-125", "R-143a", "SF6", "R-404A"):
            assert LIB.gwp(gas, s).unit == "kgCO2e/kg"


def test_the_most_specific_region_wins_then_the_newest_year(tmp_path: Path) -> None:
    extra = tmp_path / "site-factors.yaml"
    extra.write_text(EXTRA)
    lib = FactorLibrary.load([extra])
    assert lib.grid("CN-HB-WH", date(2026, 11, 25)).id == "cn-hb-wh-2022-test-city"
    assert lib.grid("CN-HB-WH", date(2026, 11, 25)).kg_per_kwh == pytest.approx(0.45)
    assert lib.grid("CN-HB", date(2026, 11, 25)).id == "cn-mee-2023-grid-province-hubei"
    assert lib.grid("CN", date(2026, 11, 25)).id == "cn-mee-2023-grid-national-average"
    assert lib.grid("CN", date(2020, 6, 1)).id == "cn-2020-test-old"
    assert lib.grid("CN", date(2020, 6, 1)).kg_per_kwh == pytest.approx(0.6)
    # in 2021 both the test's 2020 factor and the 2021 national average apply: the newer wins
    assert lib.grid("CN", date(2021, 6, 1)).id == "cn-mee-2021-grid-national-average"


def test_no_factor_is_an_error_not_a_zero() -> None:
    with pytest.raises(LookupError, match="no grid electricity factor for region 'DE'"):
        FactorLibrary.load().grid("DE", date(2026, 1, 1))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("unit: gCO2/kWh", "unit: stCO2/MWh"),
            r"factors\[0\] \(id cn-hb-wh-2022-test-city\): unit 'stCO2/MWh' is not one of",
        ),
        (
            ("value: 450", "value: -1"),
            r"factors\[0\] \(id cn-hb-wh-2022-test-city\).value: Input "
            "should be greater than 0",
        ),
        (
            ("    source: a city figure written for this test only\n", ""),
            r"factors\[0\] \(id cn-hb-wh-2022-test-city\).source: Field required",
        ),
    ],
)
def test_bad_factor_files_name_the_entry(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXTRA.replace(*edit, 1))
    with pytest.raises(ValueError, match=f"bad.yaml: {expected}"):
        FactorLibrary.load([bad])


def test_a_factor_id_defined_twice_is_refused(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text(EXTRA)
    with pytest.raises(ValueError, match="defined twice"):
        FactorLibrary.load([dup, dup])
