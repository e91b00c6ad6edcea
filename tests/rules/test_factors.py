"""The factor library: data with sources, and which grid factor applies."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from rules.factors import FactorLibrary

EXTRA = """
factors:
  - id: cn-hb-2022-test-provincial
    kind: grid_electricity
    value: 450
    unit: gCO2/kWh
    gases: [CO2]
    region: CN-HB
    year: 2022
    valid_from: 2022-01-01
    source: a provincial figure written for this test only
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


def test_every_shipped_factor_carries_its_source_and_vintage() -> None:
    lib = FactorLibrary.load()
    assert len(lib) >= 1
    f = lib["cn-mee-2022-grid-national-average"]
    assert (f.region, f.year, f.unit) == ("CN", 2022, "kgCO2/kWh")
    assert "2022年电力二氧化碳排放因子" in f.source
    assert f.published == date(2024, 12, 20)


def test_the_most_specific_region_wins_then_the_newest_year(tmp_path: Path) -> None:
    extra = tmp_path / "site-factors.yaml"
    extra.write_text(EXTRA)
    lib = FactorLibrary.load([extra])
    assert lib.grid("CN-HB", date(2026, 11, 25)).id == "cn-hb-2022-test-provincial"
    assert lib.grid("CN-HB", date(2026, 11, 25)).kg_per_kwh == pytest.approx(0.45)
    assert lib.grid("CN-GD", date(2026, 11, 25)).id == "cn-mee-2022-grid-national-average"
    assert lib.grid("CN", date(2021, 6, 1)).id == "cn-2020-test-old"
    assert lib.grid("CN", date(2021, 6, 1)).kg_per_kwh == pytest.approx(0.6)


def test_no_factor_is_an_error_not_a_zero() -> None:
    with pytest.raises(LookupError, match="no grid electricity factor for region 'DE'"):
        FactorLibrary.load().grid("DE", date(2026, 1, 1))


@pytest.mark.parametrize(("edit", "expected"), [
    (("unit: gCO2/kWh", "unit: stCO2/MWh"),
     r"factors\[0\] \(id cn-hb-2022-test-provincial\): unit 'stCO2/MWh' is not one of"),
    (("value: 450", "value: -1"), r"factors\[0\] \(id cn-hb-2022-test-provincial\).value: Input "
                                  "should be greater than 0"),
    (("    source: a provincial figure written for this test only\n", ""),
     r"factors\[0\] \(id cn-hb-2022-test-provincial\).source: Field required"),
])
def test_bad_factor_files_name_the_entry(tmp_path: Path, edit: tuple[str, str],
                                         expected: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXTRA.replace(*edit, 1))
    with pytest.raises(ValueError, match=f"bad.yaml: {expected}"):
        FactorLibrary.load([bad])


def test_a_factor_id_defined_twice_is_refused(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text(EXTRA)
    with pytest.raises(ValueError, match="defined twice"):
        FactorLibrary.load([dup, dup])
