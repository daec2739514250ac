from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.bench import bench_replay, count_crossings, reference_ema
from engine.synth import synth_from_bars


def _naive_ema(values: list[float], period: int) -> list[float]:
    out = [float("nan")] * len(values)
    if len(values) < period:
        return out
    previous = sum(values[:period]) / period
    out[period - 1] = previous
    alpha = 2 / (period + 1)
    for index in range(period, len(values)):
        previous = previous + alpha * (values[index] - previous)
        out[index] = previous
    return out


def test_reference_ema_matches_the_definition() -> None:
    values = list(np.random.default_rng(3).normal(100, 5, 500))
    np.testing.assert_allclose(reference_ema(np.array(values), 10), _naive_ema(values, 10),
                               rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(reference_ema(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 3),
                                  [np.nan, np.nan, 2.0, 3.0, 4.0])


def test_count_crossings_ignores_touches_and_warm_up() -> None:
    fast = np.array([np.nan, 1.0, 2.0, 2.0, 1.0, 3.0, 3.0])
    slow = np.array([np.nan, 2.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # signs: -, +, 0 (touch), -, +, +  -> crossings at +, -, +  = 3
    assert count_crossings(fast, slow) == 3


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_bench_replay_agrees_with_the_reference(tmp_path: Path, klines_csv: Path) -> None:
    """The benchmark's assertion holds on a small tape: same crossings, sane figures."""
    synth_from_bars(klines_csv, tmp_path / "tape", minutes=180, seed=4)
    report = bench_replay(tmp_path / "tape", out=tmp_path / "replay.json")
    assert report["crossings"] == report["reference_crossings"] > 0
    assert report["trades"] > 300_000
    assert report["trades_per_s"] > 0 and report["reference_trades_per_s"] > 0
    assert report["peak_rss_mb"] > 100
    written = json.loads((tmp_path / "replay.json").read_text())
    assert set(written) >= {"trades", "trades_per_s", "reference_trades_per_s", "ratio",
                            "crossings", "reference_crossings", "peak_rss_mb", "ray_start_s",
                            "learner", "learner_trades_per_s", "learner_ratio"}
    assert written["learner"] == "linear" and written["learner_ratio"] > 0
    assert 0 < written["learner_import_s"] < 30 and written["learner_ratio_after_import"] > 0
    # both plain runs (before and after the learner's) are in the mean it is compared with
    assert written["plain_seconds_mean"] > 0 and written["learner_ratio_steady"] > 0
    assert 0 < written["actors_start_s"] < written["plain_seconds_mean"]
    assert 0 < written["learner_actors_start_s"] < written["learner_seconds"]


def test_bench_montecarlo_times_both_methods(tmp_path: Path) -> None:
    from engine.bench import bench_montecarlo

    report = bench_montecarlo(tmp_path / "montecarlo.json", simulations=500, trades=100,
                              repeats=1)
    assert report["simulations"] == 500 and report["trades"] == 100
    assert report["reorder_s"] > 0 and report["resample_s"] > 0
    assert json.loads((tmp_path / "montecarlo.json").read_text()) == report
