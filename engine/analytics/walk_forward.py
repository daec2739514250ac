"""Walk-forward validation over continuous runs: choose parameters in sample, judge them out of
sample, window after window.

Each candidate parameter set is replayed once over the whole tape (`engine.walk_forward_run`), so
every window reads the same continuous equity curve of each candidate: its strategy state (bars,
indicators, an open position) carries across window edges as it would in a run that had used
those parameters all along. Windows roll: in-sample [s, s + IS), out-of-sample
[s + IS, s + IS + OOS), then s moves on by `step`, while the out-of-sample end stays inside the
data.

Per window:
- every candidate's in-sample Sharpe (`engine.analytics.performance`, daily, over the window's
  equity rows, from the equity just before it);
- the best in-sample candidate (ties: the first in candidate order) and its out-of-sample Sharpe;
- pass: the in-sample Sharpe is above 0 and the out-of-sample one is at least `min_ratio` (70%)
  of it. A system whose best setting loses in sample has nothing to carry forward.

The walk-forward is accepted when every window passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.analytics.performance import EquityCurve, curve_metrics


@dataclass(frozen=True)
class Window:
    index: int
    in_sample: tuple[int, int]  # [start, end) ns
    out_of_sample: tuple[int, int]


def rolling_windows(start: int, end: int, in_sample_ns: int, out_of_sample_ns: int,
                    step_ns: int) -> list[Window]:
    """The windows of the module docs over [start, end)."""
    if min(in_sample_ns, out_of_sample_ns, step_ns) <= 0:
        raise ValueError("in-sample, out-of-sample and step must be positive durations")
    windows: list[Window] = []
    first = start
    while first + in_sample_ns + out_of_sample_ns <= end:
        middle = first + in_sample_ns
        windows.append(Window(len(windows), (first, middle),
                              (middle, middle + out_of_sample_ns)))
        first += step_ns
    if not windows:
        days = (end - start) / 86_400_000_000_000
        raise ValueError(f"the data spans {days:.1f} days: too short for one in-sample plus "
                         "out-of-sample window")
    return windows


def window_metrics(curve: EquityCurve, start: int, end: int) -> dict[str, float]:
    """`curve_metrics` of the rows in [start, end), from the equity just before `start`."""
    inside = (curve.ts >= start) & (curve.ts < end)
    before = np.flatnonzero(curve.ts < start)
    initial = float(curve.equity[before[-1]]) if len(before) else curve.initial
    return curve_metrics(EquityCurve(curve.ts[inside], curve.equity[inside], initial))


def walk_forward(curves: Mapping[str, EquityCurve], windows: Sequence[Window],
                 min_ratio: float = 0.7) -> dict[str, Any]:
    """The report of the module docs; `curves` maps a candidate's label to its equity curve."""
    if not curves:
        raise ValueError("walk-forward needs at least one candidate")
    rows = []
    for window in windows:
        scores = {label: window_metrics(curve, *window.in_sample)["sharpe"]
                  for label, curve in curves.items()}
        finite = {label: score for label, score in scores.items() if math.isfinite(score)}
        best = max(finite, key=lambda label: finite[label]) if finite else next(iter(curves))
        in_sample = scores[best]
        outside = window_metrics(curves[best], *window.out_of_sample)
        out_sharpe = outside["sharpe"]
        passed = (math.isfinite(in_sample) and in_sample > 0 and math.isfinite(out_sharpe)
                  and out_sharpe >= min_ratio * in_sample)
        rows.append({
            "window": window.index, "in_sample": list(window.in_sample),
            "out_of_sample": list(window.out_of_sample), "best": best,
            "in_sample_sharpe": in_sample, "out_of_sample_sharpe": out_sharpe,
            "ratio": out_sharpe / in_sample if in_sample and math.isfinite(in_sample) else (
                math.nan),
            "out_of_sample_return": outside["total_return"],
            "out_of_sample_max_drawdown": outside["max_drawdown"],
            "passed": passed, "in_sample_sharpes": scores,
        })
    return {"windows": rows, "min_ratio": min_ratio,
            "accepted": all(row["passed"] for row in rows),
            "passed_windows": sum(row["passed"] for row in rows)}
