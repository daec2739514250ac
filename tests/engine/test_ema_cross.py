"""ema_cross: the exact crossing definition, and its count on real closes against NumPy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from engine_builders import FOREVER, RecordingGateway, kline_batches, load_klines, loop_ema

from engine.config import EmaCrossConfig, RunConfig
from engine.strategies import make_strategy
from engine.strategies.base import FLAT, BarView, Signal
from engine.strategies.ema_cross import EmaCross
from engine.symbol_engine import SymbolEngine


def numpy_crossings(fast: np.ndarray, slow: np.ndarray) -> int:
    """The reference definition, vectorised: sign changes between consecutive non-zero signs."""
    valid = ~(np.isnan(fast) | np.isnan(slow))
    signs = np.sign(fast[valid] - slow[valid])
    nonzero = signs[signs != 0]
    return int(np.count_nonzero(nonzero[1:] != nonzero[:-1]))


def run_strategy(fast: np.ndarray, slow: np.ndarray) -> list[Signal]:
    strategy = EmaCross(EmaCrossConfig(fast_period=3, slow_period=5))
    columns = {
        "ts_close": np.arange(1, len(fast) + 1, dtype=np.int64),
        "ema_3": fast,
        "ema_5": slow,
    }
    signals: list[Signal] = []
    for end in range(1, len(fast) + 1):
        view = BarView("1m", columns, end, end)
        signals.extend(a for a in strategy.on_bar("1m", view, FLAT) if isinstance(a, Signal))
    return signals


def test_crossing_definition_with_nans_and_ties() -> None:
    nan = np.nan
    fast = np.array([nan, 1.0, 2.0, 2.0, 1.0, nan, 3.0, 3.0, 1.0, 5.0, 5.0])
    slow = np.array([nan, 2.0, 2.0, 1.0, 1.0, 1.0, nan, 2.0, 2.0, 5.0, 4.0])
    # signs:         -    -1   0    +1   0    -    -    +1   -1   0    +1
    signals = run_strategy(fast, slow)
    assert [s.reason for s in signals] == ["ema_cross_up", "ema_cross_down", "ema_cross_up"]
    assert [s.direction for s in signals] == [1, -1, 1]
    assert all(s.reverse and s.quantity == 0.01 for s in signals)
    assert len(signals) == numpy_crossings(fast, slow)


def test_no_cross_before_a_first_nonzero_sign() -> None:
    fast = np.array([1.0, 1.0, 3.0])
    slow = np.array([1.0, 1.0, 2.0])
    assert run_strategy(fast, slow) == []


@pytest.mark.parametrize("seed", range(5))
def test_crossing_count_matches_numpy_on_random_series(seed: int) -> None:
    generator = np.random.default_rng(seed)
    fast = np.round(generator.normal(size=400), 1)
    slow = np.round(generator.normal(size=400), 1)  # rounding makes ties (sign 0) common
    fast[generator.random(400) < 0.1] = np.nan
    assert len(run_strategy(fast, slow)) == numpy_crossings(fast, slow)


def test_registry_and_indicators() -> None:
    strategy = make_strategy(EmaCrossConfig(timeframe="5m", fast_period=7, slow_period=30))
    assert isinstance(strategy, EmaCross)
    assert strategy.timeframes() == ("5m",)
    assert [spec.columns() for spec in strategy.required_indicators()] == [("ema_7",), ("ema_30",)]
    assert [spec.timeframe for spec in strategy.required_indicators()] == ["5m", "5m"]


def test_engine_crossings_on_real_closes_equal_the_numpy_count() -> None:
    klines = load_klines()
    rows = 12_000
    bars = {name: column[:rows] for name, column in klines.items()}
    bars["ema_10"] = loop_ema(bars["close"], 10)
    bars["ema_20"] = loop_ema(bars["close"], 20)
    config = RunConfig(strategy=EmaCrossConfig(fast_period=10, slow_period=20, quantity=0.01))
    engine = SymbolEngine("BTCUSDT", config)
    gateway = RecordingGateway()
    signals: list[dict] = []
    for batch in kline_batches("BTCUSDT", bars, bars_per_batch=240):
        result = engine.step(batch, FOREVER, gateway)
        gateway.risk.submit(result.updates)
        signals.extend(result.journal["signals"])
    expected = numpy_crossings(bars["ema_10"], bars["ema_20"])
    assert expected > 100
    assert len(signals) == expected
    assert all(row["strategy"] == "ema_cross" and row["acted"] for row in signals)
    directions = [row["direction"] for row in signals]
    assert all(a == -b for a, b in itertools.pairwise(directions))
    kinds = [intent.intent_kind for intent, _ in gateway.decisions]
    assert kinds[0] == "entry"
    assert kinds[1:] == ["reverse_close", "reverse_open"] * (expected - 1)
    closes = [intent for intent, _ in gateway.decisions if intent.intent_kind == "reverse_close"]
    assert all(intent.reduce_only and intent.quantity == pytest.approx(0.01) for intent in closes)
    gateway.risk.apply_all()
    quantity, _ = gateway.risk.position("BTCUSDT")
    assert quantity == pytest.approx(0.01 * directions[-1])
    assert engine.tracker.signed_quantity == pytest.approx(0.01 * directions[-1])
