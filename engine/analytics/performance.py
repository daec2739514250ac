"""Performance metrics of a run, from its equity curve and round trips, with the formulas stated.

Crypto trades every day of the year: returns are **daily** (UTC days) and annualised with
**365** days. Risk-free rate 0.

Equity curve (`EquityCurve`: times and equity, plus the starting equity):
- daily return r_d = E_d / E_(d-1) - 1, with E_d the last equity of UTC day d and E_(first-1) the
  starting equity; days without a row carry the previous equity (a 0 return);
- Sharpe = mean(r) / std(r) x sqrt(365), std with ddof=1; NaN with fewer than 2 days or std 0;
- Sortino = mean(r) / DD x sqrt(365), DD = sqrt(mean(min(r, 0)^2)) (downside deviation about 0);
  NaN when no day lost;
- max drawdown = max over t of (peak_t - E_t) / peak_t, peak_t the highest equity up to t (every
  row, not just day ends), as a fraction; `max_drawdown_amount` the same in currency;
- CAGR = (E_end / E_start)^(365 / days) - 1, days the span from the first to the last row
  (at least one day); Calmar = CAGR / max drawdown;
- monthly returns: the last equity of each calendar month over the previous month's (the first
  over the starting equity); `positive_months` is the share above 0.

Round trips (`TradeStats`, from the journal's `trades`):
- win rate = trades with pnl > 0 / trades (pnl after fees and funding);
- average R:R (payoff) = mean pnl of winners / |mean pnl of losers|;
- profit factor = gross profit / gross loss (sum of winners / |sum of losers|);
- expectancy in R = mean of r_multiple = pnl / initial risk (quantity x stop distance at entry),
  over trades that had a stop;
- recovery factor = net profit / max drawdown amount;
- fee-to-P&L = fees / |P&L before fees| (pnl + fees summed over trades).

Benchmark (`relative_to`): buy-and-hold of the traded asset(s), daily returns b_d of the last close
of each day (equal-weighted across symbols):
- beta = cov(r, b) / var(b); alpha = (mean(r) - beta x mean(b)) x 365;
- information ratio = mean(r - b) / std(r - b) x sqrt(365).

Breakdowns (`breakdown`): trades grouped by a key (day of week and session of the entry, the
entry signal's regime, symbol) with count, win rate, total pnl and mean R. Sessions by the entry's
UTC hour: Asia 22:00-07:59, Europe 08:00-13:59, US 14:00-21:59.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DAYS_PER_YEAR = 365
# The metrics a report shows, in order: (key, label, "pct" or "num").
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "total return", "pct"), ("cagr", "CAGR (365-day year)", "pct"),
    ("sharpe", "Sharpe (daily, x sqrt 365)", "num"), ("sortino", "Sortino", "num"),
    ("max_drawdown", "max drawdown", "pct"), ("calmar", "Calmar", "num"),
    ("win_rate", "win rate", "pct"), ("average_rr", "average R:R", "num"),
    ("profit_factor", "profit factor", "num"), ("expectancy_r", "expectancy (R)", "num"),
    ("recovery_factor", "recovery factor", "num"),
    ("fee_to_pnl", "fees / P&L before fees", "pct"),
    ("positive_months", "positive months", "pct"), ("alpha", "alpha (annual)", "pct"),
    ("beta", "beta", "num"), ("information_ratio", "information ratio", "num"),
)
NS_PER_DAY = 86_400_000_000_000
SESSIONS = (("asia", 22, 8), ("europe", 8, 14), ("us", 14, 22))
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class EquityCurve:
    """The equity after each journaled event, in time order, and the run's starting equity."""

    ts: np.ndarray  # int64 ns
    equity: np.ndarray
    initial: float

    def __post_init__(self) -> None:
        if len(self.ts) != len(self.equity):
            raise ValueError("equity curve: times and values differ in length")
        if len(self.ts) > 1 and np.any(np.diff(self.ts) < 0):
            raise ValueError("equity curve: times are not in order")
        if not (math.isfinite(self.initial) and self.initial > 0):
            raise ValueError(f"equity curve: starting equity must be > 0, got {self.initial}")


