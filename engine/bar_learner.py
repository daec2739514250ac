"""A per-symbol online learner inside the symbol engine (`learning:` in the run config).

At each primary bar close it labels the bars whose horizon has passed with the forward log return
of the close (close now / close then), lets the learner learn what has matured, and predicts the
forward return of the bar just closed from its features. Everything is event time and the
learner is part of the engine's state, so a replay learns exactly what a live run learns, and a
checkpoint carries the model (`online_ml.learner.DelayedLearner`).

Features are scale-free numbers of the bar (`bar_features`): its return and range, log volume,
order-flow and top-of-book imbalance, spread in bps. Price levels are left out: a model should
not learn "BTC was at 95,000".
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

from engine.config import LearningConfig
from engine.timeframes import parse_duration_ns
from online_ml.learner import DelayedLearner
from online_ml.models import make_regressor


def bar_features(bar: Mapping[str, float]) -> dict[str, float]:
    """Scale-free features of a closed bar; values that are missing or not finite are left out."""
    close, open_ = bar.get("close", math.nan), bar.get("open", math.nan)
    high, low = bar.get("high", math.nan), bar.get("low", math.nan)
    candidates = {
        "bar_return": math.log(close / open_) if close > 0 and open_ > 0 else math.nan,
        "bar_range": math.log(high / low) if high > 0 and low > 0 else math.nan,
        "log_volume": math.log1p(bar.get("volume", math.nan)),
        "order_flow_imbalance": bar.get("order_flow_imbalance", math.nan),
        "top_imbalance": bar.get("top_imbalance", math.nan),
        "spread_bps": bar.get("spread", math.nan) / close * 1e4 if close > 0 else math.nan,
    }
    return {name: float(value) for name, value in candidates.items() if math.isfinite(value)}


class BarLearner:
    """The learner of the module docs; picklable with the engine."""

    def __init__(self, config: LearningConfig) -> None:
        self.config = config
        self.horizon_ns = parse_duration_ns(config.horizon)
        self.learner = DelayedLearner(make_regressor(config.model, config.seed), self.horizon_ns)
        self._waiting: deque[tuple[str, int, float]] = deque()  # (sample id, ts, close)
        self.predictions = 0

    def on_bar(self, ts_event: int, bar: Mapping[str, float]) -> float:
        """Label what matured, learn it, and predict the bar that closed at `ts_event`."""
        close = bar.get("close", math.nan)
        while self._waiting and self._waiting[0][1] + self.horizon_ns <= ts_event:
            sample_id, _, then = self._waiting.popleft()
            if close > 0 and then > 0:
                self.learner.label(sample_id, math.log(close / then))
        self.learner.advance(ts_event)
        sample_id = str(ts_event)
        prediction = self.learner.predict(sample_id, ts_event, bar_features(bar))
        self.predictions += 1
        if close > 0 and math.isfinite(close):
            self._waiting.append((sample_id, ts_event, close))
        return prediction

    def gate(self, direction: int, prediction: float) -> bool:
        """Whether a signal in `direction` may act on this prediction."""
        minimum = self.config.min_prediction
        return minimum is None or direction * prediction >= minimum
