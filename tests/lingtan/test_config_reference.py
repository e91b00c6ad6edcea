"""The config reference is generated from the models and committed; it names every key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from pydantic import BaseModel

from lingtan.config import SiteConfig
from lingtan.config_reference import DEFAULT_PATH, reference
from rules.factors import FactorKind, FactorLibrary


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    from lingtan.config_reference import _models_in

    if model in seen:
        return
    seen.add(model)
    for f in model.model_fields.values():
        for m in _models_in(f.annotation):
            _models(m, seen)


def test_the_committed_reference_is_current() -> None:
    assert DEFAULT_PATH.read_text("utf-8") == reference(), "stale: run `make docs`"
    out = subprocess.run([sys.executable, "-m", "lingtan", "config-reference", "--check"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout


def test_every_model_and_key_of_a_site_config_is_in_it() -> None:
    text = reference()
    models: set[type[BaseModel]] = set()
    _models(SiteConfig, models)
    models.discard(SiteConfig)  # the root: its keys are the sections
    assert len(models) > 20  # every section, nested to the alert rules and transports
    assert len({m.__name__ for m in models}) == len(models)  # one heading (and anchor) each
    for section in SiteConfig.model_fields:
        assert f"\n`{section}`: " in text, section
    for m in models:
        assert f"## {m.__name__}\n" in text, m
        section = text.split(f"## {m.__name__}\n", 1)[1].split("\n## ", 1)[0]
        for name, f in m.model_fields.items():
            assert f"| `{f.alias or name}` |" in section, (m.__name__, name)
    # what a field is for comes from its description or the comment above it in the source
    assert ("| `counter_max` | float (> 0) or null | — | The value at which the device's counter "
            "register wraps to zero, in the quantity's unit. |") in text
    # ... also for a key every alert rule inherits from their base class
    for_key = ("| `for` | duration (seconds, or `90s`, `15m`, `1h30m`, `2d`) (≥ 0, ≤ 31622400) "
               "| `0.0` | The condition must hold this long (by the engine's clock) before the "
               "alert fires. |")
    for kind in ("ThresholdRule", "AbsenceRule", "DataQualityRule"):
        assert for_key in text.split(f"## {kind}\n", 1)[1].split("\n## ", 1)[0], kind
    assert "| `id` | str (an id: letters, digits, _ . -, at most 64) | **required** |" in text


def test_the_readme_factor_example_is_a_valid_factor_file(tmp_path: Path) -> None:
    readme = (DEFAULT_PATH.parent.parent / "README.md").read_text("utf-8")
    guide = readme.split("### How to add an emission factor", 1)[1]
    block = guide.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "site.yaml").write_text(textwrap.dedent(block))
    lib = FactorLibrary.load([tmp_path / "site.yaml"])
    f = lib["example-power-co-2026-supplier-mix"]
    assert f.kind is FactorKind.SUPPLIER_ELECTRICITY
    assert f.kg_per_kwh == 0.4123
