"""The edge outbox: order, persistence of seq, deletion only on acknowledgement."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.outbox import Outbox
from telemetry.sample import decode


def test_seq_is_per_device_strictly_increasing_and_survives_restarts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    a0 = box.append("s", "a", 1000, {"active_power_kw": 1.0})
    a1 = box.append("s", "a", 2000, {"active_power_kw": 2.0})
    b0 = box.append("s", "b", 2000, {"active_power_kw": 3.0})
    assert (a0.seq, a1.seq, b0.seq) == (0, 1, 0)
    # everything acknowledged and the process restarted: seq must not start over
    box.delete([row_id for row_id, _, _ in box.pending(0, 100)])
    box.close()
    box = Outbox(tmp_path / "o.sqlite")
    assert box.depth() == 0
    assert box.append("s", "a", 3000, {"active_power_kw": 4.0}).seq == 2


def test_pending_keeps_append_order_and_topic(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(5):
        box.append("s", "dev" + str(i % 2), 1000 + i, {"active_power_kw": float(i)})
    rows = box.pending(0, 100)
    assert [decode(p)[0].values["active_power_kw"] for _, _, p in rows] == [0, 1, 2, 3, 4]
    assert rows[1][1] == "lingtan/v1/s/dev1/sample"
    assert [r[0] for r in box.pending(rows[2][0], 100)] == [r[0] for r in rows[3:]]
    box.delete([rows[0][0]])
    assert box.depth() == 4
    assert box.oldest_ms() is not None


def test_a_full_outbox_drops_the_oldest_counts_it_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_samples=3)
    for i in range(5):
        box.append("s", "a", 1000 + i, {"active_power_kw": float(i)})
    assert box.depth() == box.cached_depth == 3
    kept = [decode(p)[0].seq for _, _, p in box.pending(0, 10)]
    assert kept == [2, 3, 4]
    assert box.dropped() == 2
    assert "dropped the 2 oldest" in caplog.text
    box.close()
    # the count survives a restart; seq carries on
    box = Outbox(tmp_path / "o.sqlite", max_samples=3)
    assert box.dropped() == 2
    assert box.append("s", "a", 2000, {"active_power_kw": 9.0}).seq == 5
