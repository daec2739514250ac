"""The maintenance agent inside a symbol engine: it watches the signal learner and re-tunes the
strategy, in event time, so a replay maintains exactly what a live run does.

- **Drift.** Every learned signal's absolute error goes to ADWIN (`online_ml.maintenance`). A
  change in its distribution is a `drift` row in the journal's `model_events` and a count in the
  `drift_alerts` metric.
- **Retraining.** On a drift alert (with `retrain_on_drift`), a fresh model of the same kind is
  warm-started on the labelled signals kept (`history`, the journal's labelled signals of this
  symbol) and scored progressively on the latest `holdout_fraction` of them against what the
  current model predicted for them at the time. It is swapped in only if it is better by
  `min_improvement`. Either way a `retrain` row records both errors.
- **Re-tuning.** Every `retune_every` of event time, a strategy that can (`retune(now, window)`,
  like `dex_led`) re-optimises its thresholds on the latest `retune_window`; a `retune` row says
  what it chose, or why it kept its settings.

Rows and counters are drained by the engine each step. Picklable with the engine.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.config import LearningConfig, MaintenanceConfig
from engine.strategies.base import GuardedStrategy
from engine.timeframes import parse_duration_ns
from online_ml.learner import DelayedLearner, LearnedSample
from online_ml.maintenance import DriftMonitor, retrain

Sample = tuple[int, int, dict[str, float], float]


class ModelMaintenance:
    """The agent of the module docs for one symbol's signal learner and strategy."""

    def __init__(self, symbol: str, learning: LearningConfig,
                 config: MaintenanceConfig) -> None:
        self.symbol = symbol
        self.learning = learning
        self.config = config
        self.monitor = DriftMonitor(learning.model, config.drift_delta, config.drift_warmup)
        self.history: deque[Sample] = deque(maxlen=config.history)
        self.predictions: dict[int, float] = {}  # a signal's time -> what was predicted then
        self.retune_every_ns = (parse_duration_ns(config.retune_every)
                                if config.retune_every is not None else None)
        self.retune_window_ns = parse_duration_ns(config.retune_window)
        self.next_retune: int | None = None
        self.rows: list[dict[str, Any]] = []
        self.counters: dict[str, int] = {}
        self._sequence = 0

    def on_labelled(self, sample: Sample, prediction: float) -> None:
        """A signal's label is known: keep it for retraining."""
        self.history.append(sample)
        self.predictions[sample[0]] = prediction
        if len(self.predictions) > 2 * self.config.history:  # forget what history forgot
            oldest = self.history[0][0]
            self.predictions = {ts: value for ts, value in self.predictions.items()
                                if ts >= oldest}

    def on_learned(self, learned: list[LearnedSample], learner: DelayedLearner) -> None:
        """Samples the model just learned: watch their errors; on drift, maybe retrain."""
        for sample in learned:
            alert = self.monitor.observe(sample)
            if alert is None:
                continue
            self._row(alert.ts_event, "drift", alert.row()["detail"])
            self._count("drift_alerts")
            if self.config.retrain_on_drift:
                self._retrain(alert.ts_event, learner)

    def _retrain(self, now: int, learner: DelayedLearner) -> None:
        decision = retrain(learner.model, self.predictions, list(self.history),
                           self.learning.model, self.learning.seed,
                           self.config.holdout_fraction, self.config.min_improvement)
        self._count("model_retrains")
        if decision.swapped:
            learner.model = decision.model
            self._count("model_swaps")
        self._row(now, "retrain", decision.row(now, self.learning.model)["detail"])

    def on_bar(self, now: int, strategy: GuardedStrategy) -> None:
        """A primary bar closed: re-tune the strategy when the schedule says so."""
        if self.retune_every_ns is None:
            return
        if self.next_retune is None:
            self.next_retune = now + max(self.retune_every_ns, self.retune_window_ns)
            return
        if now < self.next_retune:
            return
        self.next_retune = now + self.retune_every_ns
        outcome = strategy.retune(now, self.retune_window_ns, self.config.retune_min_signals)
        if outcome is None:
            return
        self._count("threshold_retunes")
        self._row(now, "retune", outcome)

    def drain(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        rows, counters = self.rows, self.counters
        self.rows, self.counters = [], {}
        return rows, counters

    def _row(self, ts_event: int, kind: str, detail: str) -> None:
        self._sequence += 1
        self.rows.append({"key": f"{self.symbol}:m{self._sequence}", "ts_event": ts_event,
                          "symbol": self.symbol, "kind": kind, "model": self.learning.model,
                          "detail": detail})

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
