"""A month at a plant, by hand: every figure of the accounts computed here in plain arithmetic.

October 2026 at an electronics plant in China (site time Asia/Shanghai, UTC+8; fiscal year from
April, so October is in FY2027). Readings every 15 minutes, on the quarter hours, from
1 October 00:00 to 1 November 00:00 site time. Per 15-minute interval, by the site hour it
starts in:

    hour (site)    grid import  PV   export  PPA (wind)  consumption  on-site renewable used
    00-06          100          0    0       30          100          0
    10-12, 14-16   100          50   0       0           150          50
    12-14          0            50   10      0           40           40
    other          100          0    0       0           100          0

Also: a gas boiler burning 10 m3 (line conditions: 20 degC, 20 kPa gauge) per interval; a
production line sub-meter (40 per interval) replaced on 15 October (a reset); HVAC (25); a
data-centre zone (intake 30, IT 20; cooling is the virtual meter intake - IT); a refrigerant
top-up of 5 kg R-410A on 20 October; 100 MWh of GECs (2026 vintage) and a wind PPA metered by
the hour. The grid meter rolls over at 100 000 kWh and is silent for two hours on 10 October.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lingtan.config import load
from rules.accounts import open_accounts
from rules.ledger import Ledger
from rules.replay import replay
from telemetry.sample import Sample

# Factors, written here on purpose (each checked against the library's entry below):
GRID_2023 = 0.5306  # kgCO2/kWh, MEE & NBS 2023 national average (the newest vintage in 2026)
RESIDUAL_2023 = 0.6096  # kgCO2/kWh, 2023 national average excluding market-traded non-fossil
NCV_GAS = 36.0  # MJ/m3 at 0 degC and 101.325 kPa: the gas supplier's bill (site factor file)
CO2_NG, CH4_NG, N2O_NG = 56_100.0, 1.0, 0.1  # kg/TJ, IPCC 2006 Vol.2 Tables 1.4 and 2.3
GWP_CH4_FOSSIL, GWP_N2O, GWP_R410A = 29.8, 273.0, 2255.5  # AR6 (R-410A: 0.5 x 771 + 0.5 x 3740)

DAYS = 31
T_START = int(datetime(2026, 9, 30, 16, tzinfo=UTC).timestamp() * 1000)  # 1 Oct 00:00 +08
Q = 15 * 60_000
N = DAYS * 96  # intervals in the month

SITE_FACTORS = """
factors:
  - id: test-gas-supplier-ncv
    kind: net_calorific_value
    fuel: natural_gas
    value: 36.0
    unit: MJ/m3
    gases: [CO2, CH4, N2O]
    region: CN
    year: 2026
    valid_from: 2026-01-01
    source: the gas supplier's monthly bill, stated calorific value (test data)
    publisher: test
    published: 2026-11-01
    verification: written for this test
"""

CONFIG = """
site: {id: fab, timezone: Asia/Shanghai, region: CN}
rules:
  ledger: ledger.sqlite
  factor_files: [site-factors.yaml]
  fiscal_year_start_month: 4
  gwp_set: AR6
  grid_cfe_file: grid-cfe.csv
  meters:
    - {device: grid, role: grid_import, counter_max: 100000, max_power_kw: 2000}
    - {device: export, role: grid_export}
    - {device: pv, role: generation, renewable: true}
    - {device: wind-ppa, role: ppa_delivery}
    - device: boiler-gas
      role: fuel
      fuel: natural_gas
      ncv: test-gas-supplier-ncv
      volume_correction: {pressure: gauge}
    - {device: line-a, role: submeter, area: smt, line: a}
    - {device: hvac, role: submeter, area: facility}
    - {device: dc-intake, role: dc_facility, zone: dc1}
    - {device: dc-it, role: it_load, zone: dc1}
  virtual_meters:
    - {id: dc-cooling, formula: "dc-intake - dc-it", area: dc}
  refrigerants:
    - {id: chiller-2-2026-10, date: 2026-10-20, gas: R-410A, kg: 5, equipment: chiller 2}
  market:
    certificates:
      - id: gec-2026-001
        scheme: GEC
        volume_mwh: 100
        technology: wind
        vintage: 2026
        generation_from: 2026-07-01
        generation_to: 2026-09-30
    ppas:
      - {id: wind-ppa-1, technology: wind, meter: wind-ppa}
