"""momentum_breakout: each score component, the trend filter, the ATR band, and the protective
exit sequence (stop, TP1, breakeven, trailing, TP2, time exit) on crafted price paths."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from engine_builders import FOREVER, RecordingGateway, make_bars, make_trades

from engine.batches import FeatureBatch
from engine.config import MomentumBreakoutConfig, RunConfig, SimulationConfig
from engine.strategies.base import FLAT, BarView, MoveStop, PositionView, Signal
from engine.strategies.momentum_breakout import MomentumBreakout
from engine.symbol_engine import SymbolEngine
from engine.timeframes import NS_PER_DAY, NS_PER_HOUR, NS_PER_MINUTE, NS_PER_SECOND

T0 = 20_059 * NS_PER_DAY  # 2024-12-02 00:00 UTC, a 4h boundary
M15 = 15 * NS_PER_MINUTE


def primary_view(
    close: float = 100.0,
    upper_prev: float = 99.5,
    lower_prev: float = 95.0,
    volume: float = 300.0,
    volume_sma: float = 100.0,
    rsi: float = 60.0,
    atr: float = 1.0,
) -> BarView:
    columns = {
        "ts_close": np.array([T0 - M15, T0]),
        "close": np.array([99.0, close]),
        "volume": np.array([100.0, volume]),
        # the current bar's band includes the bar itself, so close can never exceed it
        "donchian_upper_20": np.array([upper_prev, max(upper_prev, close)]),
        "donchian_lower_20": np.array([lower_prev, min(lower_prev, close)]),
        "volume_sma_20": np.array([100.0, volume_sma]),
        "rsi_14": np.array([50.0, rsi]),
        "atr_14": np.array([1.0, atr]),
    }
    return BarView("15m", columns, 2, T0)


def trend_view(fast: float, slow: float) -> BarView:
    columns = {"ts_close": np.array([T0]), "ema_20": np.array([fast]), "ema_50": np.array([slow])}
    return BarView("4h", columns, 1, T0)


def evaluate(
    trend: int = 1, position: PositionView = FLAT, **bar: float
) -> tuple[MomentumBreakout, list[Any]]:
    strategy = MomentumBreakout(MomentumBreakoutConfig())
    if trend:
        strategy.on_bar("4h", trend_view(100.0 + trend, 100.0), FLAT)
    actions = list(strategy.on_bar("15m", primary_view(**bar), position))
    return strategy, actions


def only_signal(actions: list[Any]) -> Signal:
    signals = [action for action in actions if isinstance(action, Signal)]
    assert len(signals) == 1
    return signals[0]


def components(signal: Signal) -> dict[str, int]:
    assert signal.details is not None
    return dict(signal.details["components"])  # type: ignore[call-overload]


# ---------------------------------------------------------------- scoring


def test_full_score_long_entry_and_exit_plan() -> None:
    signal = only_signal(evaluate()[1])
    assert (signal.direction, signal.reason, signal.act, signal.score) == (
        1,
        "breakout_long",
        True,
        5.0,
    )
    assert components(signal) == {"breakout": 2, "trend": 1, "volume": 1, "rsi": 1}
    assert signal.quantity is None  # sized by risk
    plan = signal.exits
    assert plan is not None
    assert plan.stop_distance == pytest.approx(1.5)
    assert [(tp.distance, tp.fraction, tp.name) for tp in plan.take_profits] == [
        (3.0, 0.5, "take_profit_1"),
        (6.0, 1.0, "take_profit_2"),
    ]
    assert plan.breakeven_offset_pct == 0.0005
    assert plan.max_holding_ns == 24 * NS_PER_HOUR
    assert signal.bar_ts == T0


@pytest.mark.parametrize(
    ("bar", "expected"),
    [
        ({"volume": 150.0}, {"volume": 0, "rsi": 1}),  # not above 1.5x
        ({"volume": 150.1}, {"volume": 1, "rsi": 1}),
        ({"rsi": 49.9}, {"volume": 1, "rsi": 0}),
        ({"rsi": 50.0}, {"volume": 1, "rsi": 1}),
        ({"rsi": 75.0}, {"volume": 1, "rsi": 1}),
        ({"rsi": 75.1}, {"volume": 1, "rsi": 0}),
        ({"rsi": math.nan}, {"volume": 1, "rsi": 0}),
    ],
)
def test_volume_and_rsi_components(bar: dict[str, float], expected: dict[str, int]) -> None:
    signal = only_signal(evaluate(1, FLAT, **bar)[1])
    assert {key: components(signal)[key] for key in expected} == expected
    assert signal.score == 3.0 + sum(expected.values())
    assert signal.act  # 4 or 5: enough


def test_score_below_entry_is_journaled_not_acted() -> None:
    signal = only_signal(evaluate(volume=100.0, rsi=80.0)[1])
    assert signal.score == 3.0 and not signal.act
    assert signal.details is not None and signal.details["blocked"] == ["score"]


def test_trend_is_a_hard_filter() -> None:
    signal = only_signal(evaluate(trend=-1)[1])
    assert components(signal)["trend"] == 0 and signal.score == 4.0
    assert not signal.act and signal.exits is None
    assert signal.details is not None and signal.details["blocked"] == ["trend_filter"]
    unknown = only_signal(evaluate(trend=0)[1])
    assert not unknown.act and unknown.details is not None
    assert "trend_filter" in str(unknown.details["blocked"])


@pytest.mark.parametrize(("atr", "ok"), [(0.29, False), (0.3, True), (4.0, True), (4.01, False)])
def test_atr_band(atr: float, ok: bool) -> None:
    signal = only_signal(evaluate(atr=atr)[1])
    assert signal.act is ok
    if not ok:
        assert signal.details is not None and signal.details["blocked"] == ["atr_band"]


def test_stop_is_at_least_half_a_percent() -> None:
    signal = only_signal(evaluate(atr=0.31)[1])
    assert signal.exits is not None
    assert signal.exits.stop_distance == pytest.approx(0.5)  # 1.5 x 0.31 = 0.465 < 0.5


def test_no_breakout_no_signal_and_the_current_band_is_not_used() -> None:
    assert evaluate(close=99.5)[1] == []  # equal to the previous band: not beyond it
    assert evaluate(close=99.6, upper_prev=99.5)[1] != []  # current band (>= close) ignored


def test_short_side_is_mirrored() -> None:
    signal = only_signal(evaluate(trend=-1, close=94.0, lower_prev=95.0, rsi=40.0)[1])
    assert (signal.direction, signal.reason, signal.act, signal.score) == (
        -1,
        "breakout_short",
        True,
        5.0,
    )
    wrong_rsi = only_signal(evaluate(trend=-1, close=94.0, lower_prev=95.0, rsi=55.0)[1])
    assert components(wrong_rsi)["rsi"] == 0


def test_open_position_blocks_entry_but_still_journals() -> None:
    position = PositionView(quantity=1.0, entry_price=100.0, entry_ts=T0 - M15)
    signal = only_signal(evaluate(position=position)[1])
    assert not signal.act and signal.details["blocked"] == ["position_open"]  # type: ignore[index]


def test_details_are_json() -> None:
    signal = only_signal(evaluate()[1])
    from engine.strategies.base import details_json

    text = details_json(signal.details)
    assert text is not None and json.loads(text)["components"]["trend"] == 1


def test_trailing_only_after_tp1() -> None:
    held = PositionView(
        quantity=2.0, entry_price=100.0, entry_ts=T0 - M15, highest_close=110.0, lowest_close=100.0
    )
    _, actions = evaluate(close=99.0)
    assert not any(isinstance(action, MoveStop) for action in actions)
    _, actions = evaluate(close=99.0, position=held)
    assert not any(isinstance(action, MoveStop) for action in actions)
    after_tp1 = PositionView(
        quantity=1.0,
        entry_price=100.0,
        entry_ts=T0 - M15,
        take_profits_hit=1,
        highest_close=110.0,
        lowest_close=100.0,
    )
    _, actions = evaluate(close=99.0, position=after_tp1)
    assert [a for a in actions if isinstance(a, MoveStop)] == [MoveStop(108.0, "trailing_stop")]
    short = PositionView(
        quantity=-1.0,
        entry_price=100.0,
        entry_ts=T0 - M15,
        take_profits_hit=1,
        highest_close=100.0,
        lowest_close=90.0,
    )
    _, actions = evaluate(close=99.0, position=short)
    assert [a for a in actions if isinstance(a, MoveStop)] == [MoveStop(92.0, "trailing_stop")]


def test_indicators_requested() -> None:
    strategy = MomentumBreakout(MomentumBreakoutConfig())
    columns = {column for spec in strategy.required_indicators() for column in spec.columns()}
    assert columns == {
        "donchian_upper_20",
        "donchian_lower_20",
        "volume_sma_20",
        "rsi_14",
        "atr_14",
        "atr_100",  # the baseline risk rules scale size by (intent feature `atr_baseline`)
        "ema_20",
        "ema_50",
    }
    assert strategy.timeframes() == ("15m", "4h")


# ---------------------------------------------------------------- exits on the trade path

EXACT = SimulationConfig(
    latency_ms=0.0,
    latency_jitter_ms=0.0,
    default_spread_bps=0.0,
    impact_bps_per_unit_participation=0.0,
    taker_fee_bps=0.0,
)


def scenario(
    path: list[tuple[int, float]], later_closes: Sequence[float] = (), direction: int = 1
) -> tuple[dict[str, list[dict[str, Any]]], RecordingGateway, SymbolEngine, list[Any]]:
    """A breakout at T0 (entry fills at T0 + 1 s at 100), then trades at T0 + offset (ns) and
    15m bars closing at T0 + k x 15m with the given closes (ATR 1, no further breakouts)."""
    close = 100.0
    primary: dict[str, list[float]] = {
        "ts_open": [T0 - 2 * M15, T0 - M15],
        "ts_close": [T0 - M15, T0],
        "close": [99.0 if direction > 0 else 101.0, close],
        "volume": [100.0, 300.0],
        "donchian_upper_20": [99.5, 100.0] if direction > 0 else [110.0, 110.0],
        "donchian_lower_20": [90.0, 90.0] if direction > 0 else [100.5, 100.0],
        "volume_sma_20": [100.0, 100.0],
        "rsi_14": [50.0, 60.0 if direction > 0 else 40.0],
        "atr_14": [1.0, 1.0],
    }
    for k, later in enumerate(later_closes, start=1):
        for name, value in (
            ("ts_open", T0 + (k - 1) * M15),
            ("ts_close", T0 + k * M15),
            ("close", later),
            ("volume", 100.0),
            ("donchian_upper_20", 1000.0),
            ("donchian_lower_20", 1.0),
            ("volume_sma_20", 100.0),
            ("rsi_14", 50.0),
            ("atr_14", 1.0),
        ):
            primary[name].append(value)
    trend = {
        "ts_open": [T0 - 4 * NS_PER_HOUR],
        "ts_close": [T0],
        "close": [100.0],
        "ema_20": [100.0 + direction],
        "ema_50": [100.0],
    }
    trades = [(T0 - 60 * NS_PER_SECOND, 99.9), (T0 + NS_PER_SECOND, close)]
    trades += [(T0 + offset, price) for offset, price in path]
    batch = FeatureBatch(
        symbol="BTCUSDT",
        sequence=0,
        watermark=max(max(t for t, _ in trades), int(primary["ts_close"][-1])) + 1,
        trades=make_trades([t for t, _ in trades], [p for _, p in trades], 10.0),
        bars={
            "15m": make_bars("15m", {k: np.asarray(v) for k, v in primary.items()}),
            "4h": make_bars("4h", {k: np.asarray(v) for k, v in trend.items()}),
        },
    )
    engine = SymbolEngine("BTCUSDT", RunConfig(strategy=MomentumBreakoutConfig(), simulation=EXACT))
    gateway = RecordingGateway()
    result = engine.step(batch, FOREVER, gateway)
    updates = gateway.updates + list(result.updates)
    final = engine.finish(gateway)
    updates += final.updates
    journal = {name: rows + final.journal[name] for name, rows in result.journal.items()}
    return journal, gateway, engine, updates


S = NS_PER_SECOND
QUANTITY = 0.01 * 100_000 / 1.5  # risk-sized: 1% of equity over a 1.5-ATR stop


def test_entry_is_sized_by_risk_from_the_stop() -> None:
    journal, gateway, engine, _ = scenario([(2 * S, 100.5)])
    entry, decision = gateway.decisions[0]
    assert (entry.intent_kind, entry.quantity, entry.stop_price) == ("entry", None, 98.5)
    assert decision.rule == "fixed_fractional" and decision.quantity == pytest.approx(QUANTITY)
    assert engine.tracker.signed_quantity == pytest.approx(QUANTITY)
    [signal] = journal["signals"]
    assert signal["acted"] and signal["score"] == 5.0 and signal["execution_latency_ms"] == 1000.0
    assert json.loads(signal["details"])["components"] == {
        "breakout": 2,
        "trend": 1,
        "volume": 1,
        "rsi": 1,
    }


def test_stop_loss() -> None:
    journal, _, engine, _ = scenario([(2 * S, 99.0), (3 * S, 98.4), (4 * S, 97.0)])
    [trade] = journal["trades"]
    assert trade["exit_reason"] == "stop_loss"
    assert trade["exit_price"] == pytest.approx(98.4)
    assert trade["pnl"] == pytest.approx(QUANTITY * -1.6)
    assert trade["mae"] == pytest.approx(0.016) and trade["mfe"] == pytest.approx(0.0)
    assert trade["exit_ts"] == T0 + 3 * S
    assert engine.tracker.position is None


def test_tp1_then_breakeven_stop() -> None:
    journal, _, _, updates = scenario([(2 * S, 103.1), (3 * S, 101.0), (4 * S, 100.0)])
    fills = journal["fills"]
    assert [fill["quantity"] for fill in fills] == pytest.approx(
        [QUANTITY, QUANTITY / 2, QUANTITY / 2]
    )
    assert [fill["price"] for fill in fills] == pytest.approx([100.0, 103.1, 100.0])
    tp1_fill = next(u for u in updates if getattr(u, "fill_id", None) == fills[1]["key"])
    assert tp1_fill.stop_price == pytest.approx(100.05)  # breakeven + 0.05%
    [trade] = journal["trades"]
    assert trade["exit_reason"] == "breakeven_stop"
    assert trade["quantity"] == pytest.approx(QUANTITY)
    assert trade["exit_price"] == pytest.approx((103.1 + 100.0) / 2)
    assert trade["pnl"] == pytest.approx(QUANTITY / 2 * 3.1)


def test_tp1_trailing_stop_only_tightens_then_triggers() -> None:
    path = [
        (2 * S, 101.0),
        (3 * S, 103.5),
        (10 * S, 103.8),  # TP1 at 103.5
        (M15 + S, 103.5),  # after the bar closing at 104: stop trails to 102
        (2 * M15 + S, 102.5),
        (2 * M15 + 2 * S, 101.9),  # bar at 103 would loosen: ignored
    ]
    journal, _, _, updates = scenario(path, later_closes=[104.0, 103.0])
    marks = [u for u in updates if not hasattr(u, "fill_id")]
    stops = {mark.ts_event: mark.stop_price for mark in marks}
    assert stops[T0] is None  # mark at the entry bar: no position yet
    assert stops[T0 + M15] == pytest.approx(102.0)
    assert stops[T0 + 2 * M15] == pytest.approx(102.0)
    [trade] = journal["trades"]
    assert trade["exit_reason"] == "trailing_stop"
    assert trade["exit_price"] == pytest.approx((103.5 + 101.9) / 2)
    assert trade["pnl"] == pytest.approx(QUANTITY / 2 * (3.5 + 1.9))
    assert trade["mfe"] == pytest.approx(0.038) and trade["mae"] == pytest.approx(0.0)
    position_signal = [row for row in journal["signals"] if not row["acted"]]
    assert len(position_signal) == 1  # the 104 close broke the entry bar's band: position open
    assert json.loads(position_signal[0]["details"])["blocked"] == ["position_open"]


def test_tp2_closes_the_rest() -> None:
    path = [(2 * S, 103.2), (M15 + S, 105.0), (M15 + 2 * S, 106.1), (M15 + 3 * S, 107.0)]
    journal, _, engine, _ = scenario(path, later_closes=[104.0])
    assert [fill["price"] for fill in journal["fills"]] == pytest.approx([100.0, 103.2, 106.1])
    [trade] = journal["trades"]
    assert trade["exit_reason"] == "take_profit_2"
    assert trade["pnl"] == pytest.approx(QUANTITY / 2 * (3.2 + 6.1))
    assert engine.tracker.position is None


def test_time_exit_after_max_holding() -> None:
    path = [(2 * S, 100.5), (23 * NS_PER_HOUR, 100.2), (24 * NS_PER_HOUR + 2 * S, 100.3)]
    journal, _, _, _ = scenario(path)
    [trade] = journal["trades"]
    assert trade["exit_reason"] == "time_exit"
    assert trade["exit_ts"] == T0 + 24 * NS_PER_HOUR + 2 * S
    assert trade["exit_price"] == pytest.approx(100.3)


def test_short_stop_loss_is_mirrored() -> None:
    journal, gateway, _, _ = scenario([(2 * S, 101.0), (3 * S, 101.6)], direction=-1)
    entry, _ = gateway.decisions[0]
    assert (entry.side, entry.stop_price) == (-1, 101.5)
    [trade] = journal["trades"]
    assert (trade["side"], trade["exit_reason"]) == (-1, "stop_loss")
    assert trade["pnl"] == pytest.approx(QUANTITY * -1.6)
    exit_intent, exit_decision = gateway.decisions[1]
    assert exit_intent.reduce_only and exit_intent.side == 1 and exit_decision.rule == "reduce_only"
