"""The alerts section: errors name the rule, secrets stay out of the YAML, defaults by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lingtan.config import ConfigError, parse
from rules.alerts import AlertsConfig
from rules.alerts.config import ThresholdRule
from rules.alerts.notify import ChannelError, channel_url

BASE = """\
site:
  id: wuhan-fab1
  timezone: Asia/Shanghai
alerts:
"""


def _problems(alerts_yaml: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(BASE + alerts_yaml, tmp_path / "site.yaml")
    return info.value.problems


def test_a_new_site_gets_the_defaults() -> None:
    cfg = AlertsConfig()
    assert [r.name for r in cfg.effective_rules] == [
        "meter_offline", "data_gap", "demand_near_limit", "off_trajectory"]
    with_target = AlertsConfig(renewable_share_target=0.4, contracted_demand_kw=2500)
    assert with_target.rule("renewable_share_below_target") is not None
    demand = with_target.rule("demand_near_limit")
    assert demand is not None
    assert demand.kind == "demand"
    assert demand.contracted_kw == 2500


def test_defaults_are_changed_or_switched_off_by_name(tmp_path: Path) -> None:
    cfg = parse(BASE + """\
  defaults:
    data_gap: false
    meter_offline: {after: 30m, severity: critical}
""", tmp_path / "site.yaml").config.alerts
    assert [r.name for r in cfg.effective_rules] == [
        "meter_offline", "demand_near_limit", "off_trajectory"]
    offline = cfg.rule("meter_offline")
    assert offline is not None
    assert offline.kind == "absence"
    assert (offline.after_s, offline.severity) == (1800, "critical")


def test_an_unknown_default_is_named(tmp_path: Path) -> None:
    [p] = _problems("  defaults:\n    meter_ofline: false\n", tmp_path)
    assert "no default rule named 'meter_ofline'" in p
    assert "meter_offline" in p


def test_changing_the_renewable_default_needs_a_target(tmp_path: Path) -> None:
    [p] = _problems("  defaults:\n    renewable_share_below_target: {for: 2h}\n", tmp_path)
    assert "defaults.renewable_share_below_target" in p
    assert "renewable_share_target" in p


def test_a_bad_rule_is_named_with_its_line(tmp_path: Path) -> None:
    problems = _problems("""\
  rules:
    - name: compressor-hot
      kind: threshold
      device: compressor-1
      quantity: temperature_c
      above: 80
      clear_below: 85
""", tmp_path)
    [p] = problems
    assert p.startswith("line 6: alerts.rules[0]: rule 'compressor-hot': "
                        "clear_below 85.0 must not be over above 80.0")


def test_a_wrong_field_of_a_rule_names_rule_and_field(tmp_path: Path) -> None:
    [p] = _problems("""\
  rules:
    - {name: ok-rule, kind: absence, device: pv-roof, after: 10m}
    - {name: gas-stale, kind: absence, device: gas-main, after: ten minutes}
""", tmp_path)
    assert p.startswith("line 7: alerts.rules[1]: rule 'gas-stale': after: 'ten minutes' is "
                        "not a duration")


def test_an_unknown_kind_and_an_unknown_key_are_named(tmp_path: Path) -> None:
    [p] = _problems("  rules:\n    - {name: x1, kind: eval, expr: 'os.system(1)'}\n", tmp_path)
    assert "alerts.rules[0]: rule 'x1': `kind` must be one of threshold, absence" in p
    [p] = _problems("  rules:\n    - {name: x2, kind: demand, shar: 0.8}\n", tmp_path)
    assert "alerts.rules[0]: rule 'x2': shar: unknown key" in p


def test_two_rules_with_one_name(tmp_path: Path) -> None:
    rule = "    - {name: twice, kind: demand, share: 0.8, contracted_kw: 900}\n"
    [p] = _problems("  rules:\n" + rule + rule, tmp_path)
    assert "rules[1]: rule 'twice': the name is used twice" in p


def test_a_demand_rule_without_a_contracted_demand_is_refused(tmp_path: Path) -> None:
    # it could never fire
    [p] = _problems("  rules:\n    - {name: peak, kind: demand, share: 0.8}\n", tmp_path)
    assert ("rules[0]: rule 'peak': a demand rule needs `contracted_kw`, or "
            "`contracted_demand_kw` in the alerts section") in p


def test_an_inline_url_is_refused(tmp_path: Path) -> None:
    [p] = _problems("""\
  channels:
    dingtalk:
      url: dingtalk://0123456789abcdef0123456789abcdef