"""


def _hour(i: int) -> int:
    """The site hour interval i starts in."""
    return (i % 96) // 4


def _per_interval(i: int) -> dict[str, float]:
    h = _hour(i)
    noon = 12 <= h < 14
    sunny = 10 <= h < 16
    return {
        "grid": 0.0 if noon else 100.0,
        "export": 10.0 if noon else 0.0,
        "pv": 50.0 if sunny else 0.0,
        "wind-ppa": 30.0 if h < 6 else 0.0,
        "boiler-gas": 10.0,
        "line-a": 40.0,
        "hvac": 25.0,
        "dc-intake": 30.0,
        "dc-it": 20.0,
    }


QUANTITY = {
    "grid": "energy_import_kwh",
    "export": "energy_export_kwh",
    "pv": "energy_export_kwh",
    "wind-ppa": "energy_import_kwh",
    "boiler-gas": "gas_volume_m3",
    "line-a": "energy_import_kwh",
    "hvac": "energy_import_kwh",
    "dc-intake": "energy_import_kwh",
    "dc-it": "energy_import_kwh",
}
GAP = range(9 * 96 + 8 + 1, 9 * 96 + 16)  # no grid reading 10 Oct 02:15 .. 03:45 (2 hours)
RESET_AT = 14 * 96 + 32  # the line-a reading at 15 Oct 08:00 shows the new meter's 0


def _samples() -> list[Sample]:
    out: list[Sample] = []
    counters = {"grid": 95_000.0} | {d: 0.0 for d in QUANTITY if d != "grid"}
    for i in range(N + 1):  # reading i is at the end of interval i-1
        if i > 0:
            for d, amount in _per_interval(i - 1).items():
                counters[d] += amount
            counters["grid"] %= 100_000  # the register wraps
        if i == RESET_AT:
            counters["line-a"] = 0.0
        for d, q in QUANTITY.items():
            if d == "grid" and i in GAP:
                continue
            values = {q: counters[d]}
            if d == "boiler-gas":
                values |= {"temperature_c": 20.0, "pressure_kpa": 20.0}
            out.append(Sample(site="fab", device=d, seq=i, ts=T_START + i * Q, values=values))
    return out


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("month")
    (tmp / "site-factors.yaml").write_text(SITE_FACTORS)
    # the grid's hourly carbon-free share: 30 % every hour (test data)
    hours = [
        datetime.fromtimestamp((T_START + h * 3_600_000) / 1000, UTC).strftime("%Y-%m-%dT%H:00Z")
        for h in range(DAYS * 24)
    ]
    (tmp / "grid-cfe.csv").write_text(
        "# source: test data, 30 % carbon-free every hour\nhour_start_utc,carbon_free_share\n"
        + "".join(f"{h},0.3\n" for h in hours)
    )
    (tmp / "site.yaml").write_text(CONFIG)
    loaded = load(tmp / "site.yaml")
    c = loaded.config
    ledger = Ledger(tmp / "ledger.sqlite")
    accounts = open_accounts(c.site, c.rules, ledger, loaded.base_dir)
    replay(accounts.engine, _samples())
    result = accounts.period(T_START, T_START + N * Q)
    lib = accounts.engine.factors
    return {"r": result, "lib": lib}


def test_the_factors_written_here_are_the_librarys(month: dict[str, object]) -> None:
    from rules.factors import FactorKind, FactorLibrary, GasOrigin

    lib = month["lib"]
    assert isinstance(lib, FactorLibrary)
    from datetime import date

    oct_ = date(2026, 10, 15)
    assert lib.grid("CN", oct_).kg_per_kwh == GRID_2023
    assert lib.find(FactorKind.RESIDUAL_MIX, "CN", oct_).kg_per_kwh == RESIDUAL_2023
    assert (
        lib.find(FactorKind.FUEL_EMISSION, "CN", oct_, fuel="natural_gas", gas="CO2").kg_per_tj
        == CO2_NG
    )
    assert lib.gwp("CH4", "AR6", GasOrigin.FOSSIL).value == GWP_CH4_FOSSIL
    assert lib.gwp("N2O", "AR6").value == GWP_N2O
    assert lib.gwp("R-410A", "AR6").value == GWP_R410A


def test_energy(month: dict[str, object]) -> None:
    r = month["r"]
    assert isinstance(r, dict)
    # grid import: 88 intervals a day at 100 (none at noon); the rollover and the gap lose nothing
    assert r["grid_import_kwh"] == pytest.approx(DAYS * 88 * 100)  # 272 800
    # the gap: no reading from 02:00 to 04:00, 8 intervals spread and flagged estimated
    assert r["energy_kwh"]["grid_import"]["estimated"] == pytest.approx(8 * 100)
    assert r["energy_kwh"]["generation"]["total"] == pytest.approx(DAYS * 24 * 50)  # 37 200
    assert r["energy_kwh"]["grid_export"]["total"] == pytest.approx(DAYS * 8 * 10)  # 2 480
    # consumption a day: 8 x 40 + 16 x 150 + 72 x 100 = 320 + 2400 + 7200 = 9920
    assert r["consumption_kwh"] == pytest.approx(DAYS * 9920)  # 307 520
    # on-site renewable used a day: 8 x 40 + 16 x 50 = 1120 (the 80 exported is not counted)
    assert r["renewable_onsite_kwh"] == pytest.approx(DAYS * 1120)
    # the grid register starts at 95 000 and wraps at 100 000: (95 000 + 272 800) // 100 000 = 3
    assert r["data_quality"]["events"] == {"rollover": 3, "reset": 1, "gap": 1, "manual": 1}


def test_breakdown_and_pue(month: dict[str, object]) -> None:
    r = month["r"]
    assert isinstance(r, dict)
    by_meter = r["breakdown_kwh"]["by_meter"]
    # line-a: 40 a interval, less the interval of the reset (the energy between the old meter's
    # last reading and the new meter's first is unknown, and not counted)
    assert by_meter["line-a"] == pytest.approx(N * 40 - 40)
    assert by_meter["dc-cooling"] == pytest.approx(N * (30 - 20))  # virtual: intake - IT
    assert r["breakdown_kwh"]["by_area"] == {
        "dc": pytest.approx(N * 10),
        "facility": pytest.approx(N * 25),
        "smt": pytest.approx(N * 40 - 40),
    }
    # sub-metered: line-a + hvac + the data centre's intake (its IT load is inside it)
    sub = (N * 40 - 40) + N * 25 + N * 30
    assert r["submetered_kwh"] == pytest.approx(sub)
    assert r["unmetered_kwh"] == pytest.approx(DAYS * 9920 - sub)
    assert r["pue"] == {"dc1": pytest.approx(30 / 20)}


def test_scope1_gas_boiler_and_refrigerant(month: dict[str, object]) -> None:
    r = month["r"]
    assert isinstance(r, dict)
    # 10 m3 at 20 degC and 20 kPa gauge = 10 x (101.325 + 20) / 101.325 x 273.15 / 293.15 Nm3
    corr = (101.325 + 20) / 101.325 * 273.15 / (273.15 + 20)
    nm3 = N * 10 * corr  # 2976 x 10 x 1.115694... = 33 203.06 Nm3
    assert r["fuels"]["boiler-gas"]["amount"] == pytest.approx(nm3)
    tj = nm3 * NCV_GAS / 1e6  # 1.19531 TJ
    co2 = tj * CO2_NG  # 67 057 kg
    ch4 = tj * CH4_NG * GWP_CH4_FOSSIL  # 35.6 kgCO2e
    n2o = tj * N2O_NG * GWP_N2O  # 32.6 kgCO2e
    refrigerant = 5 * GWP_R410A  # 11 277.5 kgCO2e
    by_gas = r["scope1_by_gas_kgco2e"]
    assert by_gas["CO2"] == pytest.approx(co2)
    assert by_gas["CH4"] == pytest.approx(ch4)
    assert by_gas["N2O"] == pytest.approx(n2o)
    assert by_gas["R-410A"] == pytest.approx(refrigerant)
    assert r["scope1_kgco2e"] == pytest.approx(co2 + ch4 + n2o + refrigerant)
    assert r["scope1_by_category_kgco2e"] == {
        "refrigerant": pytest.approx(refrigerant),
        "stationary_combustion": pytest.approx(co2 + ch4 + n2o),
    }
    assert r["biogenic_co2_kg"] == 0


def test_scope2_both_methods(month: dict[str, object]) -> None:
    r = month["r"]
    assert isinstance(r, dict)
    assert r["scope2_location_kgco2e"] == pytest.approx(DAYS * 8800 * GRID_2023)  # 144 746
    # market-based: each day the PPA covers its 6 x 120 = 720 kWh in the hours it delivers
    # (the grid brings 400 an hour then); the GECs' 100 000 kWh cover what is left, first come
    # first served from 1 October (8080 a day: used up on 13 October); the rest is at the
    # residual mix
    residual_kwh = DAYS * (8800 - 720) - 100_000  # 150 480
    assert r["market"]["residual_kwh"] == pytest.approx(residual_kwh)
    assert r["scope2_market_kgco2e"] == pytest.approx(residual_kwh * RESIDUAL_2023)  # 91 732.6
    used = {i["id"]: i for i in r["market"]["instruments"]}
    assert used["gec-2026-001"]["used_in_period_kwh"] == pytest.approx(100_000)
    assert used["gec-2026-001"]["left_kwh"] == pytest.approx(0)
    assert sum(
        i["used_in_period_kwh"] for i in r["market"]["instruments"] if i["id"] == "wind-ppa-1"
    ) == pytest.approx(DAYS * 720)


def test_renewable_share_and_cfe(month: dict[str, object]) -> None:
    r = month["r"]
    assert isinstance(r, dict)
    # (on-site used 34 720 + PPA 22 320 + GECs 100 000) / consumption 307 520
    assert r["renewable_share"] == pytest.approx(
        (DAYS * 1120 + DAYS * 720 + 100_000) / (DAYS * 9920)
    )  # 0.5107
    # CFE, matched within each hour: 00-06 min(400, 120) = 120; 10-12 and 14-16
    # min(600, 200) = 200; 12-14 min(160, 160) = 160. A day: 720 + 800 + 320 = 1840 of 9920.
    # The GECs are annual: they count for market-based Scope 2 and the share, not for CFE.
    assert r["cfe"]["energytag"] == pytest.approx(1840 / 9920)  # 0.1855
    # Google-style, the grid 30 % carbon-free: (1840 + 0.3 x 8080) / 9920
    assert r["cfe"]["google"] == pytest.approx((1840 + 0.3 * 8080) / 9920)  # 0.4298


def test_every_emission_figure_names_its_factors(month: dict[str, object]) -> None:
    r = month["r"]
    assert isinstance(r, dict)
    ids = {f["id"] for f in r["factors"]}
    assert {"test-gas-supplier-ncv", "cn-mee-2023-grid-national-average"} <= ids
    for f in r["factors"]:
        assert f["source"]
        assert f["published"]


def test_the_fiscal_year_and_days_are_site_time(month: dict[str, object]) -> None:
    r = month["r"]
    assert isinstance(r, dict)
    assert [p["period"] for p in r["by_period"]["fiscal_year"]] == ["FY2027"]
    assert [p["period"] for p in r["by_period"]["month"]] == ["2026-10"]
    days = r["by_period"]["day"]
    assert len(days) == DAYS
    assert days[0]["period"] == "2026-10-01"
    assert days[0]["consumption_kwh"] == pytest.approx(9920)
    # the refrigerant top-up is on its site day
    top_up = next(d for d in days if d["period"] == "2026-10-20")
    assert top_up["scope1_kgco2e"] == pytest.approx(days[0]["scope1_kgco2e"] + 5 * GWP_R410A)
