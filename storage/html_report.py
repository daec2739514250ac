"""`ats report JOURNAL --out report.html`: one self-contained HTML file of a run.

It carries the metrics table, the equity and drawdown curves, the trades marked on the price,
a monthly-returns heatmap, the Monte Carlo fan with both methods' percentiles, the breakdowns,
and the walk-forward windows when a `walkforward.json` is given. Charts are inline SVG with no
script and nothing fetched, so the file opens anywhere, offline, without console errors.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from engine.analytics import svg
from engine.analytics.monte_carlo import MonteCarloConfig, fan, trade_returns
from engine.analytics.performance import METRIC_ROWS, drawdown_series
from storage.performance_report import journal_monte_carlo, journal_performance, load_curve
from storage.report import initial_equity_in, run_record

NS_PER_DAY = 86_400_000_000_000
_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:960px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border:1px solid #ddd}
th{background:#f4f4f4;text-align:left}svg{width:100%;height:auto;background:#fff}
.title{font-size:13px;font-weight:600}.tick{font-size:10px;fill:#666}
.grid{stroke:#eee}.heatmap td{text-align:right;min-width:52px}.fail{color:#c62828}
.pass{color:#2e7d32}
"""


def _number(value: Any, kind: str = "num") -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return f"{value:.2%}" if kind == "pct" else f"{value:,.3f}"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    body = "".join("<tr>" + "".join(
        f"<td>{html.escape(_number(row[name]) if isinstance(row[name], float) else str(row[name]))}"
        "</td>" for name in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def build_html(journal: Path | str, walkforward: dict[str, Any] | None = None,
               performance: dict[str, Any] | None = None, carlo: dict[str, Any] | None = None,
               initial_equity: float | None = None) -> str:
    """The report of the module docs as an HTML string; `performance` and `carlo` are computed
    here unless the caller already has them (`journal_performance`, `journal_monte_carlo`)."""
    record = run_record(journal)
    initial = initial_equity if initial_equity is not None else initial_equity_in(record)
    performance = performance or journal_performance(journal, initial)
    carlo = carlo or journal_monte_carlo(journal, initial_equity=initial)
    metrics = performance["metrics"]
    with duckdb.connect(str(journal), read_only=True) as connection:
        curve = load_curve(connection, initial)
        trades = connection.execute(
            "SELECT symbol, side, entry_ts, exit_ts, entry_price, exit_price, pnl FROM trades "
            "ORDER BY exit_ts, key").fetchall()
        symbol = trades[0][0] if trades else None
        closes = connection.execute(
            "SELECT ts_close, close FROM features WHERE symbol = ? ORDER BY ts_close",
            [symbol]).fetchall() if symbol else []
    parts = [f"<h1>Run {html.escape(str(record.get('run_id', Path(journal).name)))}</h1>",
             f"<p>{html.escape(str(record.get('input', '')))} &middot; "
             f"{html.escape(str(record.get('config', {}).get('name', '')))}</p>",
             "<h2>Metrics</h2>",
             _table([{"metric": label, "value": _number(metrics.get(key), kind)}
                     for key, label, kind in METRIC_ROWS]
                    + [{"metric": "benchmark", "value": performance["benchmark"]}],
                    ["metric", "value"])]
    if len(curve.ts):
        days = (curve.ts - curve.ts[0]) / NS_PER_DAY
        falls, peaks = drawdown_series(curve)
        parts += ["<h2>Equity and drawdown</h2>",
                  svg.line_chart("equity (x: days)", days, [("equity", curve.equity,
                                                             "#1f4e79")]),
                  svg.line_chart("drawdown (x: days)", days,
                                 [("drawdown", -falls / peaks, "#c62828")], ".1%")]
    if closes and symbol is not None:
        start = closes[0][0]
        x = (np.asarray([row[0] for row in closes], np.int64) - start) / NS_PER_DAY
        price = np.asarray([row[1] for row in closes], np.float64)
        mine = [row for row in trades if row[0] == symbol]
        parts += [f"<h2>Trades on {html.escape(symbol)}</h2>", svg.price_with_trades(
            "entries (triangles) and exits (circles), x: days", x, price,
            [((row[2] - start) / NS_PER_DAY, row[4], row[1]) for row in mine],
            [((row[3] - start) / NS_PER_DAY, row[5], row[6]) for row in mine])]
    parts += ["<h2>Monthly returns</h2>", svg.heatmap("monthly returns",
                                                      performance["monthly_returns"])]
    parts += _monte_carlo_section(carlo, initial, [row[6] for row in trades])
    parts += _post_trade_section(journal)
    for name, rows in performance["breakdowns"].items():
        if rows:
            parts += [f"<h2>By {name}</h2>", _table(rows, ["key", "trades", "win_rate", "pnl",
                                                           "mean_r"])]
    if walkforward is not None:
        parts += _walkforward_section(walkforward)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>ATS report</title><style>{_STYLE}</style></head><body>"
            + "".join(parts) + "</body></html>")


def _monte_carlo_section(carlo: dict[str, Any], initial: float,
                         pnl: list[float]) -> list[str]:
    if "skipped" in carlo:
        return ["<h2>Monte Carlo</h2>", f"<p>{html.escape(carlo['skipped'])}</p>"]
    returns = trade_returns(np.asarray(pnl, np.float64), initial)
    levels = fan(returns, "resample", MonteCarloConfig())
    steps = np.arange(levels.shape[1], dtype=np.float64)
    chart = svg.band_chart("resampled equity, 5-95% and 25-75% of paths (x: trades)", steps,
                           [(levels[0], levels[4], "rgba(31,78,121,0.15)"),
                            (levels[1], levels[3], "rgba(31,78,121,0.30)")], levels[2])
    rows = []
    for method, result in carlo.items():
        for name in ("total_return", "max_drawdown", "sharpe", "time_to_recover"):
            kind = "pct" if name in ("total_return", "max_drawdown") else "num"
            rows.append({"method": method, "measure": name,
                         **{level: _number(result[name][level], kind)
                            for level in ("p5", "p50", "p95")}})
    verdicts = "".join(f"<p class=\"{'pass' if result['verdict'].startswith('pass') else 'fail'}"
                       f"\">{method}: {html.escape(result['verdict'])}</p>"
                       for method, result in carlo.items())
    return ["<h2>Monte Carlo</h2>", chart, verdicts,
            _table(rows, ["method", "measure", "p5", "p50", "p95"])]


def _post_trade_section(journal: Path | str) -> list[str]:
    from engine.analytics.post_trade import worst_and_best
    from storage.performance_report import journal_post_trade

    analysis = journal_post_trade(journal)
    if not analysis["trades"]:
        return []
    trades = worst_and_best(analysis["trades"], "return")
    return ["<h2>Post-trade</h2>",
            "<p>Worst and best trades: MFE/MAE from entry, the share of the MFE kept "
            "(capture), minutes to the MFE and from it to the exit.</p>",
            _table(trades, ["key", "exit_reason", "return", "mfe", "mae", "capture",
                            "minutes_to_mfe", "minutes_after_mfe"]),
            "<h3>Signal components at entry</h3>",
            _table(analysis["attribution"], ["component", "with", "with_win_rate",
                                             "with_mean_return", "without", "without_win_rate",
                                             "without_mean_return", "uplift"]),
            "<h3>Scorecard per signal source (latest 50 trades)</h3>",
            _table(analysis["scorecard"], ["source", "trades", "strong_threshold",
                                           "strong_trades", "strong_win_rate",
                                           "strong_mean_return", "false_positive_rate",
                                           "decay_minutes"])]


def _walkforward_section(report: dict[str, Any]) -> list[str]:
    rows = [{"window": row["window"], "best": row["best"],
             "in-sample Sharpe": row["in_sample_sharpe"],
             "out-of-sample Sharpe": row["out_of_sample_sharpe"],
             "passed": "pass" if row["passed"] else "fail"} for row in report["windows"]]
    verdict = "accepted" if report["accepted"] else "rejected"
    return ["<h2>Walk-forward</h2>",
            f"<p>{verdict}: {report['passed_windows']} of {len(rows)} windows hold "
            f"{report['min_ratio']:.0%} of their in-sample Sharpe</p>",
            _table(rows, ["window", "best", "in-sample Sharpe", "out-of-sample Sharpe",
                          "passed"])]


def write_html_report(journal: Path | str, out: Path | str,
                      walkforward: Path | str | None = None,
                      performance: dict[str, Any] | None = None,
                      carlo: dict[str, Any] | None = None,
                      initial_equity: float | None = None) -> Path:
    """Write the report; `walkforward` is a `walkforward.json` to include."""
    report = json.loads(Path(walkforward).read_text()) if walkforward is not None else None
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(build_html(journal, report, performance, carlo, initial_equity))
    return target
