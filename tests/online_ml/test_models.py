"""Model factories: what the linear model learns, names and aliases, refusals (the shared
contract over every model is in test_contract.py)."""

from __future__ import annotations

import math

import pytest

from online_ml.models import REGRESSORS, make_regressor
from online_ml.progressive import ProgressiveValidator


def test_linear_learns_a_known_relation() -> None:
    validator = ProgressiveValidator(make_regressor("linear"))
    for step in range(2000):
        x = {"flow": (step % 13) / 6.0 - 1.0}
        validator.step(x, 0.5 * x["flow"] - 0.2)
    assert abs(validator.model.predict_one({"flow": 0.8}) - 0.2) < 0.02


def test_unknown_names_and_bad_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown regressor 'lstm'; known: linear"):
        make_regressor("lstm")
    assert type(make_regressor("htr")) is type(make_regressor("hoeffding_tree"))
    assert "adaptive_forest" in REGRESSORS and make_regressor("arf") is not None
    with pytest.raises(ValueError, match="non-finite sample"):
        ProgressiveValidator(make_regressor("linear")).step({"x": math.nan}, 1.0)
