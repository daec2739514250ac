"""Post-trade analysis on trades computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.analytics.post_trade import attribution, components_of, scorecard, timing

MINUTE = 60_000_000_000


def test_timing_of_a_long_and_a_short_by_hand() -> None:
    columns = timing(side=np.array([1, -1]), entry_ts=np.array([0, 0]),
                     exit_ts=np.array([30 * MINUTE, 10 * MINUTE]),
                     entry_price=np.array([100.0, 100.0]), exit_price=np.array([102.0, 101.0]),
                     mfe=np.array([0.04, 0.02]), mfe_ts=np.array([10 * MINUTE, 5 * MINUTE]))
    # the long kept 2% of a 4% best move; the short lost 1% after being 2% ahead
    np.testing.assert_allclose(columns["move"], [0.02, -0.01])
    np.testing.assert_allclose(columns["capture"], [0.5, -0.5])
    np.testing.assert_allclose(columns["minutes_to_mfe"], [10, 5])
    np.testing.assert_allclose(columns["minutes_after_mfe"], [20, 5])


def test_components_come_from_details_or_the_signal_type() -> None:
    assert components_of({"components": {"breakout": 2, "trend": 0, "rsi": 1}}, None) == {
        "breakout", "rsi"}
    assert components_of(None, "imbalance+liquidity") == {"imbalance", "liquidity"}
    assert components_of({}, None) == set()


def test_attribution_compares_trades_with_and_without_each_component() -> None:
    rows = attribution([{"a", "b"}, {"a"}, {"b"}, set()], np.array([0.02, 0.01, -0.01, -0.02]))
    by_name = {row["component"]: row for row in rows}
    assert by_name["a"]["with"] == 2 and by_name["a"]["with_mean_return"] == pytest.approx(0.015)
    assert by_name["a"]["without_mean_return"] == pytest.approx(-0.015)
    assert by_name["a"]["uplift"] == pytest.approx(0.03)
    # b: with 2% and -1% (mean 0.5%), without 1% and -2% (mean -0.5%)
    assert by_name["b"]["with_win_rate"] == 0.5 and by_name["b"]["uplift"] == pytest.approx(0.01)


def test_the_scorecard_keeps_the_latest_window_per_source() -> None:
    sources = ["x", "x", "x", "y"]
    rows = scorecard(sources, [1.0, 3.0, 3.0, None], np.array([-0.01, 0.02, -0.005, 0.01]),
                     np.array([5.0, 10.0, 30.0, 7.0]), window=2, strong_score=3.0)
    x, y = rows
    # x's latest two trades: both strong (score 3), one won: 50%, mean 0.75%
    assert (x["source"], x["trades"], x["strong_trades"]) == ("x", 2, 2)
    assert x["strong_win_rate"] == 0.5 and x["strong_mean_return"] == pytest.approx(0.0075)
    assert x["false_positive_rate"] == 0.5 and x["decay_minutes"] == 20.0
    assert y["strong_trades"] == 0 and math.isnan(y["strong_win_rate"])
