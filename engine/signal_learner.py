"""Signals scored and learned online: the DEX-led plan's Phase A to Phase B switch, in the engine.

With `learning.target: reward_score`, every signal of the symbol is a sample:

- at the signal, the learner predicts its reward score from the signal's features (the numeric
  `dex_*` bar columns, the bar's order flow, the signal's direction and details) and the
  prediction is journaled as `predicted_reward` and given to risk as a feature;
- it is labelled `horizon` later with the plan's reward score (`engine.dex.labels`):
  direction x (most favorable price - entry) / entry x exp(-k x minutes to it), from the highs
  and lows of the primary bars closing within (signal, signal + horizon]. The time to the best
  price is measured to the close of the bar that reached it, so at the primary timeframe's
  resolution;
- the model learns each sample once event time passes its horizon (`DelayedLearner`), never
  earlier.

Phase A acts on the strategy's rule-based signals. After `phase_b_after` labelled signals the
plan switches to Phase B by itself: a signal acts only if its predicted reward reaches
`candidate_threshold` (0.005). The phase a signal was judged in is in its details.

With `learning.maintenance`, the maintenance agent (`engine.model_maintenance`) watches the
learned errors for drift, retrains on it, and schedules the strategy's re-tuning.

Picklable with the engine: a checkpoint carries the model, the waiting signals, the count and
the agent's state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from engine.config import LearningConfig
from engine.model_maintenance import ModelMaintenance
from engine.timeframes import NS_PER_MINUTE, parse_duration_ns
from online_ml.learner import DelayedLearner
from online_ml.models import make_regressor


@dataclass
class _Waiting:
    """A signal waiting for its horizon: entry and the best price seen so far."""

    signal_id: str
    ts_event: int
    direction: int
    entry: float
    features: dict[str, float]
    prediction: float
    best: float = math.nan
    best_ts: int = 0


class SignalLearner:
    """The learner of the module docs; one per symbol engine."""

    def __init__(self, config: LearningConfig, symbol: str = "") -> None:
        self.config = config
        self.horizon_ns = parse_duration_ns(config.horizon)
        self.learner = DelayedLearner(make_regressor(config.model, config.seed), self.horizon_ns)
        self._waiting: list[_Waiting] = []
        self._unscorable: list[str] = []  # signals with no entry to score from
        self.labelled = 0
        self.maintenance = (ModelMaintenance(symbol, config, config.maintenance)
                            if config.maintenance is not None else None)

    @property
    def phase(self) -> str:
        after = self.config.phase_b_after
        return "B" if after is not None and self.labelled >= after else "A"

    def on_bar(self, ts_close: int, high: float, low: float) -> list[tuple[str, float | None,
                                                                         str]]:
        """A primary bar closed: fold its range into the waiting signals, label those whose
        horizon has passed, learn what has matured. Returns (signal id, reward, why none)."""
        labels: list[tuple[str, float | None, str]] = [
            (signal_id, None, "no direction or entry price to score the signal from")
            for signal_id in self._unscorable]
        self._unscorable = []
        still = []
        for waiting in self._waiting:
            if ts_close > waiting.ts_event:
                price = high if waiting.direction > 0 else low
                better = (price > waiting.best if waiting.direction > 0 else price < waiting.best)
                if math.isfinite(price) and (math.isnan(waiting.best) or better):
                    waiting.best, waiting.best_ts = price, ts_close
            if waiting.ts_event + self.horizon_ns <= ts_close:
                labels.append(self._label(waiting))
            else:
                still.append(waiting)
        self._waiting = still
        learned = self.learner.advance(ts_close)
        if self.maintenance is not None and learned:
            self.maintenance.on_learned(learned, self.learner)
        return labels

    def _label(self, waiting: _Waiting) -> tuple[str, float | None, str]:
        if math.isnan(waiting.best):
            reason = "no bar closed within the horizon"
            self.learner.forget(waiting.signal_id)
            return waiting.signal_id, None, reason
        minutes = (waiting.best_ts - waiting.ts_event) / NS_PER_MINUTE
        reward = (waiting.direction * (waiting.best - waiting.entry) / waiting.entry
                  * math.exp(-self.config.decay_per_minute * minutes))
        self.learner.label(waiting.signal_id, reward)
        self.labelled += 1
        if self.maintenance is not None:
            self.maintenance.on_labelled((waiting.ts_event, waiting.ts_event + self.horizon_ns,
                                          waiting.features, reward), waiting.prediction)
        return waiting.signal_id, reward, ""

    def predict(self, signal_id: str, ts_event: int, direction: int, entry: float,
                features: Mapping[str, float]) -> float:
        """Predict the signal's reward score and wait for its label."""
        prediction = self.learner.predict(signal_id, ts_event, features)
        if math.isfinite(entry) and entry > 0 and direction != 0:
            self._waiting.append(_Waiting(signal_id, ts_event, direction, entry,
                                          dict(features), prediction))
        else:
            self.learner.forget(signal_id)
            self._unscorable.append(signal_id)
        return prediction

    def acts(self, prediction: float) -> bool:
        """Whether a signal may act: always in Phase A, a candidate only in Phase B."""
        return self.phase == "A" or prediction >= self.config.candidate_threshold
