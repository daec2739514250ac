"""The maintenance agent in the engine: a change in the learned errors is journaled as drift and
retrains (the fresh model swapped in only when it wins), re-tunes follow their schedule, and the
agent survives a checkpoint."""

from __future__ import annotations

import math
import pickle

import numpy as np

from engine.config import DexLedConfig, LearningConfig, MaintenanceConfig
from engine.model_maintenance import ModelMaintenance
from engine.signal_learner import SignalLearner
from engine.strategies.base import GuardedStrategy
from engine.strategies.dex_led import DexLed

MINUTE = 60_000_000_000


def _learner(retune_every: str | None = None) -> SignalLearner:
    config = LearningConfig(target="reward_score", horizon="5m", model="linear",
                            maintenance=MaintenanceConfig(drift_warmup=20, history=400,
                                                          retune_every=retune_every))
    return SignalLearner(config, "ETHUSDT")


def _feed(learner: SignalLearner, minutes: int, start: int = 0) -> list[dict[str, object]]:
    """One long signal a minute whose outcome follows its feature; after minute 150 the sign of
    that relation flips (a drift). Price moves by the signal's feature over the next minutes."""
    rows: list[dict[str, object]] = []
    rng = np.random.default_rng(start)
    for minute in range(start, start + minutes):
        now = minute * MINUTE
        learner.on_bar(now, 100.0 * (1 + 0.002 * rng.random()), 100.0 * (1 - 0.001))
        assert learner.maintenance is not None
        events, _ = learner.maintenance.drain()
        rows.extend(events)
        feature = float(rng.normal())
        learner.predict(f"s{minute}", now, 1, 100.0, {"flow": feature})
    return rows


def test_drift_in_the_errors_is_journaled_and_retrains() -> None:
    learner = _learner()
    assert learner.maintenance is not None
    # rewards scale with a hidden regime: calm, then ten times larger errors
    events: list[dict[str, object]] = []
    rng = np.random.default_rng(3)
    for minute in range(400):
        now = minute * MINUTE
        spread = 0.001 if minute < 200 else 0.02
        high = 100.0 * (1 + spread * rng.random())
        for _signal_id, reward, _why in learner.on_bar(now, high, 99.0):
            assert reward is None or math.isfinite(reward)
        learner.predict(f"s{minute}", now, 1, 100.0, {"flow": float(rng.normal())})
        rows, _ = learner.maintenance.drain()
        events.extend(rows)
    kinds = [row["kind"] for row in events]
    assert "drift" in kinds and "retrain" in kinds
    first_drift = next(row for row in events if row["kind"] == "drift")
    assert int(first_drift["ts_event"]) > 200 * MINUTE  # not before the change
    retrain = next(row for row in events if row["kind"] == "retrain")
    assert "holdout MAE" in str(retrain["detail"])
    assert learner.maintenance.monitor.alerts == kinds.count("drift")
    assert all(str(row["key"]).startswith("ETHUSDT:m") for row in events)


def test_a_checkpointed_agent_continues_exactly() -> None:
    straight = _learner()
    _feed(straight, 200)
    restored = pickle.loads(pickle.dumps(straight))
    assert _feed(straight, 200, start=200) == _feed(restored, 200, start=200)


def test_retunes_follow_the_schedule_and_change_the_strategys_thresholds() -> None:
    config = DexLedConfig(timeframe="1m", tuning_memory="6h", max_holding="20m")
    strategy = DexLed(config)
    guarded = GuardedStrategy(strategy)
    agent = ModelMaintenance("ETHUSDT", LearningConfig(target="reward_score"),
                             MaintenanceConfig(retune_every="1h", retune_window="2h",
                                               retune_min_signals=5))
    rng = np.random.default_rng(1)
    close = 2_000.0
    retunes = []
    for minute in range(1, 6 * 60):
        now = minute * MINUTE
        imbalance = float(np.clip(rng.normal(0, 0.6), -1, 1))
        close *= math.exp(0.002 * imbalance + 0.0005 * rng.normal())  # flow leads price
        strategy._memory.add(now, [close, imbalance, 1e6, 0.0, 0.0, 0.0, 1.0])
        agent.on_bar(now, guarded)
        rows, counters = agent.drain()
        assert counters == ({"threshold_retunes": 1} if rows else {})
        retunes += [(row["ts_event"], row["detail"]) for row in rows]
    assert [ts for ts, _ in retunes] == [(1 + 2 * 60 + 60 * k) * MINUTE for k in range(len(
        retunes))]  # first after the window has filled, then hourly
    assert len(retunes) == 4
    assert all("thresholds now" in detail for _, detail in retunes)
    in_use = strategy.phase_a  # the last re-tune's choice is what the detectors now use
    assert (f"{{'imbalance_threshold': {in_use.imbalance_threshold}, 'volume_ratio_threshold': "
            f"{in_use.volume_ratio_threshold}, 'min_confirmations': {in_use.min_confirmations}}}"
            in retunes[-1][1])


def test_a_failing_retune_keeps_the_settings_and_says_so() -> None:
    class Broken(DexLed):
        def retune(self, now: int, window_ns: int, min_signals: int) -> str | None:
            raise RuntimeError("no data")

    outcome = GuardedStrategy(Broken(DexLedConfig())).retune(0, MINUTE, 5)
    assert outcome == "re-tune failed, settings kept: RuntimeError: no data"
