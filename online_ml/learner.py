"""`DelayedLearner`: predict at once, learn a sample only once event time has passed its horizon.

A trading label is known only after the fact: a signal at time t is scored by what the price
did until t + horizon. The learner therefore keeps each predicted sample pending, takes its
label whenever the labeller has it (`label`), and learns it only when `advance(now)` is called
with now >= t + horizon, in the order the horizons pass. So a model never learns from the future
of its own predictions, in replay exactly as live (everything is event time).

    >>> from online_ml.models import make_regressor
    >>> learner = DelayedLearner(make_regressor("linear"), horizon_ns=60)
    >>> learner.predict("s1", 0, {"flow": 1.0})
    0.0
    >>> learner.label("s1", 0.5)
    >>> learner.advance(59)        # the horizon has not passed: nothing learned
    []
    >>> [learned.sample_id for learned in learner.advance(60)]
    ['s1']

Pending samples are bounded (`max_pending`): the oldest unlabelled one is expired, and counted
in `expired`; nothing leaves without a trace. The learner pickles with its model, so it is
snapshotted with its actor's checkpoint and restored after a restart.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LearnedSample:
    """A sample the model learned: what it predicted then, and the label it learned."""

    sample_id: str
    ts_event: int
    ready_at: int
    prediction: float
    target: float

    @property
    def error(self) -> float:
        return self.target - self.prediction


@dataclass
class _Pending:
    ts_event: int
    ready_at: int
    features: dict[str, float]
    prediction: float
    target: float | None = None


@dataclass
class DelayedLearner:
    """A River regressor behind the predict-now, learn-after-the-horizon rule (module docs)."""

    model: Any
    horizon_ns: int
    max_pending: int = 100_000
    pending: dict[str, _Pending] = field(default_factory=dict)
    labelled: list[tuple[int, int, str]] = field(default_factory=list)  # heap by horizon
    learned: int = 0
    expired: int = 0
    clock: int = -(2**63)  # the latest event time `advance` was given

    def __post_init__(self) -> None:
        if self.horizon_ns < 0:
            raise ValueError(f"horizon_ns must be >= 0, got {self.horizon_ns}")
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {self.max_pending}")

    def predict(self, sample_id: str, ts_event: int, features: Mapping[str, float]) -> float:
        """Predict the sample now and keep it for its label; the input is copied, not kept."""
        if sample_id in self.pending:
            raise ValueError(f"sample {sample_id!r} is already pending")
        copied = _checked(sample_id, features)
        raw = self.model.predict_one(dict(copied))
        prediction = float(raw) if raw is not None else 0.0
        if not math.isfinite(prediction):
            prediction = 0.0
        if len(self.pending) >= self.max_pending:
            self._expire_oldest()
        self.pending[sample_id] = _Pending(ts_event, ts_event + self.horizon_ns, copied,
                                           prediction)
        return prediction

    def label(self, sample_id: str, target: float) -> None:
        """The sample's label; it is learned once event time passes the sample's horizon."""
        sample = self.pending.get(sample_id)
        if sample is None:
            raise KeyError(f"sample {sample_id!r} is not pending (never predicted, learned or "
                           "expired)")
        if not math.isfinite(target):
            raise ValueError(f"sample {sample_id!r}: label {target!r} is not finite")
        if sample.target is None:
            heapq.heappush(self.labelled, (sample.ready_at, sample.ts_event, sample_id))
        sample.target = float(target)

    def forget(self, sample_id: str) -> None:
        """Drop an unlabelled pending sample that will never get a label (its labeller says
        why); unknown ids are ignored."""
        sample = self.pending.get(sample_id)
        if sample is not None and sample.target is None:
            del self.pending[sample_id]

    def advance(self, now: int) -> list[LearnedSample]:
        """Learn every labelled sample whose horizon has passed by `now`, oldest horizon first."""
        self.clock = max(self.clock, now)
        learned: list[LearnedSample] = []
        while self.labelled and self.labelled[0][0] <= self.clock:
            ready_at, ts_event, sample_id = heapq.heappop(self.labelled)
            sample = self.pending.pop(sample_id)
            assert sample.target is not None
            self.model.learn_one(dict(sample.features), sample.target)
            self.learned += 1
            learned.append(LearnedSample(sample_id, ts_event, ready_at, sample.prediction,
                                         sample.target))
        return learned

    def _expire_oldest(self) -> None:
        """Drop the oldest pending sample without a label (or, if all have one, the oldest)."""
        unlabelled = [key for key, sample in self.pending.items() if sample.target is None]
        candidates = unlabelled or list(self.pending)
        oldest = min(candidates, key=lambda key: (self.pending[key].ts_event, key))
        if self.pending.pop(oldest).target is not None:
            self.labelled = [entry for entry in self.labelled if entry[2] != oldest]
            heapq.heapify(self.labelled)
        self.expired += 1


def _checked(sample_id: str, features: Mapping[str, float]) -> dict[str, float]:
    copied: dict[str, float] = {}
    for name, value in features.items():
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"sample {sample_id!r}: feature {name!r} is {value!r}, not finite")
        copied[str(name)] = number
    return copied


def predict_progressively(
        learner: DelayedLearner,
        samples: Sequence[tuple[int, int, Mapping[str, float], float]],
        on_learned: Callable[[LearnedSample], None] | None = None,
        flush: bool = False) -> list[float]:
    """Walk `(ts, ready_ts, features, target)` samples in order: at each sample's time, learn the
    labels ready by then, predict the sample, then hand over its label (learned once its horizon
    has passed). Returns the predictions; with `flush`, the labels still pending at the end are
    learned too. `on_learned` sees every sample as it is learned."""
    def learn_until(now: int) -> None:
        for learned in learner.advance(now):
            if on_learned is not None:
                on_learned(learned)

    predictions = []
    for position, (ts, _ready, features, target) in enumerate(samples):
        learn_until(ts)
        sample_id = str(position)
        predictions.append(learner.predict(sample_id, ts, features))
        learner.label(sample_id, target)
    if flush:
        learn_until(2**62)
    return predictions
