"""Fixtures: real servers on loopback, fresh per test; `long` tests only when asked; a thread
left running never keeps the run from ending, and a server left running fails it."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemetry.config import BrokerConfig
from tests import servers


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[servers.Server]:
    """A Mosquitto 2 broker of this test's own."""
    with servers.mosquitto(tmp_path) as server:
        yield server


@pytest.fixture
def broker(mosquitto: servers.Server) -> BrokerConfig:
    """Config for the test's Mosquitto, over MQTT 5."""
    return BrokerConfig(url=f"mqtt://127.0.0.1:{mosquitto.port}", protocol="5")


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[servers.VictoriaMetrics]:
    """A VictoriaMetrics of this test's own."""
    with servers.victoria_metrics(tmp_path) as vm:
        yield vm


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `long` run only with LINGTAN_TEST_LONG=1 (what `make test-long` sets),
    however pytest was invoked (`-m integration` included); otherwise they are deselected, and
    pytest's summary counts them as such."""
    if os.environ.get("LINGTAN_TEST_LONG") == "1":
        return
    long = [item for item in items if item.get_closest_marker("long")]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if not item.get_closest_marker("long")]


_EXIT_STATUS = pytest.StashKey[int]()


def _children() -> dict[int, str]:
    """{pid: command line} of this process's live children (servers a test started)."""
    out: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            state, ppid = (d / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            cmd = (d / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue  # ended meanwhile
        if int(ppid) == os.getpid() and state != "Z":
            out[int(d.name)] = cmd.replace(b"\0", b" ").decode(errors="replace").strip()
    return out


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A server a test left running fails the run, named (its command line holds the test's
    tmp folder), and is stopped; then remember the exit status for pytest_unconfigure."""
    deadline = time.monotonic() + 5  # one stopping now is given the time to end
    while (left := _children()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        print(f"\n{len(left)} process(es) a test started and left running:", file=sys.stderr)
        for pid, cmd in sorted(left.items()):
            print(f"  {pid}: {cmd}", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config.stash[_EXIT_STATUS] = int(session.exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A non-daemon thread still running after the summary would keep the process alive for
    ever (CI once waited 80 minutes on a demo's ingest thread): name it, show where it is, and
    end the process, failed."""
    deadline = time.monotonic() + 15
    while True:
        alive = [t for t in threading.enumerate()
                 if t is not threading.main_thread() and not t.daemon and t.is_alive()]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not alive:
        return
    frames = sys._current_frames()
    out = [f"\n{len(alive)} thread(s) still running after the tests, which would keep this "
           "process from ending: a test or the code it runs did not stop them"]
    for t in alive:
        out.append(f"--- thread {t.name!r}")
        frame = frames.get(t.ident or -1)
        if frame is not None:
            out.append("".join(traceback.format_stack(frame)).rstrip())
    print("\n".join(out), file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(config.stash.get(_EXIT_STATUS, 0) or 1)
