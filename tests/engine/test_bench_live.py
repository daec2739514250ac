"""`ats bench live` runs end to end and reports every figure (no timing assertions here: the
figures go to benchmarks/live.json and the README)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.bench_live import bench_live

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def test_bench_live_measures_the_pipeline_next_to_a_bare_loop(
        tmp_path: Path, spot_captures: list[Path]) -> None:
    out = tmp_path / "live.json"
    both = bench_live(spot_captures[0], rate=1000.0, frames=4000, warmup_s=1.0, out=out,
                      journal=tmp_path / "journal.duckdb")
    assert json.loads(out.read_text()) == both
    assert set(both["meets_target"]) == {"ray", "in_process"}
    for mode in ("ray", "in_process"):
        report = both[mode]
        assert both["meets_target"][mode] == report["meets_target"]
        assert report["live_frames"] >= 4000  # every frame sent reached the pipeline
        assert report["measured_frames"] > 1000
        for key in ("bare_send_to_receive_p50_ms", "bare_send_to_receive_p99_ms",
                    "receive_to_feature_p50_ms", "receive_to_feature_p99_ms",
                    "receive_to_decision_p50_ms", "receive_to_decision_p99_ms"):
            assert math.isfinite(report[key]) and report[key] > 0, (mode, key)
        assert report["receive_to_feature_p50_ms"] <= report["receive_to_decision_p50_ms"]
        assert report["receive_to_feature_p99_ms"] <= report["receive_to_decision_p99_ms"]
        assert (tmp_path / f"journal_{mode}.duckdb").exists()
