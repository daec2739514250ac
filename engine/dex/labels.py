"""The DEX-led plan's label: how good a signal turned out, known only `horizon` later.

    reward_score = direction x (favorable - entry) / entry x exp(-k x t)

`favorable` is the most favorable price within (t0, t0 + horizon] (the highest for a long, the
lowest for a short), `t` the minutes from the signal to its first occurrence, and `k`
(`decay_per_minute`) rewards moves that come early. A move that never goes the signal's way
scores the least-bad price's (negative) return. The label is ready at t0 + horizon: a learner
must not see it earlier (`online_ml.learner.DelayedLearner`). Signals whose horizon runs past
the data, or with no price inside it, get NaN and say why in `reason`.

One Python step per *signal* (they are sparse), never per price.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NS_PER_MINUTE = 60_000_000_000


@dataclass(frozen=True)
class Labels:
    reward_score: np.ndarray
    favorable_price: np.ndarray
    minutes_to_favorable: np.ndarray
    ready_ts: np.ndarray  # int64 ns: t0 + horizon
    reason: list[str]  # "" or why the label is NaN


def reward_scores(signal_ts: np.ndarray, direction: np.ndarray, entry_price: np.ndarray,
                  price_ts: np.ndarray, price: np.ndarray, horizon_ns: int,
                  decay_per_minute: float) -> Labels:
    """Labels of signals (module docs) from a price series sorted by time."""
    count = len(signal_ts)
    score = np.full(count, np.nan)
    favorable = np.full(count, np.nan)
    minutes = np.full(count, np.nan)
    reasons = [""] * count
    ready = np.asarray(signal_ts, np.int64) + horizon_ns
    last_ts = int(price_ts[-1]) if len(price_ts) else -(2**63)
    starts = np.searchsorted(price_ts, signal_ts, "right")
    ends = np.searchsorted(price_ts, ready, "right")
    for row in range(count):
        if ready[row] > last_ts:
            reasons[row] = "horizon runs past the end of the data"
            continue
        if ends[row] <= starts[row]:
            reasons[row] = "no price within the horizon"
            continue
        window = price[starts[row]:ends[row]]
        side = int(direction[row])
        best = int(np.argmax(window) if side > 0 else np.argmin(window))
        favorable[row] = window[best]
        minutes[row] = (int(price_ts[starts[row] + best]) - int(signal_ts[row])) / NS_PER_MINUTE
        entry = float(entry_price[row])
        if not (np.isfinite(entry) and entry > 0):
            reasons[row] = "no entry price at the signal"
            continue
        score[row] = side * (favorable[row] - entry) / entry * np.exp(
            -decay_per_minute * minutes[row])
    return Labels(score, favorable, minutes, ready, reasons)
