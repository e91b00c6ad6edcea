"""Reduction targets: the linear (SBTi-style) trajectory, the year's budget, and on track or not.

A target is a baseline year with its emissions and a reduction by a target year. The
trajectory falls linearly from the baseline to the target: the allowed emissions of year Y are
baseline x (1 - reduction x (Y - baseline year) / (target year - baseline year)), and flat at
the target level after it. Within a year the budget accrues in proportion to time (a plant's
seasonality is its own; a flat accrual is what a target's annual figure says, and the forecast
below uses the year's actual pace instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TargetConfig(BaseModel):
    """A site's reduction target, in tCO2e for the scopes it covers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The base year the reduction is measured from: a fiscal year, named for the year it ends in.
    baseline_year: Annotated[int, Field(ge=1990, le=2100)]
    # The base year's emissions of the scopes below, in tCO2e: where the trajectory starts.
    baseline_tco2e: Annotated[float, Field(gt=0)]
    # The fiscal year by which the full reduction is due; the trajectory stays flat after it.
    target_year: Annotated[int, Field(ge=1990, le=2100)]
    # e.g. 0.42 for a 42 % cut (SBTi's 1.5 °C near-term minimum for scopes 1 and 2)
    reduction: Annotated[float, Field(gt=0, le=1)]
    # The emissions summed against the target: Scope 2 includes purchased heat, steam and
    # cooling; list one Scope 2 method, as both would count Scope 2 twice.
    scopes: list[Annotated[str, Field(pattern=r"^(scope1|scope2_location|scope2_market)$")]] = [
        "scope1",
        "scope2_market",
    ]

    @model_validator(mode="after")
    def _ordered(self) -> TargetConfig:
        if self.target_year <= self.baseline_year:
            raise ValueError(
                f"target_year {self.target_year} must be after baseline_year {self.baseline_year}"
            )
        if not self.scopes:
            raise ValueError("scopes: name at least one of scope1, scope2_location, scope2_market")
        if len(set(self.scopes)) != len(self.scopes):
            raise ValueError(f"scopes {self.scopes}: each at most once (twice counts it twice)")
        if {"scope2_location", "scope2_market"} <= set(self.scopes):
            raise ValueError(
                "scopes: scope2_location and scope2_market are two measures of the same Scope 2; "
                "a target covers one of them (both would count Scope 2 twice)"
            )
        return self

    def allowed_tco2e(self, year: int) -> float:
        """The trajectory's emissions for a (fiscal) year."""
        if year <= self.baseline_year:
            return self.baseline_tco2e
        done = min(1.0, (year - self.baseline_year) / (self.target_year - self.baseline_year))
        return self.baseline_tco2e * (1 - self.reduction * done)


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """Where a year stands against its target."""

    year: int
    allowed_tco2e: float  # the whole year's trajectory value
    budget_to_date_tco2e: float  # what the trajectory allows up to now
    actual_to_date_tco2e: float
    forecast_tco2e: float  # the year at its pace so far
    on_track: bool  # the forecast is within the year's allowance


def status(
    target: TargetConfig,
    year: int,
    actual_tco2e: float,
    elapsed: float,
    covered: float | None = None,
) -> TargetStatus:
    """The year's status, `elapsed` being the share of the (fiscal) year gone (0 < elapsed <= 1).

    `covered` is the share of the year the data covers (from the first reading of the year to
    now; `elapsed` when the site reported from the year's start). The forecast extrapolates the
    pace of the covered part: a site that started monitoring in October is not forecast from
    six months of zeros.
    """
    if not 0 < elapsed <= 1:
        raise ValueError(f"elapsed {elapsed} is not a share of a year (0 < elapsed <= 1)")
    covered = elapsed if covered is None else covered
    if not 0 < covered <= elapsed:
        raise ValueError(f"covered {covered} is not a share of the year gone (0 < c <= {elapsed})")
    allowed = target.allowed_tco2e(year)
    forecast = actual_tco2e / covered
    return TargetStatus(
        year=year,
        allowed_tco2e=allowed,
        budget_to_date_tco2e=allowed * elapsed,
        actual_to_date_tco2e=actual_tco2e,
        forecast_tco2e=forecast,
        on_track=forecast <= allowed,
    )
