"""Progressive validation: predict each sample before learning it, so the score is out of sample.

>>> validator = ProgressiveValidator(make_regressor("linear"))
>>> for step in range(300):
...     x = {"signal": (step % 11) / 10.0}
...     _ = validator.step(x, 3.0 * x["signal"])
>>> validator.samples, validator.mean_absolute_error < 0.5
(300, True)
"""

from __future__ import annotations

import math
from typing import Any

from online_ml.models import make_regressor  # noqa: F401  (used by the doctest)


class ProgressiveValidator:
    """Wraps a River regressor: `step` predicts, scores, then learns one labelled sample."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.samples = 0
        self._absolute_error = 0.0

    def step(self, features: dict[str, float], target: float) -> float:
        """Predict `target` from `features` before learning it; returns the prediction."""
        if not math.isfinite(target) or not all(math.isfinite(v) for v in features.values()):
            raise ValueError(f"non-finite sample: features={features}, target={target}")
        prediction = float(self.model.predict_one(features) or 0.0)
        self._absolute_error += abs(prediction - target)
        self.samples += 1
        self.model.learn_one(features, target)
        return prediction

    @property
    def mean_absolute_error(self) -> float:
        return self._absolute_error / self.samples if self.samples else math.nan
