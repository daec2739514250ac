"""Performance metrics on examples computed by hand (the numbers in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.analytics.performance import (
    EquityCurve,
    TradeStats,
    breakdown,
    curve_metrics,
    daily_returns,
    monthly_returns,
    relative_to,
    session_of,
    weekday_of,
)

DAY = 86_400_000_000_000
HOUR = 3_600_000_000_000
NOON = 12 * HOUR  # 1970-01-01 was a Thursday


def _curve() -> EquityCurve:
    # start 100; day 0 ends at 110, day 1 at 99, day 2 at 108.9: returns +10%, -10%, +10%
    ts = np.array([NOON, DAY + NOON, 2 * DAY + HOUR, 2 * DAY + NOON])
    return EquityCurve(ts, np.array([110.0, 99.0, 100.0, 108.9]), 100.0)


def test_daily_returns_sharpe_sortino_and_drawdown_by_hand() -> None:
    curve = _curve()
    np.testing.assert_allclose(daily_returns(curve), [0.10, -0.10, 0.10])
    metrics = curve_metrics(curve)
    # mean 1/30, std (ddof 1) sqrt(((2/30)^2 * 2 + (4/30)^2) / 2) = 0.115470
    assert metrics["sharpe"] == pytest.approx((1 / 30) / 0.1154700538 * math.sqrt(365))
    # downside deviation sqrt((0 + 0.01 + 0) / 3) = 0.057735
    assert metrics["sortino"] == pytest.approx((1 / 30) / 0.0577350269 * math.sqrt(365))
    assert metrics["max_drawdown"] == pytest.approx(0.10)  # 110 -> 99
    assert metrics["max_drawdown_amount"] == pytest.approx(11.0)
    assert metrics["total_return"] == pytest.approx(0.089)
    # span 2 days: CAGR = 1.089^(365/2) - 1; Calmar = CAGR / 0.10
    assert metrics["cagr"] == pytest.approx(1.089 ** 182.5 - 1)
    assert metrics["calmar"] == pytest.approx((1.089 ** 182.5 - 1) / 0.10)


def test_days_without_rows_carry_the_equity_and_months_compound() -> None:
    ts = np.array([NOON, 3 * DAY + NOON, 40 * DAY])  # January 1st, 4th; February 10th
    curve = EquityCurve(ts, np.array([101.0, 103.02, 98.0]), 100.0)
    np.testing.assert_allclose(daily_returns(curve)[:4], [0.01, 0.0, 0.0, 0.02])
    assert len(daily_returns(curve)) == 41
    months = monthly_returns(curve)
    assert [month for month, _ in months] == ["1970-01", "1970-02"]
    assert months[0][1] == pytest.approx(0.0302) and months[1][1] == pytest.approx(98 / 103.02 - 1)
    assert curve_metrics(curve)["positive_months"] == 0.5


def test_trade_statistics_by_hand() -> None:
    stats = TradeStats(pnl=np.array([10.0, -5.0, 20.0, -10.0]), fees=np.ones(4),
                       r_multiple=np.array([1.0, -0.5, 2.0, math.nan]))
    metrics = stats.metrics(max_drawdown_amount=7.5)
    assert metrics["win_rate"] == 0.5
    assert metrics["average_rr"] == pytest.approx(15 / 7.5)  # mean win 15, mean loss 7.5
    assert metrics["profit_factor"] == pytest.approx(30 / 15)
    assert metrics["expectancy_r"] == pytest.approx((1 - 0.5 + 2) / 3)  # the stopless one out
    assert metrics["recovery_factor"] == pytest.approx(15 / 7.5)
    assert metrics["fee_to_pnl"] == pytest.approx(4 / 19)  # 4 of fees on 19 before fees


def test_alpha_beta_and_information_ratio_by_hand() -> None:
    benchmark = np.array([0.01, -0.02, 0.03, 0.0])
    returns = 2 * benchmark + 0.001  # beta 2, 0.1% a day of alpha
    result = relative_to(returns, benchmark)
    assert result["beta"] == pytest.approx(2.0)
    assert result["alpha"] == pytest.approx(0.001 * 365)
    active = returns - benchmark
    assert result["information_ratio"] == pytest.approx(
        active.mean() / active.std(ddof=1) * math.sqrt(365))
    with pytest.raises(ValueError, match="benchmark days"):
        relative_to(returns, benchmark[:3])


def test_sessions_weekdays_and_breakdowns() -> None:
    assert [session_of(hour * HOUR) for hour in (0, 7, 8, 13, 14, 21, 22, 23)] == [
        "asia", "asia", "europe", "europe", "us", "us", "asia", "asia"]
    assert weekday_of(NOON) == "thursday" and weekday_of(3 * DAY) == "sunday"
    rows = breakdown(["b", "a", "b"], np.array([1.0, -2.0, 3.0]), np.array([0.5, -1.0, math.nan]))
    assert rows == [{"key": "a", "trades": 1, "win_rate": 0.0, "pnl": -2.0, "mean_r": -1.0},
                    {"key": "b", "trades": 2, "win_rate": 1.0, "pnl": 4.0, "mean_r": 0.5}]


def test_bad_curves_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="not in order"):
        EquityCurve(np.array([2, 1]), np.array([1.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match="starting equity"):
        EquityCurve(np.array([1]), np.array([1.0]), 0.0)
