"""Fuzz the config loader (lingtan.config.parse) with generated YAML: a config loads, or every
problem is reported (ConfigError: the line, the YAML path, what was expected). Nothing else:
no traceback, no other exception, whatever the file holds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lingtan.config import ConfigError, LoadedConfig, parse
from tests.hostile import examples

# A config touching every section: each generated file starts from it.
BASE: dict[str, Any] = {
    "site": {"id": "wuhan-fab1", "name": "Plant", "timezone": "Asia/Shanghai",
             "region": "CN-HB"},
    "broker": {"url": "mqtt://127.0.0.1:1883", "protocol": "5", "username": "edge",
               "password_env": "LT_FUZZ_PW", "keepalive_s": 30},
    "edge": {
        "agent_id": "edge-01", "state_dir": "var/edge", "health_interval_s": 60,
        "devices": [
            {"id": "grid-main", "profile": "eastron-sdm630",
             "transport": {"type": "tcp", "host": "127.0.0.1", "port": 5020},
             "unit_id": 1, "interval_s": 5, "timeout_s": 2, "retries": 1},
            {"id": "pv", "profile": "sunspec",
             "transport": {"type": "rtu-over-tcp", "host": "10.0.0.2", "port": 4196}},
            {"id": "boiler", "profile": "eastron-sdm120",
             "transport": {"type": "serial", "device": "/dev/ttyUSB0", "baudrate": 9600,
                           "parity": "N"}, "unit_id": 12},
        ],
        "mqtt": {"devices": [
            {"id": "compressor", "topic": "tele/compressor/SENSOR",
             "fields": [{"path": "ENERGY.Total", "quantity": "energy_import_kwh"},
                        {"path": "ENERGY.Power", "quantity": "active_power_kw",
                         "scale": 0.001}],
             "timestamp": {"path": "Time", "format": "iso"}}]},
    },
    "ingest": {
        "client_id": "lingtan-ingest", "sqlite": {"path": "var/ts.sqlite", "retention_days": 30},
        "influxdb": {"url": "http://127.0.0.1:8086", "token_env": "LT_FUZZ_TOKEN"},
        "devices": {"wuhan-fab1": ["grid-main", "pv"]}, "batch_messages": 2000,
    },
    "rules": {
        "ledger": "var/ledger.sqlite", "fiscal_year_start_month": 4, "gwp_set": "AR6",
        "meters": [
            {"device": "grid-main", "role": "grid_import", "max_power_kw": 2500, "gap_s": 900},
            {"device": "pv", "role": "generation", "renewable": True},
            {"device": "boiler", "role": "submeter", "area": "utilities"},
            {"device": "compressor", "role": "submeter", "area": "utilities",
             "quantity": "active_power_kw"},
        ],
        "virtual_meters": [{"id": "utilities", "formula": "boiler + compressor"}],
        "refrigerants": [{"id": "top-up-1", "date": "2026-02-01", "gas": "R-410A", "kg": 2.5}],
    },
    "alerts": {
        "contracted_demand_kw": 2500, "renewable_share_target": 0.35, "repeat": "4h",
        "defaults": {"data_gap": False, "meter_offline": {"after": "30m"}},
        "rules": [
            {"name": "hot", "kind": "threshold", "device": "compressor",
             "quantity": "active_power_kw", "above": 85, "clear_below": 80, "for": "10m",
             "severity": "critical"},
            {"name": "stale", "kind": "absence", "device": "pv", "after": "1h"},
        ],
        "maintenance": [{"name": "weekend", "weekly": {"days": ["sat"], "from": "22:00",
                                                       "to": "06:00"}}],
        "silences": [{"match": {"rule": "meter_offline", "device": "pv*"},
                      "from": "2026-03-02T08:00", "to": "2026-03-02T18:00"}],
        "channels": {"ding": {"url_env": "LT_FUZZ_DING"}, "mail": {"url_file": "mail-url"}},
        "routes": [{"severities": ["critical"], "channels": ["ding", "mail"]}],
    },
}

# Values at the edges: of numbers, of what YAML reads as what, of paths (a folder named like a
# profile file is made in the test's folder), of URLs and topics.
NASTY: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**32, 2**63, 2**64, 10**30, -(10**30), 0.5, -0.0,
    1e308, float("inf"), float("-inf"), float("nan"), "", "~", "-1", "0", "1e999", "nan", ".inf",
    "yes", "no", "on", "12:30", "25:00", "2026-13-45", "0001-01-01", "9999-12-31T23:59", "1h",
    "-5m", "10x", "1e400s", "9" * 400 + "s", "*", "a" * 300, "x.yaml", "dir.yaml",
    "../../../etc/passwd.yaml", "a\x00b.yaml", "p" * 300 + ".yaml", "/dev/null", "/",
    "/proc/self/environ", "x" * 5000, "mqtt://", "mqtt://[::1", "mqtt://h:99999", "http://",
    "http://[", "json://x", "$share/x", "+", "#", "Asia/Shanghai", "../../etc/passwd", [], {},
    [None], {"a": None}, "(" * 200, "grid-main - " * 300,
]
_scalar = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(NASTY) | st.text(max_size=30))
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=10) | _scalar.filter(
                          lambda v: isinstance(v, str)), inner, max_size=3), max_leaves=6)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


_ALL_PATHS = _paths(BASE)[1:]
_BASE_TEXT = yaml.safe_dump(BASE)


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    """BASE with a few nodes replaced, removed or added, dumped as YAML."""
    cfg = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_ALL_PATHS))
        parent: Any = cfg
        try:
            for p in path[:-1]:
                parent = parent[p]
            op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
            if op == "replace":
                parent[path[-1]] = draw(st.sampled_from(NASTY) | _value)
            elif op == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[draw(st.sampled_from(["password", "token", "url", "secret", "api_key",
                                             "extra", "id"]))] = draw(_value)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed the way there
    return _dump(cfg)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=yaml.CSafeDumper, allow_unicode=True)


@st.composite
def damaged_text(draw: st.DrawFn) -> str:
    """The YAML text itself damaged: lines cut, indents shifted, characters inserted."""
    lines = _BASE_TEXT.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "indent", "dedent", "insert", "cut", "dup"]))
        if op == "drop":
            del lines[i]
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i].lstrip()
        elif op == "insert":
            j = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:j] + draw(st.sampled_from(
                [":", "- ", "{", "}", "[", "]", "&a ", "*a", "!!python/object:os.system ",
                 "\t", "'", '"', "? ", "|", ">", "%", "@", "`", "\x00", "\ufeff", "#"])) \
                + lines[i][j:]
        elif op == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            lines.insert(i, lines[i])
    return "\n".join(lines)


texts = st.one_of(
    mutated_configs(),
    damaged_text(),
    _value.map(_dump),
    st.text(max_size=200),
    st.sampled_from([
        "", "---", "...", "site:", "site: {id: a}\nsite: {id: b}",
        "a: &x [*x]",  # a self-referencing alias
        "x: &a [a]\ny: &b [*a,*a,*a,*a]\nz: &c [*b,*b,*b,*b]\nw: [*c,*c,*c,*c,*c,*c]",
        "!!python/object/apply:os.system ['true']",
        "site: !!binary aGVsbG8=", "site: {id: !!timestamp 2001-12-14}",
        "? [a, b]\n: 1", "site: {id: x}\nedge: {devices: [{}]*3}",
    ]),
)


def _with(path: tuple[Any, ...], value: Any, *, whole: bool = False) -> str:
    """BASE with the node at `path` set to `value`; only the site and that section unless
    `whole` (a smaller file parses faster, and the sections do not look at each other)."""
    cfg = copy.deepcopy(BASE) if whole else {"site": copy.deepcopy(BASE["site"]),
                                             path[0]: copy.deepcopy(BASE[path[0]])}
    node: Any = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return _dump(cfg)


def _load(text: str, tmp: Path) -> LoadedConfig | None:
    try:
        return parse(text, tmp / "site.yaml")
    except ConfigError as exc:
        problems = exc.problems
    assert problems, "a ConfigError that names no problem"
    for p in problems:
        assert isinstance(p, str), p
        assert p.strip(), "an empty problem"
    return None


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("config-fuzz")
    (tmp / "dir.yaml").mkdir()  # a folder where a profile file is expected
    return tmp


def test_the_base_config_loads(folder: Path) -> None:
    # the fuzz starts from a config that works: every mutation is one step from valid
    assert _load(yaml.safe_dump(BASE), folder) is not None


@settings(max_examples=examples(200), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(texts)
def test_any_file_loads_or_every_problem_is_named(folder: Path, text: str) -> None:
    _load(text, folder)


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_ALL_PATHS), st.sampled_from(NASTY))
def test_a_node_at_an_edge_loads_or_is_named(folder: Path, path: tuple[Any, ...],
                                             value: Any) -> None:
    _load(_with(path, value), folder)


@pytest.mark.long
def test_every_node_at_every_edge(folder: Path) -> None:
    # the sweep the sampled test above draws from, whole: about 10,000 files
    for path in _ALL_PATHS:
        for value in NASTY:
            _load(_with(path, value), folder)
    print(f"loaded {len(_ALL_PATHS) * len(NASTY)} configs: {len(_ALL_PATHS)} nodes x "
          f"{len(NASTY)} values; each loaded or refused with its problems named")


@pytest.mark.parametrize(("path", "value", "problem"), [
    # each of these crashed the loader with an OSError before it was fixed
    (("edge", "devices", 0, "profile"), "p" * 300 + ".yaml", "cannot be read: File name too long"),
    (("edge", "devices", 0, "profile"), "dir.yaml", "cannot be read: Is a directory"),
    (("site", "timezone"), "x" * 5000, "unknown time zone"),
    # each of these loaded, then failed where it was used: paho could not encode the CONNECT
    # (a struct.error in its network thread: no connection, no error), and ingest's hourly
    # retention cutoff overflowed SQLite's integer
    (("broker", "session_expiry_s"), 2**32, "less than or equal to 4294967295"),
    (("ingest", "sqlite", "retention_days"), 10**30, "less than or equal to 36500"),
])
def test_found_by_the_fuzz(folder: Path, path: tuple[Any, ...], value: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(_with(path, value, whole=True), folder / "site.yaml")
    assert any(problem in p for p in info.value.problems), info.value.problems
