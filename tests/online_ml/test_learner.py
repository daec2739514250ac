"""DelayedLearner: a sample is learned only once event time has passed its horizon, once, in
horizon order, whatever order predictions, labels and time arrive in; it survives a pickle."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_ml.learner import DelayedLearner
from online_ml.models import make_regressor


@dataclass
class RecordingModel:
    """A stand-in regressor that records what it learned and at which clock."""

    learner: DelayedLearner | None = None
    learned: list[tuple[int, dict[str, float], float]] = field(default_factory=list)

    def predict_one(self, x: dict[str, float]) -> float:
        return 0.0

    def learn_one(self, x: dict[str, float], y: float) -> None:
        assert self.learner is not None
        self.learned.append((self.learner.clock, x, y))


Operation = tuple[str, int, float]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("predict"), st.integers(0, 30), st.just(0.0)),
        st.tuples(st.just("label"), st.integers(0, 30), st.floats(-1, 1)),
        st.tuples(st.just("advance"), st.integers(0, 40), st.just(0.0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(0, 10))
def test_no_sample_is_learned_before_its_horizon(ops: list[Operation], horizon: int) -> None:
    model = RecordingModel()
    learner = DelayedLearner(model, horizon_ns=horizon)
    model.learner = learner
    now, predicted_at, labels = 0, {}, {}
    for kind, value, target in ops:
        if kind == "advance":
            now = max(now, value)
            ready = [learned.ready_at for learned in learner.advance(now)]
            assert ready == sorted(ready)  # in the order their horizons passed
        elif kind == "predict":
            sample_id = f"s{len(predicted_at)}"
            predicted_at[sample_id] = now
            learner.predict(sample_id, now, {"t": float(now)})
        elif predicted_at:
            sample_id = f"s{value % len(predicted_at)}"
            if sample_id in learner.pending:
                learner.label(sample_id, target)
                labels[sample_id] = target
    seen_times = [x["t"] for _, x, _ in model.learned]
    for clock, features, _target in model.learned:
        assert clock >= features["t"] + horizon, "learned before event time passed its horizon"
    assert len(model.learned) == learner.learned
    assert len(model.learned) + len(learner.pending) == len(predicted_at)
    assert len(seen_times) <= len(labels)


def test_labels_wait_for_the_horizon_and_unknown_samples_are_refused() -> None:
    learner = DelayedLearner(make_regressor("linear"), horizon_ns=100)
    features = {"flow": 2.0}
    assert learner.predict("a", 1_000, features) == 0.0
    assert features == {"flow": 2.0}
    learner.label("a", 1.5)
    assert learner.advance(1_099) == []
    (learned,) = learner.advance(1_100)
    assert (learned.sample_id, learned.prediction, learned.error) == ("a", 0.0, 1.5)
    with pytest.raises(KeyError, match="not pending"):
        learner.label("a", 1.0)
    with pytest.raises(ValueError, match="already pending"):
        learner.predict("b", 1_200, features)
        learner.predict("b", 1_201, features)
    with pytest.raises(ValueError, match="not finite"):
        learner.predict("c", 1_300, {"flow": math.nan})
    with pytest.raises(ValueError, match="not finite"):
        learner.label("b", math.inf)


def test_pending_is_bounded_and_expiry_is_counted() -> None:
    learner = DelayedLearner(make_regressor("linear"), horizon_ns=10, max_pending=3)
    for index in range(5):
        learner.predict(f"s{index}", index, {"x": float(index)})
    assert sorted(learner.pending) == ["s2", "s3", "s4"] and learner.expired == 2


def test_snapshot_restores_model_and_pending_samples() -> None:
    learner = DelayedLearner(make_regressor("adaptive_forest"), horizon_ns=5)
    for step in range(200):
        learner.predict(f"s{step}", step, {"x": step % 9 / 9.0})
        learner.label(f"s{step}", (step % 9) / 3.0)
        learner.advance(step)
    restored: DelayedLearner = pickle.loads(pickle.dumps(learner))
    assert restored.pending.keys() == learner.pending.keys()
    for step in range(200, 260):
        for each in (learner, restored):
            each.predict(f"s{step}", step, {"x": step % 9 / 9.0})
            each.label(f"s{step}", (step % 9) / 3.0)
        assert learner.advance(step) == restored.advance(step)


def test_forget_drops_an_unlabelled_sample_and_keeps_a_labelled_one() -> None:
    learner = DelayedLearner(make_regressor("linear"), horizon_ns=10)
    learner.predict("never", 0, {"x": 1.0})
    learner.predict("labelled", 0, {"x": 2.0})
    learner.label("labelled", 1.0)
    learner.forget("never")
    learner.forget("labelled")
    learner.forget("unknown")
    assert list(learner.pending) == ["labelled"]
    assert [sample.sample_id for sample in learner.advance(10)] == ["labelled"]
