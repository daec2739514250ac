"""BarView exposes only closed bars; GuardedStrategy turns bad user code into error records;
the registry and the event types."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from engine.config import DexLedConfig, EmaCrossConfig, MomentumBreakoutConfig
from engine.indicator_spec import IndicatorSpec
from engine.strategies import STRATEGIES, make_strategy
from engine.strategies.base import (
    FLAT,
    BarView,
    ClosePosition,
    ExitPlan,
    GuardedStrategy,
    LookAheadError,
    MoveStop,
    PositionView,
    Signal,
    Strategy,
    StrategyAction,
    TakeProfit,
    check_action,
    details_json,
)
from engine.strategies.momentum_breakout import MomentumBreakout
from engine.types import Fill, Mark, event_key, intent_id_for, order_id_for, update_key


def view(end: int = 3) -> BarView:
    columns = {"ts_close": np.array([10, 20, 30, 40]), "close": np.array([1.0, 2.0, 3.0, 4.0])}
    return BarView("1m", columns, end, now=[0, 10, 20, 30, 40][end])


def test_bar_view_reads_only_closed_bars() -> None:
    bars = view(3)
    assert len(bars) == 3 and bars.ts_close == 30 and bars.now == 30
    assert bars["close"] == 3.0 and bars.value("close", 2) == 1.0
    assert math.isnan(bars.value("close", 3))  # before the kept history: NaN
    with pytest.raises(LookAheadError):
        bars.value("close", -1)
    column = bars.column("close")
    assert column.tolist() == [1.0, 2.0, 3.0]
    assert bars.column("close", 2).tolist() == [2.0, 3.0]
    with pytest.raises(ValueError):
        column[0] = 9.0
    with pytest.raises(KeyError, match="ema_5"):
        bars.value("ema_5")
    assert bars.has("close") and not bars.has("ema_5")


def test_position_view_helpers() -> None:
    assert FLAT.is_flat and FLAT.side == 0
    position = PositionView(quantity=-2.0, pending_quantity=2.0)
    assert position.side == -1 and position.projected_quantity == 0.0 and not position.is_flat


class Echo(Strategy):
    name = "echo"

    def __init__(self, output: object) -> None:
        self.output = output

    def timeframes(self) -> tuple[str, ...]:
        return ("1m",)

    def required_indicators(self) -> list[IndicatorSpec]:
        return [IndicatorSpec("sma", "1m", 3)]

    def on_bar(
        self, timeframe: str, bars: BarView, position: PositionView
    ) -> Sequence[StrategyAction]:
        if isinstance(self.output, Exception):
            raise self.output
        return self.output  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (ValueError("bad"), "exception"),
        (LookAheadError("peek"), "look_ahead"),
        ([Signal(0, "x")], "invalid_output"),
        ([Signal(True, "x")], "invalid_output"),
        ([Signal(1, "x", score=math.inf)], "invalid_output"),
        ([Signal(1, "x", score="high")], "invalid_output"),  # type: ignore[arg-type]
        ([Signal(1, "x", details={"when": object()})], "invalid_output"),
        ([Signal(1, "x", exits=ExitPlan(stop_distance=-1.0))], "invalid_output"),
        (
            [Signal(1, "x", exits=ExitPlan(take_profits=(TakeProfit(1.0, 1.5, "tp"),)))],
            "invalid_output",
        ),
        ([Signal(1, "x", exits=ExitPlan(max_holding_ns=0))], "invalid_output"),
        ([MoveStop(math.nan)], "invalid_output"),
        ([Signal(1, "ok"), 42], "invalid_output"),
        ([Signal(1, "x", bar_ts=31)], "look_ahead"),
    ],
)
def test_guard_reports_and_drops_bad_output(output: object, reason: str) -> None:
    guarded = GuardedStrategy(Echo(output))
    actions, error = guarded.on_bar("1m", view(3), FLAT)
    assert actions == []
    assert error is not None and error.reason == reason and error.ts_event == 30
    assert error.timeframe == "1m" and error.detail


def test_guard_passes_good_output() -> None:
    good: list[StrategyAction] = [
        Signal(1, "x", score=3.0, details={"a": np.float64(1.5), "b": math.nan}, bar_ts=30),
        MoveStop(10.0),
        ClosePosition("done"),
    ]
    guarded = GuardedStrategy(Echo(good))
    assert guarded.on_bar("1m", view(3), FLAT) == (good, None)
    assert guarded.name == "echo" and guarded.primary_timeframe == "1m"
    assert guarded.required_indicators() == [IndicatorSpec("sma", "1m", 3)]
    assert GuardedStrategy(Echo(None)).on_bar("1m", view(3), FLAT) == ([], None)


def test_details_json_is_canonical() -> None:
    text = details_json({"b": np.int64(2), "a": [math.nan, np.bool_(True)], "c": {"x": 1.5}})
    assert text == '{"a":[null,true],"b":2,"c":{"x":1.5}}'
    assert details_json(None) is None
    assert check_action(ClosePosition("x"), 0) is None


def test_registry() -> None:
    assert set(STRATEGIES) == {"dex_led", "ema_cross", "momentum_breakout"}
    assert isinstance(make_strategy(MomentumBreakoutConfig()), MomentumBreakout)
    assert make_strategy(EmaCrossConfig()).name == "ema_cross"
    assert make_strategy(DexLedConfig()).name == "dex_led"


def test_event_keys_and_ids() -> None:
    assert intent_id_for("BTCUSDT", 7) == "BTCUSDT:i7"
    assert order_id_for("BTCUSDT", 7) == "BTCUSDT:o7"
    mark = Mark("ETHUSDT", 5, 1, 100.0)
    fill = Fill(
        "BTCUSDT:f2", "BTCUSDT:o1", "BTCUSDT", 5, 2, 1, 1.0, 1.0, 1.0, 0.0, "taker", 0.0, 0.0
    )
    assert update_key(mark) == mark.key == event_key(5, "ETHUSDT", 1)
    updates: list[Fill | Mark] = [mark, fill]
    assert sorted(updates, key=update_key) == [fill, mark]  # same time: symbol order