""", tmp_path)
    assert p.startswith("line 6: alerts.channels.dingtalk: 'url' must not be written in the config")
    assert "url_env" in p
    assert "url_file" in p
    assert "0123456789abcdef" not in p


def test_an_inline_password_is_refused(tmp_path: Path) -> None:
    [p] = _problems("  channels:\n    mail: {url_env: X, password: hunter2}\n", tmp_path)
    assert "'password' must not be written in the config" in p
    assert "hunter2" not in p


def test_a_channel_url_comes_from_env_or_file_and_is_checked(tmp_path: Path) -> None:
    cfg = AlertsConfig.model_validate({"channels": {
        "hook": {"url_env": "LT_HOOK"}, "file": {"url_file": "secret-url"}}})
    assert channel_url("hook", cfg.channels["hook"], env={"LT_HOOK": "json://h/x"}) == "json://h/x"
    with pytest.raises(ChannelError, match=r"alerts.channels.hook: environment variable LT_HOOK"):
        channel_url("hook", cfg.channels["hook"], env={})
    (tmp_path / "secret-url").write_text("dingtalk://0123456789abcdef0123456789abcdef\n")
    assert channel_url("file", cfg.channels["file"], tmp_path).startswith("dingtalk://")
    with pytest.raises(ChannelError) as info:
        channel_url("hook", cfg.channels["hook"], env={"LT_HOOK": "nope://sekrit-token-1234"})
    assert "not one apprise can use (scheme 'nope'" in str(info.value)
    assert "sekrit" not in str(info.value)


def test_routes_name_only_defined_channels(tmp_path: Path) -> None:
    [p] = _problems("""\
  channels:
    mail: {url_env: LT_MAIL}
  routes:
    - {severities: [critical], channels: [dingtalk]}
""", tmp_path)
    assert "routes[0]: channel 'dingtalk' is not defined under channels (defined: mail)" in p


def test_templates_know_their_placeholders(tmp_path: Path) -> None:
    [p] = _problems("  templates:\n    firing_title: '$sevrity at $site'\n", tmp_path)
    assert "alerts.templates.firing_title: unknown placeholder(s) $sevrity" in p


def test_durations_and_maintenance_shapes() -> None:
    r = ThresholdRule.model_validate({"name": "a", "kind": "threshold", "figure":
                                      "site_power_kw", "above": 1, "for": "1h30m"})
    assert r.for_s == 5400
    with pytest.raises(ValidationError, match="give either `weekly` or `from` and `to`"):
        AlertsConfig.model_validate({"maintenance": [{"name": "m"}]})
    with pytest.raises(ValidationError, match="the window would be empty"):
        AlertsConfig.model_validate({"maintenance": [
            {"name": "m", "weekly": {"days": ["sun"], "from": "06:00", "to": "06:00"}}]})


def test_an_unquoted_time_is_refused_not_misread(tmp_path: Path) -> None:
    # YAML 1.1 reads 22:00 as 1320 (base 60): it must not pass as 00:22
    [p] = _problems("""\
  maintenance:
    - {name: night, weekly: {days: [sat], from: 22:00, to: "06:00"}}
""", tmp_path)
    assert 'alerts.maintenance[0].weekly.from: write the time in quotes, e.g. "22:00"' in p
