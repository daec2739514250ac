"""Progressive validation of online regressors on a labelled event stream, with drift points.

Each sample is `(ts, ready_ts, features, target)`: it is predicted at `ts` by a model that has
learned only labels ready by then (`DelayedLearner`), so every score is out of sample and free of
look-ahead, exactly as the model would have run live. As each label becomes known its absolute
error feeds an ADWIN detector (`online_ml.maintenance.DriftMonitor`); a detected change is a
drift point at that event time.

`run_model` is one model's run (pure, seeded: the same inputs give the same run); `summarize`
turns a run into a metrics row. The parallel runner lives with the runtime (one Ray task per
model); this module stays Ray-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from online_ml.learner import DelayedLearner, LearnedSample, predict_progressively
from online_ml.maintenance import DriftMonitor
from online_ml.models import make_regressor, resolve_name

Sample = tuple[int, int, dict[str, float], float]


@dataclass(frozen=True)
class ModelRun:
    """One model's predictions over the stream, and where its error drifted."""

    model: str
    ts: np.ndarray  # int64 ns, the prediction times
    prediction: np.ndarray
    target: np.ndarray
    drift_ts: tuple[int, ...]  # event times at which ADWIN flagged a change of the error


def run_model(samples: Sequence[Sample], model: str, seed: int = 7,
              drift_delta: float = 0.002) -> ModelRun:
    """Predict each sample at its time, learn it once its label is ready (module docs)."""
    name = resolve_name(model)
    if not samples:
        raise ValueError("no labelled samples to validate on")
    horizons = {ready - ts for ts, ready, _, _ in samples}
    if len(horizons) != 1:
        raise ValueError(f"samples must share one label horizon, got {sorted(horizons)[:5]}")
    learner = DelayedLearner(make_regressor(name, seed), horizon_ns=horizons.pop())
    monitor = DriftMonitor(name, delta=drift_delta)
    drifts: list[int] = []

    def watch(learned: LearnedSample) -> None:
        alert = monitor.observe(learned)
        if alert is not None:
            drifts.append(alert.ts_event)

    predictions = predict_progressively(learner, samples, watch, flush=True)
    return ModelRun(name, np.asarray([sample[0] for sample in samples], np.int64),
                    np.asarray(predictions), np.asarray([sample[3] for sample in samples]),
                    tuple(drifts))


def summarize(run: ModelRun, candidate_threshold: float) -> dict[str, float | int | str]:
    """Error and usefulness of a run: MAE, RMSE, R2, direction hit rate, and how the signals
    predicted above `candidate_threshold` actually fared."""
    error = run.target - run.prediction
    total = float(np.sum((run.target - run.target.mean()) ** 2))
    candidates = run.prediction > candidate_threshold
    hits = np.sign(run.prediction) == np.sign(run.target)
    return {
        "model": run.model, "samples": len(run.ts),
        "mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error ** 2))),
        "r2": 1.0 - float(np.sum(error ** 2)) / total if total > 0 else math.nan,
        "direction_hit_rate": float(np.mean(hits)),
        "candidates": int(candidates.sum()),
        "candidate_mean_reward": float(run.target[candidates].mean()) if candidates.any()
        else math.nan,
        "drift_points": len(run.drift_ts),
    }


def rolling_mae(run: ModelRun, window: int) -> np.ndarray:
    """Mean absolute error of the last `window` predictions at each prediction (NaN before)."""
    error = np.abs(run.target - run.prediction)
    cumulative = np.concatenate([[0.0], np.cumsum(error)])
    out = np.full(len(error), np.nan)
    if len(error) >= window:
        out[window - 1:] = (cumulative[window:] - cumulative[:-window]) / window
    return out
