"""BarLearner: scale-free features, labels learned only once their horizon has passed, the gate,
and a learner that pickles with the engine; a replay with learners on journals the same twice."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest

from engine.bar_learner import BarLearner, bar_features
from engine.config import LearningConfig, load_config
from engine.runtime import SAMPLE_CONFIG, run_replay
from storage.journal import read_table

MINUTE = 60_000_000_000


def _bar(close: float, open_: float | None = None) -> dict[str, float]:
    return {"open": open_ or close, "high": close * 1.001, "low": close * 0.999, "close": close,
            "volume": 3.0, "order_flow_imbalance": 0.2, "spread": close * 1e-4}


def test_features_are_scale_free() -> None:
    low, high = bar_features(_bar(100.0, 99.0)), bar_features(_bar(100_000.0, 99_000.0))
    assert low.keys() == high.keys() and "close" not in low
    for name in low:
        assert low[name] == pytest.approx(high[name], rel=1e-9), name
    assert bar_features({"close": math.nan}) == {}


def test_labels_wait_for_their_horizon_and_the_gate_acts() -> None:
    learner = BarLearner(LearningConfig(model="linear", horizon="5m", min_prediction=0.0))
    for minute in range(5):
        learner.on_bar(minute * MINUTE, _bar(100.0 + minute))
    assert learner.learner.learned == 0  # nothing is 5 minutes old before minute 5
    learner.on_bar(5 * MINUTE, _bar(105.0))
    assert learner.learner.learned == 1
    assert learner.gate(1, 0.001) and not learner.gate(-1, 0.001) and learner.gate(-1, -0.001)
    clone = pickle.loads(pickle.dumps(learner))
    for minute in range(6, 30):
        bar = _bar(100.0 + minute)
        assert clone.on_bar(minute * MINUTE, bar) == learner.on_bar(minute * MINUTE, bar)
    assert learner.learner.learned == 25  # minutes 0 to 24 are 5 minutes old by minute 29


def test_unknown_models_and_bad_horizons_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown regressor"):
        LearningConfig(model="lstm")
    with pytest.raises(ValueError, match="positive duration"):
        LearningConfig(horizon="0s")


@pytest.mark.slow
def test_replays_with_learners_journal_the_same_and_the_gate_shows(tmp_path: Path) -> None:
    config = load_config(SAMPLE_CONFIG).model_copy(
        update={"learning": LearningConfig(model="arf", horizon="30s", min_prediction=0.0)})
    first = run_replay(None, config, tmp_path / "a.duckdb", in_process=True)
    second = run_replay(None, config, tmp_path / "b.duckdb", in_process=True)
    for table in ("signals", "orders", "fills", "trades", "risk_decisions", "equity"):
        assert read_table(first.journal_path, table, deterministic_only=True) == read_table(
            second.journal_path, table, deterministic_only=True), table
    signals = read_table(first.journal_path, "signals")
    assert any("predicted_return" in str(row) for row in signals)
    assert any("learner_gate" in str(row) for row in signals)
    import duckdb

    with duckdb.connect(str(first.journal_path), read_only=True) as connection:
        count, predicted, latency, smallest = connection.sql(
            "select count(*), count(predicted_reward), count(data_latency_ms), "
            "min(data_latency_ms) from signals").fetchall()[0]
    # every signal carries the learner's prediction, and the capture's receive times give
    # each one its data latency (negative: that machine's clock was ~1.2 s behind Binance's)
    assert count > 50 and predicted == count and latency == count
    assert -2_000 < smallest < 0
