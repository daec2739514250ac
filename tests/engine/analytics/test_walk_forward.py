"""Walk-forward windows and selection on hand-made equity curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.analytics.performance import EquityCurve
from engine.analytics.walk_forward import rolling_windows, walk_forward, window_metrics

DAY = 86_400_000_000_000


def _curve(daily: list[float]) -> EquityCurve:
    """Equity at noon of each day, compounding the given daily returns from 100."""
    ts = np.arange(len(daily)) * DAY + DAY // 2
    return EquityCurve(ts, 100.0 * np.cumprod(1.0 + np.asarray(daily)), 100.0)


def test_windows_roll_until_the_out_of_sample_end_leaves_the_data() -> None:
    windows = rolling_windows(0, 10 * DAY, 4 * DAY, 2 * DAY, 2 * DAY)
    assert [(w.in_sample, w.out_of_sample) for w in windows] == [
        ((0, 4 * DAY), (4 * DAY, 6 * DAY)), ((2 * DAY, 6 * DAY), (6 * DAY, 8 * DAY)),
        ((4 * DAY, 8 * DAY), (8 * DAY, 10 * DAY))]
    with pytest.raises(ValueError, match="too short"):
        rolling_windows(0, 5 * DAY, 4 * DAY, 2 * DAY, 1 * DAY)
    with pytest.raises(ValueError, match="positive"):
        rolling_windows(0, 5 * DAY, 0, DAY, DAY)


def test_window_metrics_start_from_the_equity_before_the_window() -> None:
    curve = _curve([0.10, 0.0, 0.05, -0.02])
    metrics = window_metrics(curve, 2 * DAY, 4 * DAY)
    assert metrics["total_return"] == pytest.approx(1.05 * 0.98 - 1)  # from 110, not 100


def test_the_best_in_sample_candidate_is_judged_out_of_sample() -> None:
    steady = [0.01, 0.012, 0.009, 0.011] * 3  # a good system: days alike
    fading = [0.02, 0.021, 0.019, 0.02] * 2 + [-0.01, 0.002, -0.008, 0.001]
    windows = rolling_windows(0, 12 * DAY, 4 * DAY, 4 * DAY, 4 * DAY)
    report = walk_forward({"steady": _curve(steady), "fading": _curve(fading)}, windows)
    first, second = report["windows"]
    # window 0: fading's 2%-a-day beats steady in sample and holds out of sample
    assert first["best"] == "fading" and first["passed"]
    assert first["in_sample_sharpes"]["fading"] > first["in_sample_sharpes"]["steady"]
    # window 1: fading still wins in sample, then loses out of sample: the window fails
    assert second["best"] == "fading" and not second["passed"]
    assert second["out_of_sample_sharpe"] < 0.7 * second["in_sample_sharpe"]
    assert not report["accepted"] and report["passed_windows"] == 1


def test_a_losing_best_candidate_never_passes() -> None:
    losing = [-0.01, -0.012, -0.009, -0.011] * 3
    report = walk_forward({"losing": _curve(losing)},
                          rolling_windows(0, 12 * DAY, 4 * DAY, 4 * DAY, 4 * DAY))
    assert not any(row["passed"] for row in report["windows"])
    assert math.isfinite(report["windows"][0]["in_sample_sharpe"])
