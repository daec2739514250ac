"""Post-trade analysis: how each trade used its best move, which signal components paid, and a
rolling scorecard per signal source.

Per trade (`timing`), with `mfe`/`mae` the best and worst excursions from entry as fractions:
- `capture` = the trade's move in its direction from entry to exit, over its MFE: the share of
  the best move it kept (1: exited at the best price; below 0: exited at a loss);
- `minutes_to_mfe` from entry to the best price, `minutes_after_mfe` from it to the exit: an
  exit long after the MFE gave the move back; an early MFE with a long hold is a late exit.

Attribution (`attribution`): a trade's components are what its entry signal had
(`details.components` with a value above 0, else the detectors of its `signal_type`, like
"imbalance+liquidity"). For each component: trades with and without it, their win rates and mean
returns, and the difference of the means: what the component added.

Scorecard (`scorecard`): per signal source (the entry signal's reason), over its latest `window`
trades: win rate and mean return when the signal was strong (score at least `strong_score`),
the false-positive rate (share of its trades that lost), and the decay time (median minutes to
MFE: how long its edge lasts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

NS_PER_MINUTE = 60_000_000_000


def timing(side: np.ndarray, entry_ts: np.ndarray, exit_ts: np.ndarray,
           entry_price: np.ndarray, exit_price: np.ndarray, mfe: np.ndarray,
           mfe_ts: np.ndarray) -> dict[str, np.ndarray]:
    """The per-trade columns of the module docs."""
    move = side * (exit_price - entry_price) / entry_price
    with np.errstate(invalid="ignore", divide="ignore"):
        capture = np.where(mfe > 0, move / mfe, np.nan)
    return {"move": move, "capture": capture,
            "minutes_to_mfe": (mfe_ts - entry_ts) / NS_PER_MINUTE,
            "minutes_after_mfe": (exit_ts - mfe_ts) / NS_PER_MINUTE}


def components_of(details: dict[str, Any] | None, signal_type: str | None) -> set[str]:
    """A trade's components (module docs)."""
    parts = (details or {}).get("components")
    if isinstance(parts, dict):
        return {str(name) for name, value in parts.items()
                if isinstance(value, int | float) and value > 0}
    if signal_type:
        return {part for part in signal_type.split("+") if part}
    return set()


def _stats(values: np.ndarray) -> tuple[int, float, float]:
    if not len(values):
        return 0, math.nan, math.nan
    return len(values), float((values > 0).mean()), float(values.mean())


def attribution(components: Sequence[set[str]], returns: np.ndarray) -> list[dict[str, Any]]:
    """Per component, sorted by name: with/without counts, win rates, mean returns, uplift."""
    rows = []
    for name in sorted(set().union(*components) if components else set()):
        has = np.array([name in parts for parts in components])
        with_n, with_win, with_mean = _stats(returns[has])
        without_n, without_win, without_mean = _stats(returns[~has])
        rows.append({"component": name, "with": with_n, "with_win_rate": with_win,
                     "with_mean_return": with_mean, "without": without_n,
                     "without_win_rate": without_win, "without_mean_return": without_mean,
                     "uplift": with_mean - without_mean if with_n and without_n else math.nan})
    return rows


def scorecard(sources: Sequence[str], scores: Sequence[float | None], returns: np.ndarray,
              minutes_to_mfe: np.ndarray, window: int = 50,
              strong_score: float | None = None) -> list[dict[str, Any]]:
    """Per source (module docs), trades in exit order. `strong_score` None: the median score of
    the source's trades in the window."""
    rows = []
    source_array = np.asarray(sources, dtype=object)
    score_array = np.asarray([math.nan if score is None else score for score in scores],
                             np.float64)
    for source in sorted(set(sources)):
        index = np.flatnonzero(source_array == source)[-window:]
        mine, score = returns[index], score_array[index]
        threshold = (strong_score if strong_score is not None else
                     float(np.nanmedian(score)) if np.isfinite(score).any() else math.nan)
        strong = score >= threshold if math.isfinite(threshold) else np.zeros(len(index), bool)
        strong_n, strong_win, strong_mean = _stats(mine[strong])
        decay = minutes_to_mfe[index]
        rows.append({"source": source, "trades": len(index), "strong_threshold": threshold,
                     "strong_trades": strong_n, "strong_win_rate": strong_win,
                     "strong_mean_return": strong_mean,
                     "false_positive_rate": float((mine <= 0).mean()) if len(mine) else math.nan,
                     "decay_minutes": float(np.median(decay)) if len(decay) else math.nan})
    return rows


def worst_and_best(rows: Iterable[dict[str, Any]], key: str, count: int = 5
                   ) -> list[dict[str, Any]]:
    """The `count` lowest and highest rows by `key` (for the report's trade table)."""
    ordered = sorted((row for row in rows if math.isfinite(row[key])), key=lambda row: row[key])
    return ordered[:count] + ordered[-count:] if len(ordered) > 2 * count else ordered
