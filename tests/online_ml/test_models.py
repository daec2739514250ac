"""One contract suite run over every registered regressor, River style."""

from __future__ import annotations

import csv
import itertools
import math
import pickle
from pathlib import Path

import pytest

from online_ml.models import REGRESSORS, make_regressor
from online_ml.progressive import ProgressiveValidator


def _real_samples(klines_csv: Path, count: int = 600) -> list[tuple[dict[str, float], float]]:
    """Features of one real 1-minute bar and the next bar's return as the label."""
    with klines_csv.open() as handle:
        rows = list(csv.DictReader(handle))[: count + 1]
    samples = []
    for current, following in itertools.pairwise(rows):
        close = float(current["close"])
        features = {
            "bar_return": close / float(current["open"]) - 1.0,
            "range": float(current["high"]) / float(current["low"]) - 1.0,
            "log_volume": math.log1p(float(current["volume"])),
        }
        samples.append((features, float(following["close"]) / close - 1.0))
    return samples


@pytest.mark.parametrize("name", sorted(REGRESSORS))
def test_regressor_contract(name: str, klines_csv: Path) -> None:
    samples = _real_samples(klines_csv)
    model = make_regressor(name)
    assert isinstance(model.predict_one(samples[0][0]), float | int)
    validator = ProgressiveValidator(model)
    for features, target in samples[:300]:
        prediction = validator.step(features, target)
        assert math.isfinite(prediction)
    clone = pickle.loads(pickle.dumps(model))
    for features, _ in samples[300:320]:
        assert clone.predict_one(features) == model.predict_one(features)
    assert validator.samples == 300 and math.isfinite(validator.mean_absolute_error)


def test_linear_learns_a_known_relation() -> None:
    validator = ProgressiveValidator(make_regressor("linear"))
    for step in range(2000):
        x = {"flow": (step % 13) / 6.0 - 1.0}
        validator.step(x, 0.5 * x["flow"] - 0.2)
    assert abs(validator.model.predict_one({"flow": 0.8}) - 0.2) < 0.02


def test_unknown_names_and_bad_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown regressor 'lstm'; known: linear"):
        make_regressor("lstm")
    with pytest.raises(ValueError, match="non-finite sample"):
        ProgressiveValidator(make_regressor("linear")).step({"x": math.nan}, 1.0)
