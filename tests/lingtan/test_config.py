"""Site config: the example validates; every error names the file, line and YAML path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lingtan.config import ConfigError, load, parse

EXAMPLE = Path(__file__).parents[2] / "deploy" / "examples" / "site.yaml"


def test_the_example_config_is_valid() -> None:
    cfg = load(EXAMPLE).config
    assert cfg.site.id == "wuhan-fab1"
    assert cfg.edge.device("grid-main").profile == "eastron-sdm630"
    assert cfg.rules.meters[0].counter_quantity == "energy_import_kwh"


def _problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, tmp_path / "site.yaml")
    return info.value.problems


def test_a_wrong_value_names_line_path_and_expectation(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("port: 5020", "port: 70000")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "70000" in t)
    assert _problems(text, tmp_path) == [
        f"line {line}: edge.devices[0].transport.port: Input should be less than or equal to "
        "65535 (got 70000)"]


def test_a_misspelt_key_is_named(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("interval_s: 5", "intervall_s: 5")
    [problem] = _problems(text, tmp_path)
    assert "edge.devices[0].intervall_s: unknown key" in problem


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = (EXAMPLE.read_text().replace("Asia/Shanghai", "Asia/Wuhan")
            .replace("role: grid_import", "role: grid_imports"))
    problems = _problems(text, tmp_path)
    assert any(p.startswith("line 13: site.timezone: unknown time zone 'Asia/Wuhan' "
                            "(expected an IANA name") for p in problems), problems
    assert any("rules.meters[0].role: Input should be 'grid_import'" in p for p in problems)


def test_an_unknown_profile_is_named(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("profile: eastron-sdm630 ", "profile: sdm999 ")
    [problem] = _problems(text, tmp_path)
    assert "edge.devices[0].profile: profile 'sdm999': no profile named 'sdm999'" in problem


def test_a_password_in_the_yaml_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("  # username: edge-wuhan-fab1",
                                       "  username: edge\n  password: hunter2")
    [problem] = _problems(text, tmp_path)
    assert "broker: 'password' must not be written in the config; use 'password_env'" in problem
    assert "hunter2" not in problem


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    [problem] = _problems("site:\n  id: [unclosed\n", tmp_path)
    assert problem.startswith("line 3: not valid YAML")


def test_check_config_command_exits_2_and_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text(EXAMPLE.read_text().replace("unit_id: 1", "unit_id: 300"))
    proc = subprocess.run([sys.executable, "-m", "lingtan", "check-config", "-c", str(bad)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "edge.devices[0].unit_id: Input should be less than or equal to 247 (got 300)" in \
        proc.stderr
    ok = subprocess.run([sys.executable, "-m", "lingtan", "check-config", "-c", str(EXAMPLE)],
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "OK — site wuhan-fab1, 1 device(s), 1 accounted meter(s)" in ok.stdout
    # a meter whose factor the library lacks is found by check-config, not at the first reading
    bad.write_text(EXAMPLE.read_text().replace("region: CN-HB", "region: ZZ-QQ"))
    proc = subprocess.run([sys.executable, "-m", "lingtan", "check-config", "-c", str(bad)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stdout
    assert "no grid electricity factor for region 'ZZ-QQ'" in proc.stderr
