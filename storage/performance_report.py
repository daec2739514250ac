"""A run's performance read from its journal: the metrics of `engine.analytics.performance` over
the `equity`, `trades`, `signals` and `features` tables.

The benchmark is buy-and-hold of the traded symbols: the last close of each UTC day of each
symbol's journaled bars (`features`), equal-weighted, over the days of the equity curve. A run
whose config did not journal features has no benchmark (alpha, beta and information ratio NaN,
and `benchmark` says why).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from engine.analytics.performance import (
    EquityCurve,
    TradeStats,
    breakdown,
    curve_metrics,
    daily_closes,
    daily_returns,
    monthly_returns,
    relative_to,
    session_of,
    weekday_of,
)
from storage.report import configured_initial_equity


def load_curve(connection: duckdb.DuckDBPyConnection, initial: float) -> EquityCurve:
    rows = connection.execute("SELECT ts_event, equity FROM equity ORDER BY ts_event, key"
                              ).fetchall()
    ts = np.asarray([row[0] for row in rows], np.int64)
    equity = np.asarray([row[1] for row in rows], np.float64)
    return EquityCurve(ts, equity, initial)


def journal_performance(journal_path: Path | str,
                        initial_equity: float | None = None) -> dict[str, Any]:
    """Every metric of the module docs, the monthly returns and the breakdowns."""
    initial_equity = configured_initial_equity(journal_path, initial_equity)
    with duckdb.connect(str(journal_path), read_only=True) as connection:
        curve = load_curve(connection, initial_equity)
        trades = connection.execute(
            "SELECT t.symbol, t.entry_ts, t.pnl, t.fees, t.r_multiple, s.regime "
            "FROM trades t LEFT JOIN signals s ON s.key = t.entry_signal_id "
            "ORDER BY t.exit_ts, t.key").fetchall()
        closes = connection.execute(
            "SELECT symbol, ts_close, close FROM features ORDER BY symbol, ts_close").fetchall()
    metrics = curve_metrics(curve)
    stats = TradeStats(
        pnl=np.asarray([row[2] for row in trades], np.float64),
        fees=np.asarray([row[3] for row in trades], np.float64),
        r_multiple=np.asarray([math.nan if row[4] is None else row[4] for row in trades],
                              np.float64))
    metrics.update(stats.metrics(metrics["max_drawdown_amount"]))
    benchmark, why = _benchmark(curve, closes)
    metrics.update(relative_to(daily_returns(curve), benchmark) if benchmark is not None else
                   {"alpha": math.nan, "beta": math.nan, "information_ratio": math.nan})
    entries = [row[1] for row in trades]
    return {
        "metrics": metrics,
        "benchmark": why,
        "monthly_returns": monthly_returns(curve),
        "breakdowns": {
            "weekday": breakdown([weekday_of(ts) for ts in entries], stats.pnl,
                                 stats.r_multiple),
            "session": breakdown([session_of(ts) for ts in entries], stats.pnl,
                                 stats.r_multiple),
            "regime": breakdown([row[5] or "unknown" for row in trades], stats.pnl,
                                stats.r_multiple),
            "symbol": breakdown([row[0] for row in trades], stats.pnl, stats.r_multiple),
        },
    }


def _benchmark(curve: EquityCurve, closes: list[tuple[str, int, float]]
               ) -> tuple[np.ndarray | None, str]:
    """Daily returns of equal-weighted buy-and-hold over the curve's days, or None and why."""
    if not len(curve.ts):
        return None, "no equity rows"
    if not closes:
        return None, "no journaled bars (replay.journal_features) to buy and hold"
    days, _ = daily_closes(curve.ts, curve.equity)
    series = []
    for symbol in sorted({row[0] for row in closes}):
        rows = [(ts, close) for name, ts, close in closes if name == symbol]
        ts = np.asarray([row[0] for row in rows], np.int64)
        close_days, close_values = daily_closes(ts, np.asarray([row[1] for row in rows]))
        position = np.searchsorted(close_days, days, "right") - 1
        if position[0] < 0:  # no close yet on the first day: start from the first close
            position = np.maximum(position, 0)
        values = close_values[position]
        first = close_values[0]
        series.append(values / np.r_[first, values[:-1]] - 1.0)
    return np.mean(series, axis=0), "equal-weighted buy-and-hold of " + ", ".join(
        sorted({row[0] for row in closes}))


def journal_monte_carlo(journal_path: Path | str, simulations: int = 10_000, seed: int = 7,
                        initial_equity: float | None = None) -> dict[str, Any]:
    """Both Monte Carlo methods (`engine.analytics.monte_carlo`) over the run's round trips, in
    the order they closed; the Sharpe annualised by the run's trades per year (its trades over
    the span of its equity curve, at least one day)."""
    from engine.analytics.monte_carlo import METHODS, MonteCarloConfig, simulate, trade_returns

    initial_equity = configured_initial_equity(journal_path, initial_equity)
    with duckdb.connect(str(journal_path), read_only=True) as connection:
        pnl = np.asarray([row[0] for row in connection.execute(
            "SELECT pnl FROM trades ORDER BY exit_ts, key").fetchall()], np.float64)
        span = connection.execute("SELECT min(ts_event), max(ts_event) FROM equity").fetchone()
    if len(pnl) < 2:
        return {"skipped": f"{len(pnl)} round trips: Monte Carlo needs 2 or more"}
    days = 1.0
    if span is not None and span[0] is not None:
        days = max(1.0, (int(span[1]) - int(span[0])) / 86_400_000_000_000)
    returns = trade_returns(pnl, initial_equity)
    config = MonteCarloConfig(simulations=simulations, seed=seed)
    return {method: simulate(returns, method, config, trades_per_year=len(pnl) * 365 / days)
            for method in METHODS}


def journal_post_trade(journal_path: Path | str, window: int = 50) -> dict[str, Any]:
    """`engine.analytics.post_trade` over the journal's round trips and their entry signals."""
    import json

    from engine.analytics.post_trade import attribution, components_of, scorecard, timing

    with duckdb.connect(str(journal_path), read_only=True) as connection:
        rows = connection.execute(
            "SELECT t.key, t.symbol, t.side, t.entry_ts, t.exit_ts, t.entry_price, "
            "t.exit_price, t.mfe, t.mae, t.mfe_ts, t.exit_reason, t.return_pct, "
            "s.reason, s.score, s.details, s.signal_type FROM trades t "
            "LEFT JOIN signals s ON s.key = t.entry_signal_id ORDER BY t.exit_ts, t.key"
        ).fetchall()
    if not rows:
        return {"trades": [], "attribution": [], "scorecard": []}

    def column(index: int) -> np.ndarray:
        return np.asarray([row[index] for row in rows], np.float64)

    columns = timing(column(2), column(3), column(4), column(5), column(6), column(7),
                     column(9))
    returns = column(11) / 100.0
    details = [json.loads(row[14]) if row[14] else None for row in rows]
    trades = [{"key": row[0], "symbol": row[1], "exit_reason": row[10], "mfe": row[7],
               "mae": row[8], "return": float(returns[index]),
               **{name: float(values[index]) for name, values in columns.items()}}
              for index, row in enumerate(rows)]
    return {
        "trades": trades,
        "attribution": attribution([components_of(item, row[15])
                                    for item, row in zip(details, rows, strict=True)], returns),
        "scorecard": scorecard([row[12] or "unknown" for row in rows],
                               [row[13] for row in rows], returns,
                               columns["minutes_to_mfe"], window),
    }
