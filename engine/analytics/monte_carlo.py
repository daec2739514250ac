"""Monte Carlo of a run's trade returns: how lucky was the order, how lucky was the sample.

A trade's return is its P&L over the equity before it closed, counting closed trades only:
r_i = pnl_i / (E_0 + pnl_1 + ... + pnl_(i-1)). Each simulation compounds a sequence of such
returns from 1.0:
- `reorder`: the same returns in a random order (the total return is fixed; drawdowns and
  recovery times are not);
- `resample`: as many returns drawn with replacement (the bootstrap: the total varies too).

Per simulation: total return; max drawdown (the start counts as a peak); Sharpe of the trade
returns, annualised by the run's trades per year (mean / std x sqrt(trades per year)); time to
recover, the longest stretch of trades spent below a previous peak; ruin, whether equity ever
fell below `ruin_level` (50%) of the start. The report gives the 5th, 50th and 95th percentiles
of each, the probability of ruin and the verdict against `max_ruin_probability` (2%).

Vectorised over blocks of simulations (a (block, trades) array at a time, no Python loop per
simulation or per trade) and seeded: the same returns and seed give the same report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Method = Literal["reorder", "resample"]
METHODS: tuple[Method, ...] = ("reorder", "resample")
PERCENTILES = (5, 50, 95)
_BLOCK = 2_000


@dataclass(frozen=True)
class MonteCarloConfig:
    simulations: int = 10_000
    seed: int = 7
    ruin_level: float = 0.5
    max_ruin_probability: float = 0.02

    def __post_init__(self) -> None:
        if self.simulations < 1:
            raise ValueError(f"simulations must be >= 1, got {self.simulations}")
        if not 0 < self.ruin_level < 1:
            raise ValueError(f"ruin_level must be in (0, 1), got {self.ruin_level}")


def trade_returns(pnl: np.ndarray, initial_equity: float) -> np.ndarray:
    """r_i of the module docs, in the order the trades closed."""
    pnl = np.asarray(pnl, np.float64)
    before = initial_equity + np.r_[0.0, np.cumsum(pnl)[:-1]]
    if np.any(before <= 0):
        first = int(np.flatnonzero(before <= 0)[0])
        raise ValueError(f"equity was {before[first]:.2f} before trade {first}: returns after "
                         "a wiped-out account are undefined")
    return pnl / before


def _draw(rng: np.random.Generator, returns: np.ndarray, method: Method,
          rows: int) -> np.ndarray:
    """`rows` simulated sequences of the trade returns, by `method` (module docs)."""
    shape = (rows, len(returns))
    if method == "reorder":
        return rng.permuted(np.broadcast_to(returns, shape), axis=1)
    return returns[rng.integers(0, len(returns), shape)]


def _equity(returns: np.ndarray) -> np.ndarray:
    """Equity from 1.0 before each trade and after the last: (rows, trades + 1)."""
    return np.concatenate([np.ones((len(returns), 1)), np.cumprod(1.0 + returns, axis=1)],
                          axis=1)


def _paths(returns: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row statistics of (block, trades) return paths."""
    with_start = _equity(returns)
    peaks = np.maximum.accumulate(with_start, axis=1)
    drawdown = 1.0 - with_start / peaks
    steps = np.arange(with_start.shape[1])
    at_peak = np.where(drawdown <= 0, steps, 0)
    since_peak = steps - np.maximum.accumulate(at_peak, axis=1)
    deviation = returns.std(axis=1, ddof=1) if returns.shape[1] > 1 else np.full(len(returns),
                                                                                 np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        sharpe = returns.mean(axis=1) / deviation
    return {"total_return": with_start[:, -1] - 1.0, "max_drawdown": drawdown.max(axis=1),
            "sharpe": sharpe, "time_to_recover": since_peak.max(axis=1).astype(np.float64),
            "minimum": with_start.min(axis=1)}


def simulate(returns: np.ndarray, method: Method,
             config: MonteCarloConfig, trades_per_year: float | None = None) -> dict[str, Any]:
    """The report of the module docs for one method."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: use one of {', '.join(METHODS)}")
    returns = np.asarray(returns, np.float64)
    if len(returns) < 2 or not np.all(np.isfinite(returns)):
        raise ValueError(f"Monte Carlo needs 2 or more finite trade returns, got {len(returns)}"
                         + ("" if np.all(np.isfinite(returns)) else " with non-finite ones"))
    rng = np.random.default_rng(config.seed)
    columns: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < config.simulations:
        block = min(_BLOCK, config.simulations - done)
        for name, values in _paths(_draw(rng, returns, method, block)).items():
            columns.setdefault(name, []).append(values)
        done += block
    stats = {name: np.concatenate(parts) for name, parts in columns.items()}
    scale = math.sqrt(trades_per_year) if trades_per_year else 1.0
    stats["sharpe"] = stats["sharpe"] * scale
    ruin = float(np.mean(stats["minimum"] < config.ruin_level))
    report: dict[str, Any] = {
        "method": method, "simulations": config.simulations, "trades": len(returns),
        "seed": config.seed, "sharpe_annualised_by": trades_per_year,
    }
    for name in ("total_return", "max_drawdown", "sharpe", "time_to_recover"):
        values = stats[name][np.isfinite(stats[name])]
        report[name] = {f"p{level}": float(np.percentile(values, level)) if len(values) else
                        math.nan for level in PERCENTILES}
    report["ruin_probability"] = ruin
    report["ruin_level"] = config.ruin_level
    report["verdict"] = ("pass" if ruin <= config.max_ruin_probability else "fail") + (
        f": ruin probability {ruin:.2%} against the {config.max_ruin_probability:.0%} limit")
    return report


def fan(returns: np.ndarray, method: Method, config: MonteCarloConfig,
        levels: tuple[int, ...] = (5, 25, 50, 75, 95), paths: int = 2_000) -> np.ndarray:
    """Percentiles of equity (from 1.0) after each trade over `paths` simulated paths: an array
    of shape (len(levels), trades + 1), for the report's fan chart."""
    returns = np.asarray(returns, np.float64)
    rng = np.random.default_rng(config.seed)
    drawn = _draw(rng, returns, method, min(paths, config.simulations))
    return np.percentile(_equity(drawn), levels, axis=0)
