"""Reduction targets: the linear trajectory and the year's status, arithmetic written out."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rules.config import RulesConfig
from rules.targets import TargetConfig, status

# 10,000 tCO2e in 2020, 42 % less by 2030: 4.2 % of the baseline (420 t) less each year
TARGET = TargetConfig(baseline_year=2020, baseline_tco2e=10_000, target_year=2030, reduction=0.42)


def test_the_trajectory_falls_linearly_and_stays_at_the_target() -> None:
    assert TARGET.allowed_tco2e(2019) == 10_000
    assert TARGET.allowed_tco2e(2020) == 10_000
    assert TARGET.allowed_tco2e(2026) == pytest.approx(10_000 - 6 * 420)   # 7480
    assert TARGET.allowed_tco2e(2030) == pytest.approx(5_800)
    assert TARGET.allowed_tco2e(2035) == pytest.approx(5_800)


def test_status_against_the_budget_and_the_forecast() -> None:
    # 2026: allowed 7480 t; a quarter of the year gone
    ahead = status(TARGET, 2026, actual_tco2e=1_800, elapsed=0.25)
    assert ahead.budget_to_date_tco2e == pytest.approx(1_870)
    assert ahead.forecast_tco2e == pytest.approx(7_200)
    assert ahead.on_track
    behind = status(TARGET, 2026, actual_tco2e=1_900, elapsed=0.25)
    assert behind.forecast_tco2e == pytest.approx(7_600)
    assert not behind.on_track
    with pytest.raises(ValueError, match="not a share of a year"):
        status(TARGET, 2026, 1.0, 0)


def test_the_forecast_extrapolates_the_part_of_the_year_the_data_covers() -> None:
    # half the year gone, but the site reported only for the last quarter of the year (0.25):
    # 1,500 t in a quarter is 6,000 t a year, within 7,480 t; from the half it would be 3,000
    late = status(TARGET, 2026, actual_tco2e=1_500, elapsed=0.5, covered=0.25)
    assert late.forecast_tco2e == pytest.approx(6_000)
    assert late.budget_to_date_tco2e == pytest.approx(3_740)  # the trajectory accrues by time
    assert late.on_track
    assert not status(TARGET, 2026, actual_tco2e=2_000, elapsed=0.5, covered=0.25).on_track
    with pytest.raises(ValueError, match="not a share of the year gone"):
        status(TARGET, 2026, 1.0, 0.5, covered=0.6)


def test_a_target_in_the_site_config_is_checked() -> None:
    cfg = RulesConfig.model_validate({"fiscal_year_start_month": 4, "target": {
        "baseline_year": 2020, "baseline_tco2e": 10000, "target_year": 2030, "reduction": 0.42}})
    assert cfg.target == TARGET
    with pytest.raises(ValidationError, match="target_year 2020 must be after baseline_year"):
        TargetConfig(baseline_year=2020, baseline_tco2e=1, target_year=2020, reduction=0.5)
    with pytest.raises(ValidationError, match="scopes"):
        TargetConfig(baseline_year=2020, baseline_tco2e=1, target_year=2030, reduction=0.5,
                     scopes=["scope3"])
    with pytest.raises(ValidationError, match="would count Scope 2 twice"):
        TargetConfig(baseline_year=2020, baseline_tco2e=1, target_year=2030, reduction=0.5,
                     scopes=["scope1", "scope2_location", "scope2_market"])
    with pytest.raises(ValidationError, match=r"each at most once \(twice counts it twice\)"):
        TargetConfig(baseline_year=2020, baseline_tco2e=1, target_year=2030, reduction=0.5,
                     scopes=["scope1", "scope1"])
    with pytest.raises(ValidationError, match="name at least one"):
        TargetConfig(baseline_year=2020, baseline_tco2e=1, target_year=2030, reduction=0.5,
                     scopes=[])
