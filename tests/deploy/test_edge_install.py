"""deploy/edge/install.sh for real: a venv with lingtan from this checkout, config, units.

The full install is marked `long` (pip builds lingtan and fetches its dependencies: a minute
or more), run by `make test-long`. Everything lands under a temporary root (LINGTAN_ROOT) and
systemctl is a recorder, so the test needs neither root nor systemd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

@pytest.mark.long
@pytest.mark.timeout(900)
def test_install_sh_installs_lingtan_and_enables_the_agent(tmp_path: Path) -> None:
    python = shutil.which("python3.11") or shutil.which("python3")
    assert python is not None
    root = tmp_path / "root"
    calls = tmp_path / "systemctl.calls"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    systemctl.chmod(0o755)
    env = os.environ | {"LINGTAN_ROOT": str(root), "SYSTEMCTL": str(systemctl),
                        "PYTHON": python}

    def install(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(ROOT / "deploy" / "edge" / "install.sh"), *args],
                              capture_output=True, text=True, env=env, timeout=880, check=False)

    out = install("--source", str(ROOT), "--with-central")
    assert out.returncode == 0, out.stderr[-3000:]
    lingtan = root / "opt" / "lingtan" / "venv" / "bin" / "lingtan"
    config = root / "etc" / "lingtan" / "site.yaml"
    assert config.read_text() == (ROOT / "deploy" / "edge" / "site.example.yaml").read_text()
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    check = subprocess.run([str(lingtan), "check-config", "-c", str(config)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stderr
    units = root / "etc" / "systemd" / "system"
    assert sorted(p.name for p in units.iterdir()) == [
        "lingtan-edge.service", "lingtan-ingest.service", "lingtan-rules.service"]
    assert calls.read_text().splitlines() == [
        "daemon-reload",
        "enable lingtan-ingest.service lingtan-rules.service",
        "enable lingtan-edge.service",
        "restart lingtan-edge.service",
    ]

    # again, as an upgrade: an edited config is kept, nothing started with --no-start
    config.write_text(config.read_text().replace("edge-01", "edge-02"))
    calls.unlink()
    again = install("--source", str(ROOT), "--no-start")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "edge-02" in config.read_text()
    assert calls.read_text().splitlines() == ["daemon-reload", "enable lingtan-edge.service"]


def test_install_sh_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    script = str(ROOT / "deploy" / "edge" / "install.sh")
    bad = subprocess.run(["bash", script, "--frobnicate"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert bad.returncode == 2
    assert "unknown option --frobnicate" in bad.stderr
    old = tmp_path / "python3"
    old.write_text("#!/bin/sh\n[ \"$1\" = -V ] && echo 'Python 3.9.2' && exit 0\nexit 1\n")
    old.chmod(0o755)
    env = os.environ | {"LINGTAN_ROOT": str(tmp_path / "r"), "PYTHON": str(old)}
    out = subprocess.run(["bash", script], capture_output=True, text=True, env=env, timeout=30,
                         check=False)
    assert out.returncode == 1
    assert "lingtan needs Python 3.11 or newer" in out.stderr
    assert "3.9.2" in out.stderr
