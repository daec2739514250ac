"""Monte Carlo of trade returns: exact answers on small cases, seeded, errors named."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analytics.monte_carlo import MonteCarloConfig, _paths, simulate, trade_returns


def test_trade_returns_are_over_the_equity_before_each_trade() -> None:
    np.testing.assert_allclose(trade_returns(np.array([10.0, -22.0, 5.0]), 100.0),
                               [0.1, -0.2, 5.0 / 88.0])
    with pytest.raises(ValueError, match="before trade 1"):
        trade_returns(np.array([-100.0, 5.0]), 100.0)


def test_one_path_by_hand() -> None:
    stats = _paths(np.array([[0.1, -0.5, 0.2, 1.0]]))
    # equity 1, 1.1, 0.55, 0.66, 1.32: worst fall from 1.1 to 0.55, below the peak for 2 trades
    assert stats["max_drawdown"][0] == pytest.approx(0.5)
    assert stats["time_to_recover"][0] == 2  # 0.55 and 0.66 are below 1.1; 1.32 recovers
    assert stats["total_return"][0] == pytest.approx(0.32)
    assert stats["minimum"][0] == pytest.approx(0.55)


def test_reordering_keeps_the_total_and_finds_the_ruinous_order() -> None:
    # only the order that starts with -60% falls below half the start: 1 in 3
    report = simulate(np.array([-0.6, 0.5, 0.5]), "reorder", MonteCarloConfig(simulations=30_000))
    assert report["total_return"]["p5"] == pytest.approx(0.4 * 1.5 * 1.5 - 1)
    assert report["total_return"]["p95"] == pytest.approx(0.4 * 1.5 * 1.5 - 1)
    assert report["ruin_probability"] == pytest.approx(1 / 3, abs=0.01)
    assert report["verdict"].startswith("fail: ruin probability 33")


def test_resampling_varies_the_total_and_is_seeded() -> None:
    returns = np.random.default_rng(3).normal(0.002, 0.01, 500)
    config = MonteCarloConfig(simulations=2_500, seed=11)
    first = simulate(returns, "resample", config, trades_per_year=250)
    assert first == simulate(returns, "resample", config, trades_per_year=250)
    spread = first["total_return"]
    assert spread["p5"] < spread["p50"] < spread["p95"]
    assert first["ruin_probability"] == 0.0 and first["verdict"].startswith("pass")
    other = simulate(returns, "resample", MonteCarloConfig(simulations=2_500, seed=12), 250)
    assert other["total_return"] != first["total_return"]
    assert first["sharpe"]["p50"] == pytest.approx(
        returns.mean() / returns.std(ddof=1) * np.sqrt(250), rel=0.2)


def test_bad_input_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="2 or more finite"):
        simulate(np.array([0.1]), "reorder", MonteCarloConfig())
    with pytest.raises(ValueError, match="non-finite"):
        simulate(np.array([0.1, np.nan]), "reorder", MonteCarloConfig())
    with pytest.raises(ValueError, match="method 'shuffle'"):
        simulate(np.array([0.1, 0.2]), "shuffle", MonteCarloConfig())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="simulations"):
        MonteCarloConfig(simulations=0)
