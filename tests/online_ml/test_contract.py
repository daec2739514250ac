"""One contract suite run over every registered regressor, River style: it learns from a real
stream, pickles without losing anything, two models made alike learn alike, inputs are never
changed, and a prediction never changes the model (no look-ahead through predict)."""

from __future__ import annotations

import copy
import csv
import itertools
import math
import pickle
from pathlib import Path

import pytest

from online_ml.models import REGRESSORS, make_regressor
from online_ml.progressive import ProgressiveValidator

Sample = tuple[dict[str, float], float]


def _real_samples(klines_csv: Path, count: int = 400) -> list[Sample]:
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


@pytest.fixture(scope="module")
def samples(klines_csv: Path) -> list[Sample]:
    return _real_samples(klines_csv)


@pytest.fixture(params=sorted(REGRESSORS))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _predictions(model: object, samples: list[Sample]) -> list[float]:
    validator = ProgressiveValidator(model)
    return [validator.step(features, target) for features, target in samples]


def test_learns_progressively_with_finite_predictions(name: str, samples: list[Sample]) -> None:
    predictions = _predictions(make_regressor(name), samples)
    assert len(predictions) == len(samples) and all(map(math.isfinite, predictions))


def test_pickling_round_trip_keeps_predictions_and_learning(
        name: str, samples: list[Sample]) -> None:
    model = make_regressor(name)
    _predictions(model, samples[:250])
    clone = pickle.loads(pickle.dumps(model))
    assert _predictions(clone, samples[250:]) == _predictions(model, samples[250:])


def test_seeded_models_are_deterministic(name: str, samples: list[Sample]) -> None:
    assert _predictions(make_regressor(name, seed=3), samples) == _predictions(
        make_regressor(name, seed=3), samples)


def test_inputs_are_not_mutated(name: str, samples: list[Sample]) -> None:
    model = make_regressor(name)
    for features, target in samples[:120]:
        before = copy.deepcopy(features)
        model.predict_one(features)
        model.learn_one(features, target)
        assert features == before


def test_predicting_does_not_change_the_model(name: str, samples: list[Sample]) -> None:
    model = make_regressor(name)
    _predictions(model, samples[:200])
    twin = pickle.loads(pickle.dumps(model))
    for features, _ in samples[200:260]:  # predictions only: nothing may be learned
        model.predict_one(features)
    assert _predictions(model, samples[260:]) == _predictions(twin, samples[260:])
