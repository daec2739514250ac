"""The maintenance agent: drift alerts, retraining that must earn its swap, threshold re-tuning.

- `DriftMonitor` feeds each learned sample's absolute error to ADWIN and returns a `DriftAlert`
  (a journal row and a metric for the caller) when the error's distribution changed. ADWIN's
  bound assumes values in [0, 1]: errors of rewards (~1e-3) would never trigger it, so they are
  scaled by ten times the mean error of the first `warmup` samples and capped at 1.
- `retrain` builds a fresh model warm-started on the labelled samples before a holdout (the
  latest `holdout_fraction`), lets it predict the holdout progressively (predict, then learn once
  the label is ready), and compares its error with the current model's recorded out-of-sample
  predictions on the same samples. The fresh model replaces the current one only if it is better
  by `min_improvement`; either way the decision and both scores are returned for the journal.
- `tune_thresholds` re-optimises the Phase A thresholds on recent labelled signals: each grid
  point is scored by the mean reward of the signals it would keep, among points keeping at least
  `min_signals`.

All pure and seeded; the caller decides when to run them (on an alert, or on a schedule).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import drift

from online_ml.learner import DelayedLearner, LearnedSample, predict_progressively
from online_ml.models import make_regressor, resolve_name

Sample = tuple[int, int, dict[str, float], float]


@dataclass(frozen=True)
class DriftAlert:
    model: str
    ts_event: int  # when the error that revealed the change became known
    samples_seen: int
    mean_error_after: float

    def row(self) -> dict[str, Any]:
        return {"kind": "drift", "model": self.model, "ts_event": self.ts_event,
                "detail": f"ADWIN: mean |error| now {self.mean_error_after:.6g} after "
                          f"{self.samples_seen} labelled samples"}


class DriftMonitor:
    """ADWIN over the scaled absolute errors of one model's learned samples (module docs)."""

    def __init__(self, model: str, delta: float = 0.002, warmup: int = 50) -> None:
        self.model = model
        self._detector = drift.ADWIN(delta=delta)
        self._warmup: list[float] = []
        self._warmup_size = warmup
        self.scale = math.nan
        self.samples = 0
        self.alerts = 0

    def observe(self, learned: LearnedSample) -> DriftAlert | None:
        self.samples += 1
        error = abs(learned.error)
        if math.isnan(self.scale):
            self._warmup.append(error)
            if len(self._warmup) < self._warmup_size:
                return None
            self.scale = 10.0 * float(np.mean(self._warmup)) or 1.0
            values = [min(1.0, value / self.scale) for value in self._warmup]
        else:
            values = [min(1.0, error / self.scale)]
        detected = False
        for value in values:
            self._detector.update(value)
            detected = detected or self._detector.drift_detected
        if not detected:
            return None
        self.alerts += 1
        return DriftAlert(self.model, learned.ready_at, self.samples,
                          float(self._detector.estimation) * self.scale)


@dataclass(frozen=True)
class RetrainDecision:
    swapped: bool
    current_mae: float
    fresh_mae: float
    train_samples: int
    holdout_samples: int
    model: Any  # the model to use from now on (the fresh one if swapped)

    def row(self, ts_event: int, name: str) -> dict[str, Any]:
        verdict = "swapped in" if self.swapped else "kept the current model"
        return {"kind": "retrain", "model": name, "ts_event": ts_event,
                "detail": f"{verdict}: holdout MAE fresh {self.fresh_mae:.6g} vs current "
                          f"{self.current_mae:.6g} on {self.holdout_samples} samples "
                          f"(trained on {self.train_samples})"}


def retrain(current: Any, current_predictions: Mapping[int, float], samples: Sequence[Sample],
            model: str, seed: int = 7, holdout_fraction: float = 0.2,
            min_improvement: float = 0.02) -> RetrainDecision:
    """The decision of the module docs. `current_predictions` maps a sample's time to what the
    current model predicted for it then (out of sample, as journaled)."""
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    ordered = sorted(samples, key=lambda sample: sample[0])
    split = int(len(ordered) * (1 - holdout_fraction))
    train, holdout = ordered[:split], ordered[split:]
    scored = [sample for sample in holdout if sample[0] in current_predictions]
    if not train or not scored:
        return RetrainDecision(False, math.nan, math.nan, len(train), len(scored), current)
    fresh = make_regressor(resolve_name(model), seed)
    for _ts, _ready, features, target in train:
        fresh.learn_one(dict(features), target)
    horizon = scored[0][1] - scored[0][0]
    predictions = predict_progressively(DelayedLearner(fresh, horizon_ns=horizon), scored)
    targets = np.asarray([target for _, _, _, target in scored])
    fresh_mae = float(np.mean(np.abs(targets - np.asarray(predictions))))
    current_mae = float(np.mean(np.abs(
        targets - np.asarray([current_predictions[ts] for ts, _, _, _ in scored]))))
    swapped = fresh_mae < current_mae * (1 - min_improvement)
    return RetrainDecision(swapped, current_mae, fresh_mae, len(train), len(scored),
                           fresh if swapped else current)


@dataclass(frozen=True)
class TuningResult:
    best: dict[str, float]
    mean_reward: float
    signals_kept: int
    points_scored: int


def tune_thresholds(grid: Mapping[str, Iterable[float]],
                    keep: Callable[[dict[str, float]], np.ndarray], rewards: np.ndarray,
                    min_signals: int = 30) -> TuningResult | None:
    """The grid point whose kept signals (`keep(point)`: a boolean mask over `rewards`) have the
    best mean reward, among points keeping at least `min_signals`; None if none does. Ties go to
    the earliest point in grid order, so the result is deterministic."""
    names = list(grid)
    best: TuningResult | None = None
    scored = 0
    for values in itertools.product(*(list(grid[name]) for name in names)):
        point = dict(zip(names, values, strict=True))
        mask = keep(point) & np.isfinite(rewards)
        scored += 1
        if int(mask.sum()) < min_signals:
            continue
        mean = float(rewards[mask].mean())
        if best is None or mean > best.mean_reward:
            best = TuningResult(point, mean, int(mask.sum()), 0)
    if best is None:
        return None
    return TuningResult(best.best, best.mean_reward, best.signals_kept, scored)
