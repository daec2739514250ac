"""Scheduled re-optimisation of the Phase A thresholds on the latest data.

Every block of the window is a candidate signal in the direction of its taker imbalance and is
labelled once (`engine.dex.labels`); a threshold setting is scored by the mean reward of the
candidates its detectors would have emitted (`online_ml.maintenance.tune_thresholds`). Only
labelled candidates count, so the latest `horizon` of the window never scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from engine.dex.dataset import DexPlanConfig
from engine.dex.features import DexColumns, dex_features
from engine.dex.labels import reward_scores
from engine.dex.signals import PhaseAConfig, phase_a
from online_ml.maintenance import TuningResult, tune_thresholds

DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "imbalance_threshold": (0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "volume_ratio_threshold": (2.0, 3.0, 5.0),
    "min_confirmations": (1, 2),
}


def tune_phase_a(columns: DexColumns, config: DexPlanConfig, since_ns: int,
                 grid: Mapping[str, Iterable[float]] | None = None,
                 min_signals: int = 30) -> tuple[PhaseAConfig, TuningResult] | None:
    """The best Phase A thresholds on the blocks from `since_ns` on, or None when no setting
    keeps `min_signals` labelled signals."""
    at = columns.block_times()
    at = at[at >= since_ns]
    features = dex_features(columns, at)
    imbalance = features[f"imbalance_{config.phase_a.imbalance_window_s}s"]
    direction = np.where(np.isfinite(imbalance), np.sign(imbalance), 0.0)
    labels = reward_scores(at, direction, features["price"], columns.swap_ts, columns.price,
                           config.horizon_ns, config.decay_per_minute)
    rewards = np.where(direction != 0, labels.reward_score, np.nan)
    return tune_over_features(features, rewards, config.phase_a, grid, min_signals)


def tune_over_features(features: Mapping[str, np.ndarray], rewards: np.ndarray,
                       current: PhaseAConfig, grid: Mapping[str, Iterable[float]] | None = None,
                       min_signals: int = 30) -> tuple[PhaseAConfig, TuningResult] | None:
    """The best Phase A thresholds for candidates with these feature columns and rewards (NaN:
    not a candidate or not labelled), or None when no setting keeps `min_signals`."""
    def keep(point: dict[str, float]) -> np.ndarray:
        mask = np.zeros(len(rewards), bool)
        mask[phase_a(features, current.model_copy(update=_settings(point))).index] = True
        return mask

    result = tune_thresholds(grid or DEFAULT_GRID, keep, rewards, min_signals)
    if result is None:
        return None
    return current.model_copy(update=_settings(result.best)), result


def _settings(point: Mapping[str, float]) -> dict[str, float | int]:
    return {name: (int(value) if name == "min_confirmations" else value)
            for name, value in point.items()}
