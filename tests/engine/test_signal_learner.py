"""The engine's signal learner: a signal's reward is known only once its horizon has passed, it
follows the plan's formula, and the plan moves to Phase B by itself after N labels."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import LearningConfig, parse_config
from engine.signal_features import signal_features
from engine.signal_learner import SignalLearner

MINUTE = 60_000_000_000


def _learner(**settings_: object) -> SignalLearner:
    return SignalLearner(LearningConfig(target="reward_score", horizon="20m", **settings_))


def test_the_reward_follows_the_plans_formula_at_bar_resolution() -> None:
    learner = _learner(decay_per_minute=0.05)
    learner.predict("long", 0, 1, 100.0, {"direction": 1.0})
    learner.predict("short", 0, -1, 100.0, {"direction": -1.0})
    labels = []
    for minute, (high, low) in enumerate([(101, 99), (103, 98), (102, 97.5)] + [(100, 100)] * 17,
                                         start=1):
        labels += learner.on_bar(minute * MINUTE, high, low)
    rewards = {signal_id: reward for signal_id, reward, _ in labels}
    assert rewards["long"] == pytest.approx(0.03 * math.exp(-0.05 * 2))  # best high at minute 2
    assert rewards["short"] == pytest.approx(0.025 * math.exp(-0.05 * 3))  # best low at minute 3
    assert learner.labelled == 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 120), min_size=1, max_size=30))
def test_no_label_is_known_before_its_horizon(signal_minutes: list[int]) -> None:
    learner = _learner()
    signals = sorted(signal_minutes)
    labelled: dict[str, int] = {}
    pending = list(enumerate(signals))
    for minute in range(0, 160):
        now = minute * MINUTE
        for signal_id, _, _ in learner.on_bar(now, 101.0, 99.0):
            labelled[signal_id] = now
        while pending and pending[0][1] == minute:
            index, at = pending.pop(0)
            learner.predict(f"s{index}", at * MINUTE, 1, 100.0, {"direction": 1.0})
    for index, at in enumerate(signals):
        assert labelled[f"s{index}"] == (at + 20) * MINUTE  # exactly when the horizon passed
    assert learner.learner.learned == len(signals)  # learned, never before its label


def test_phase_b_after_n_labels_lets_only_candidates_act() -> None:
    learner = _learner(phase_b_after=2, candidate_threshold=0.005)
    assert learner.phase == "A" and learner.acts(-1.0)
    for index in range(2):
        learner.predict(f"s{index}", 0, 1, 100.0, {"direction": 1.0})
    learner.on_bar(20 * MINUTE, 101.0, 99.0)
    assert learner.phase == "B"
    assert learner.acts(0.006) and not learner.acts(0.004)


def test_signal_features_are_scale_free_and_finite() -> None:
    bar = {"close": 2_000.0, "dex_price": 2_002.0, "dex_liquidity": 3e18, "dex_volume_30s": 1e6,
           "dex_imbalance_30s": -0.8, "dex_liquidity_velocity": 7.0, "dex_volume_ratio": math.nan,
           "order_flow_imbalance": 0.2, "top_imbalance": -0.1, "depth_bid_5pct": 30.0,
           "depth_ask_5pct": 10.0, "data_latency_ms": 250.0}
    features = signal_features(-1, bar, {"confirmations": 2}, "ranging")
    regimes = {f"regime_{name}": float(name == "ranging") for name in (
        "trending_up", "trending_down", "ranging", "high_volatility", "compression",
        "capitulation")}
    assert features == {
        "direction": -1.0, "log_dex_volume_30s": pytest.approx(math.log1p(1e6)),
        "dex_imbalance_30s": -0.8, "dex_liquidity_velocity": 1.0,
        "dex_cex_spread": pytest.approx(math.log(1.001)), "order_flow_imbalance": 0.2,
        "top_imbalance": -0.1, "log_depth_5pct": pytest.approx(math.log1p(40.0)),
        "depth_imbalance_5pct": 0.5, "data_latency_s": 0.25, "confirmations": 2.0, **regimes}
    # without a book, receive times or a regime those features are simply absent
    assert set(signal_features(1, {"close": 2_000.0}, {})) == {"direction"}


def test_a_dex_led_run_needs_its_pools_and_one_pool_per_pair() -> None:
    with pytest.raises(ValueError, match=r"dex\.pools"):
        parse_config({"timeframes": ["1s"], "strategy": {"kind": "dex_led"}})
    pool = {"tape": "runs/dex/a", "cex_symbol": "ETHUSDT"}
    with pytest.raises(ValueError, match="one pool per CEX pair"):
        parse_config({"timeframes": ["1s"], "strategy": {"kind": "dex_led"},
                      "dex": {"pools": [pool, pool]}})


def test_a_signal_without_an_entry_price_is_labelled_empty_with_its_reason() -> None:
    learner = _learner()
    learner.predict("s0", 0, 1, math.nan, {"direction": 1.0})
    assert learner.on_bar(MINUTE, 101.0, 99.0) == [
        ("s0", None, "no direction or entry price to score the signal from")]
    assert learner.labelled == 0 and not learner.learner.pending
