"""A month of the bundled klines (four trades a bar) replayed with the EMA cross: the journal's
Sharpe, Sortino and max drawdown agree with an independent computation from its equity table
(SQL day ends, Python's statistics module, a plain loop for the drawdown)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import duckdb
import pytest

from engine.config import load_config
from engine.runtime import REPO_ROOT, run_replay
from storage.performance_report import journal_performance
from tests.support.kline_tape import kline_tape

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory, klines_csv: Path) -> Path:
    root = tmp_path_factory.mktemp("month")
    tape = kline_tape(klines_csv, root / "tape")
    config = load_config(REPO_ROOT / "configs" / "ema_cross.yaml")
    return run_replay([tape], config, root / "journal.duckdb", in_process=True).journal_path


def test_sharpe_sortino_and_drawdown_match_an_independent_computation(month: Path) -> None:
    report = journal_performance(month)
    metrics = report["metrics"]
    with duckdb.connect(str(month), read_only=True) as connection:
        day_ends = [row[1] for row in connection.execute(
            "SELECT day, arg_max(equity, position) FROM ("
            "  SELECT ts_event // 86400000000000 AS day, equity, "
            "         row_number() OVER (ORDER BY ts_event, key) AS position FROM equity)"
            " GROUP BY day ORDER BY day").fetchall()]
        equity = [row[0] for row in connection.execute(
            "SELECT equity FROM equity ORDER BY ts_event, key").fetchall()]
        initial = 100_000.0
    assert len(day_ends) >= 28
    previous = [initial, *day_ends[:-1]]
    returns = [end / before - 1 for end, before in zip(day_ends, previous, strict=True)]
    sharpe = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365)
    downside = math.sqrt(sum(min(value, 0.0) ** 2 for value in returns) / len(returns))
    sortino = statistics.mean(returns) / downside * math.sqrt(365)
    peak, worst = initial, 0.0
    for value in equity:
        peak = max(peak, value)
        worst = max(worst, (peak - value) / peak)
    assert metrics["sharpe"] == pytest.approx(sharpe, rel=1e-9)
    assert metrics["sortino"] == pytest.approx(sortino, rel=1e-9)
    assert metrics["max_drawdown"] == pytest.approx(worst, rel=1e-9)
    assert metrics["trades"] > 20 and metrics["max_drawdown"] > 0


def test_the_report_has_monthly_returns_breakdowns_and_a_benchmark(month: Path) -> None:
    report = journal_performance(month)
    assert report["monthly_returns"][0][0].startswith("20")
    assert "buy-and-hold of BTCUSDT" in report["benchmark"]
    assert math.isfinite(report["metrics"]["beta"])
    trades = int(report["metrics"]["trades"])
    for name in ("weekday", "session", "regime", "symbol"):
        assert sum(row["trades"] for row in report["breakdowns"][name]) == trades
    assert {row["key"] for row in report["breakdowns"]["session"]} <= {"asia", "europe", "us"}


def test_monte_carlo_of_the_runs_trades(month: Path) -> None:
    from storage.performance_report import journal_monte_carlo

    report = journal_monte_carlo(month, simulations=2_000)
    reorder, resample = report["reorder"], report["resample"]
    metrics = journal_performance(month)["metrics"]
    # reordering keeps the product of the trade returns: the run's realised return
    assert reorder["total_return"]["p50"] == pytest.approx(
        metrics["net_profit"] / 100_000.0, rel=1e-6)
    assert resample["total_return"]["p5"] < resample["total_return"]["p95"]
    assert reorder["trades"] == metrics["trades"]
    assert reorder["verdict"].startswith(("pass", "fail"))


def test_post_trade_analysis_of_the_runs_trades(month: Path) -> None:
    from storage.performance_report import journal_post_trade

    analysis = journal_post_trade(month)
    with duckdb.connect(str(month), read_only=True) as connection:
        spans = connection.execute(
            "SELECT entry_ts, exit_ts, mfe_ts, mae_ts FROM trades ORDER BY exit_ts, key"
        ).fetchall()
    assert len(analysis["trades"]) == len(spans) > 20
    for (entry, exit_, best, worst), trade in zip(spans, analysis["trades"], strict=True):
        assert entry <= best <= exit_ and entry <= worst <= exit_
        assert trade["capture"] <= 1.0 + 1e-9 or math.isnan(trade["capture"])
        assert trade["minutes_to_mfe"] + trade["minutes_after_mfe"] == pytest.approx(
            (exit_ - entry) / 60e9)
    assert {row["source"] for row in analysis["scorecard"]} == {"ema_cross_up",
                                                                "ema_cross_down"}
    assert {row["component"] for row in analysis["attribution"]} == {"ema_cross_up",
                                                                     "ema_cross_down"}
