"""What the symbol engine adds to a strategy's signal before it is journaled and decided: the
bar's values and DEX features, a learner's prediction and gate, the slippage a rule weighs.

A mixin of `engine.symbol_engine.SymbolEngine`, kept apart so the engine's event loop reads on
its own; it uses the engine's flow, learners, regime and current batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.batches import BAR_FIELDS
from engine.signal_features import DEX_PREFIX, signal_features
from engine.strategies.base import GuardedStrategy, Signal

if TYPE_CHECKING:
    from engine.bar_learner import BarLearner
    from engine.order_flow import OrderFlow
    from engine.signal_learner import SignalLearner
    from online_ml.regime import MinuteRegime


class SignalEnrichment:
    """The signal-side helpers of the symbol engine (module docs)."""

    if TYPE_CHECKING:
        flow: OrderFlow
        strategy: GuardedStrategy
        learner: BarLearner | None
        signal_learner: SignalLearner | None
        regime: MinuteRegime
        _cursor: Any
        _estimate_slippage: bool

    @staticmethod
    def _bar_values(history: Mapping[str, np.ndarray], end: int) -> dict[str, float]:
        """The bar's fields and its DEX features (`dex_*`, when the pair has a pool)."""
        return {name: float(values[end - 1]) for name, values in history.items()
                if name in BAR_FIELDS or name.startswith(DEX_PREFIX)}

    def _learn_signals(self, now: int, history: Mapping[str, np.ndarray], end: int) -> None:
        """Label and learn the signals whose horizon passed by this primary close; journal what
        the maintenance agent did."""
        learner = self.signal_learner
        assert learner is not None
        flow = self.flow
        for signal_id, reward, why in learner.on_bar(
                now, float(history["high"][end - 1]), float(history["low"][end - 1])):
            flow.journal_signal(flow.signals.label(signal_id, reward, why))
        if learner.maintenance is not None:
            learner.maintenance.on_bar(now, self.strategy)
            rows, counters = learner.maintenance.drain()
            if rows:
                flow.journal.setdefault("model_events", []).extend(rows)
            flow.counters.update(counters)

    def _scored(self, signal: Signal, signal_id: str, now: int, close: float,
                bar: Mapping[str, float]) -> Signal:
        """The signal with its predicted reward and phase; in Phase B, not acted on unless a
        candidate (journaled with the reason)."""
        learner = self.signal_learner
        assert learner is not None
        details = dict(signal.details or {})
        features = signal_features(int(signal.direction), bar, details, self.regime.regime)
        prediction = learner.predict(signal_id, now, int(signal.direction), close, features)
        self.flow.counters["predictions"] += 1
        phase = learner.phase
        details.update(predicted_reward=prediction, phase=phase)
        if signal.act and not learner.acts(prediction):
            return self._gated(signal, details, f"phase B: predicted reward {prediction:.4%} "
                               f"< {learner.config.candidate_threshold:.4%}")
        return replace(signal, details=details)

    def _gated(self, signal: Signal, details: dict[str, object], why: str) -> Signal:
        """The signal journaled but not acted on, because a learner refused it."""
        self.flow.counters["learner_gated"] += 1
        return replace(signal, act=False, details={**details, "learner_gated": 1.0},
                       reason=f"{signal.reason}; {why}")

    def _with_slippage_estimate(self, signal: Signal, now: int) -> Signal:
        """When a rule weighs it, a sized entry carries the slippage the paper model expects for
        its size, as a fraction (`estimated_slippage`: the book walk when the data has depth,
        else quotes, else the modelled spread and impact), to set against the predicted edge."""
        cursor = self._cursor
        details = signal.details or {}
        if (cursor is None or not signal.act or signal.quantity is None
                or "estimated_slippage" in details or not self._estimate_slippage):
            return signal
        batch = cursor.batch
        estimate = self.flow.matcher.estimate_slippage_bps(
            int(signal.direction), signal.quantity, now, batch.trades, batch.quotes, batch.depth)
        if not math.isfinite(estimate):
            return signal
        return replace(signal, details={**details, "estimated_slippage": max(0.0, estimate) / 1e4})

    def _with_prediction(self, signal: Signal, prediction: float) -> Signal:
        """The signal with the learner's prediction in its details; not acted on when the
        learner's gate refuses it (journaled with the reason)."""
        assert self.learner is not None
        details: dict[str, object] = {**(signal.details or {}), "predicted_return": prediction}
        if signal.act and not self.learner.gate(int(signal.direction), prediction):
            minimum = self.learner.config.min_prediction
            return self._gated(signal, details, f"learner: predicted {prediction:.3g} "
                               f"< {minimum:g} in its direction")
        return replace(signal, details=details)