def daily_closes(ts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(UTC day number, last value of that day) for every day from the first to the last,
    a day without a value carrying the previous one."""
    if not len(ts):
        return np.empty(0, np.int64), np.empty(0)
    day = np.asarray(ts, np.int64) // NS_PER_DAY
    last = np.flatnonzero(np.r_[day[1:] != day[:-1], True])
    days = np.arange(day[0], day[-1] + 1)
    index = np.searchsorted(day[last], days, "right") - 1
    return days, np.asarray(values, np.float64)[last][index]


def daily_returns(curve: EquityCurve) -> np.ndarray:
    """r_d of the module docs."""
    _, closes = daily_closes(curve.ts, curve.equity)
    if not len(closes):
        return np.empty(0)
    previous = np.r_[curve.initial, closes[:-1]]
    return closes / previous - 1.0


def sharpe(returns: np.ndarray) -> float:
    if len(returns) < 2:
        return math.nan
    deviation = float(np.std(returns, ddof=1))
    return float(np.mean(returns)) / deviation * math.sqrt(DAYS_PER_YEAR) if deviation > 0 else (
        math.nan)


def sortino(returns: np.ndarray) -> float:
    if not len(returns):
        return math.nan
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    return float(np.mean(returns)) / downside * math.sqrt(DAYS_PER_YEAR) if downside > 0 else (
        math.nan)


def drawdown_series(curve: EquityCurve) -> tuple[np.ndarray, np.ndarray]:
    """(fall below the peak so far, that peak) at each row, the starting equity counting as a
    peak."""
    peaks = np.maximum.accumulate(np.r_[curve.initial, curve.equity])[1:]
    return peaks - curve.equity, peaks


def drawdowns(curve: EquityCurve) -> tuple[float, float]:
    """(max drawdown as a fraction, in currency), the starting equity counting as a peak."""
    if not len(curve.equity):
        return 0.0, 0.0
    falls, peaks = drawdown_series(curve)
    return max(0.0, float(np.max(falls / peaks))), max(0.0, float(np.max(falls)))


def cagr(curve: EquityCurve) -> float:
    if not len(curve.equity):
        return 0.0
    days = max(1.0, (int(curve.ts[-1]) - int(curve.ts[0])) / NS_PER_DAY)
    growth = float(curve.equity[-1]) / curve.initial
    return growth ** (DAYS_PER_YEAR / days) - 1.0 if growth > 0 else -1.0


def monthly_returns(curve: EquityCurve) -> list[tuple[str, float]]:
    """("YYYY-MM", return) per calendar month with equity rows, in order."""
    if not len(curve.ts):
        return []
    months = np.asarray(curve.ts, "datetime64[ns]").astype("datetime64[M]")
    last = np.flatnonzero(np.r_[months[1:] != months[:-1], True])
    closes = curve.equity[last]
    previous = np.r_[curve.initial, closes[:-1]]
    return [(str(month), float(close / before - 1.0))
            for month, close, before in zip(months[last], closes, previous, strict=True)]


def curve_metrics(curve: EquityCurve) -> dict[str, float]:
    returns = daily_returns(curve)
    max_drawdown, max_drawdown_amount = drawdowns(curve)
    growth = cagr(curve)
    months = monthly_returns(curve)
    final = float(curve.equity[-1]) if len(curve.equity) else curve.initial
    return {
        "total_return": final / curve.initial - 1.0,
        "cagr": growth,
        "sharpe": sharpe(returns),
        "sortino": sortino(returns),
        "max_drawdown": max_drawdown,
        "max_drawdown_amount": max_drawdown_amount,
        "calmar": growth / max_drawdown if max_drawdown > 0 else math.nan,
        "days": float(len(returns)),
        "positive_months": (sum(value > 0 for _, value in months) / len(months)
                            if months else math.nan),
    }


@dataclass(frozen=True)
class TradeStats:
    """The journal's round trips as columns."""

    pnl: np.ndarray
    fees: np.ndarray
    r_multiple: np.ndarray  # NaN where the trade had no stop

    def metrics(self, max_drawdown_amount: float) -> dict[str, float]:
        pnl = self.pnl
        wins, losses = pnl[pnl > 0], pnl[pnl < 0]
        gross_loss = float(-losses.sum())
        before_fees = float(pnl.sum() + self.fees.sum())
        with_risk = self.r_multiple[np.isfinite(self.r_multiple)]
        net = float(pnl.sum())
        return {
            "trades": float(len(pnl)),
            "win_rate": len(wins) / len(pnl) if len(pnl) else math.nan,
            "average_rr": (float(wins.mean()) / abs(float(losses.mean()))
                           if len(wins) and len(losses) else math.nan),
            "profit_factor": float(wins.sum()) / gross_loss if gross_loss > 0 else math.nan,
            "expectancy_r": float(with_risk.mean()) if len(with_risk) else math.nan,
            "net_profit": net,
            "fees": float(self.fees.sum()),
            "recovery_factor": net / max_drawdown_amount if max_drawdown_amount > 0 else (
                math.nan),
            "fee_to_pnl": (float(self.fees.sum()) / abs(before_fees) if before_fees != 0
                           else math.nan),
        }


def relative_to(returns: np.ndarray, benchmark: np.ndarray) -> dict[str, float]:
    """Alpha, beta and information ratio of daily returns against a benchmark's (module docs)."""
    if len(returns) != len(benchmark):
        raise ValueError(f"{len(returns)} daily returns against {len(benchmark)} benchmark days")
    if len(returns) < 2 or float(np.var(benchmark, ddof=1)) == 0:
        return {"alpha": math.nan, "beta": math.nan, "information_ratio": math.nan}
    beta = float(np.cov(returns, benchmark, ddof=1)[0, 1] / np.var(benchmark, ddof=1))
    alpha = (float(np.mean(returns)) - beta * float(np.mean(benchmark))) * DAYS_PER_YEAR
    active = returns - benchmark
    spread = float(np.std(active, ddof=1))
    information = float(np.mean(active)) / spread * math.sqrt(DAYS_PER_YEAR) if spread > 0 else (
        math.nan)
    return {"alpha": alpha, "beta": beta, "information_ratio": information}


def session_of(ts: int) -> str:
    hour = (int(ts) // 3_600_000_000_000) % 24
    for name, start, end in SESSIONS:
        if (start <= hour < end) if start < end else (hour >= start or hour < end):
            return name
    raise AssertionError(f"hour {hour} in no session")  # the sessions cover the day


def weekday_of(ts: int) -> str:
    return WEEKDAYS[(int(ts) // NS_PER_DAY + 3) % 7]  # 1970-01-01 was a Thursday


def breakdown(keys: Sequence[Any], pnl: np.ndarray, r_multiple: np.ndarray
              ) -> list[dict[str, Any]]:
    """Per key (sorted): trades, win rate, total pnl, mean R (over trades with a stop)."""
    rows = []
    keys_array = np.asarray([str(key) for key in keys])
    for key in sorted(set(keys_array.tolist())):
        mask = keys_array == key
        risk = r_multiple[mask][np.isfinite(r_multiple[mask])]
        rows.append({"key": key, "trades": int(mask.sum()),
                     "win_rate": float((pnl[mask] > 0).mean()),
                     "pnl": float(pnl[mask].sum()),
                     "mean_r": float(risk.mean()) if len(risk) else math.nan})
    return rows
