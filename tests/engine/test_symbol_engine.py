"""SymbolEngine: horizon pauses, resume equivalence, determinism, checkpoints, the strategy guard's
dead letters, rejected entries, marks and the end of stream."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from engine_builders import (
    FOREVER,
    RecordingGateway,
    kline_batches,
    load_klines,
    loop_ema,
    make_bars,
    make_trades,
)

from engine.bar_schedule import BarSchedule
from engine.batches import FeatureBatch, QuoteColumns
from engine.config import EmaCrossConfig, MomentumBreakoutConfig, RunConfig
from engine.indicator_spec import IndicatorSpec
from engine.strategies.base import (
    BarView,
    ClosePosition,
    ExitPlan,
    GuardedStrategy,
    PositionView,
    Signal,
    Strategy,
    StrategyAction,
)
from engine.symbol_engine import StepResult, SymbolEngine
from engine.timeframes import NS_PER_MINUTE, NS_PER_SECOND

SYMBOL = "BTCUSDT"
CONFIG = RunConfig(strategy=EmaCrossConfig(fast_period=10, slow_period=20, quantity=0.01))


def ema_batches(rows: int = 2400, bars_per_batch: int = 120) -> list[FeatureBatch]:
    klines = load_klines()
    bars = {name: column[:rows] for name, column in klines.items()}
    bars["ema_10"] = loop_ema(bars["close"], 10)
    bars["ema_20"] = loop_ema(bars["close"], 20)
    return kline_batches(SYMBOL, bars, bars_per_batch=bars_per_batch)


class Run:
    """Drives an engine like the supervisor: hands step updates to risk, collects everything."""

    def __init__(self, engine: SymbolEngine | None = None) -> None:
        self.engine = engine or SymbolEngine(SYMBOL, CONFIG)
        self.gateway = RecordingGateway()
        self.journal: dict[str, list[dict[str, Any]]] = {}
        self.updates: list[Any] = []
        self.results: list[StepResult] = []

    def absorb(self, result: StepResult, handed_before: int) -> StepResult:
        self.updates += self.gateway.updates[handed_before:] + list(result.updates)
        self.gateway.risk.submit(result.updates)
        for table, rows in result.journal.items():
            self.journal.setdefault(table, []).extend(rows)
        self.results.append(result)
        return result

    def step(self, batch: FeatureBatch | None, horizon: int = FOREVER) -> StepResult:
        before = len(self.gateway.updates)
        return self.absorb(self.engine.step(batch, horizon, self.gateway), before)

    def finish(self) -> dict[str, Any]:
        before = len(self.gateway.updates)
        self.absorb(self.engine.finish(self.gateway), before)
        self.gateway.risk.finish()
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        return {
            "journal": repr(self.journal),
            "updates": repr(self.updates),
            "risk": repr(self.gateway.risk.drain_journal()),
            "decisions": repr(self.gateway.decisions),
        }


def unpaused(batches: list[FeatureBatch]) -> dict[str, Any]:
    run = Run()
    for batch in batches:
        assert not run.step(batch).paused
    return run.finish()


def test_pauses_at_the_horizon_and_resuming_gives_the_same_journal() -> None:
    batches = ema_batches()
    expected = unpaused(batches)
    run = Run()
    pauses = 0
    for batch in batches:
        result = run.step(batch, horizon=int(batch.trades.ts_event[0]))
        while result.paused:
            pauses += 1
            assert result.pending_intent_ts is not None
            assert result.watermark == result.pending_intent_ts
            # an intent at the horizon itself is not decided
            again = run.step(None, horizon=result.pending_intent_ts)
            assert again.paused and again.pending_intent_ts == result.pending_intent_ts
            result = run.step(None, horizon=result.pending_intent_ts + 1)
        assert result.watermark == batch.watermark
    assert pauses > 50
    assert run.finish() == expected


def test_checkpoint_while_paused_resumes_identically() -> None:
    batches = ema_batches(rows=1200)
    expected = unpaused(batches)
    run = Run()
    restored = 0
    for batch in batches:
        result = run.step(batch, horizon=int(batch.trades.ts_event[0]))
        while result.paused:
            assert result.pending_intent_ts is not None
            run.engine = pickle.loads(pickle.dumps(run.engine))
            restored += 1
            result = run.step(None, horizon=result.pending_intent_ts + 1)
        run.engine = pickle.loads(pickle.dumps(run.engine))
    assert restored > 10
    assert run.finish() == expected


def test_two_runs_are_identical() -> None:
    batches = ema_batches(rows=1200)
    first, second = unpaused(batches), unpaused(batches)
    assert first == second
    assert "ema_cross_up" in first["journal"]


def test_batch_size_does_not_change_the_journal() -> None:
    small = unpaused(ema_batches(rows=1200, bars_per_batch=7))
    large = unpaused(ema_batches(rows=1200, bars_per_batch=600))
    assert small["journal"] == large["journal"]
    assert small["risk"] == large["risk"]


def test_step_result_contents() -> None:
    run = Run()
    batches = ema_batches(rows=600)
    for batch in batches:
        run.step(batch)
    run.finish()
    counters: dict[str, int] = {}
    for result in run.results:
        for name, value in result.counters.items():
            counters[name] = counters.get(name, 0) + value
    assert counters["strategy_bars"] == 600
    assert counters["marks"] == 601  # one per 1m close, plus the final mark
    assert counters["market_trades"] == 1200
    assert counters["signals"] == len(run.journal["signals"])
    assert counters["fills"] == len(run.journal["fills"]) == counters["orders"]
    assert counters["round_trips"] == len(run.journal["trades"])
    assert counters["intents"] == counters["approved_intents"] + counters.get("rejected_intents", 0)
    assert dict(run.engine.totals) == {k: v for k, v in counters.items() if v}
    final = run.results[-1]
    assert final.updates[-1].ts_event == int(batches[-1].trades.ts_event[-1])
    assert set(run.journal) == {"signals", "orders", "fills", "trades", "dead_letters"}
    keys = [row["key"] for rows in run.journal.values() for row in rows]
    assert len(keys) == len(set(keys))


def test_rejected_entry_is_journaled_and_sends_no_order() -> None:
    run = Run()
    run.gateway.risk.halt("test")
    for batch in ema_batches(rows=600):
        run.step(batch)
    run.finish()
    signals = run.journal["signals"]
    assert signals and not any(row["acted"] for row in signals)
    assert '"outcome":"risk:kill_switch"' in signals[0]["details"]
    assert run.journal["orders"] == [] and run.journal["fills"] == []
    assert all(not decision.approved for _, decision in run.gateway.decisions)


def test_engine_rejects_misuse() -> None:
    engine = SymbolEngine(SYMBOL, CONFIG)
    gateway = RecordingGateway()
    batches = ema_batches(rows=240)
    other = FeatureBatch("ETHUSDT", 0, 0, make_trades([], []), {})
    with pytest.raises(ValueError, match="ETHUSDT"):
        engine.step(other, FOREVER, gateway)
    result = engine.step(batches[0], 0, gateway)
    assert result.paused
    with pytest.raises(RuntimeError, match="paused"):
        engine.step(batches[1], FOREVER, gateway)
    with pytest.raises(ValueError, match="timeframes"):
        SymbolEngine(SYMBOL, CONFIG.model_copy(update={"timeframes": ("5m",)}))


def test_finish_while_paused_completes_with_the_batch() -> None:
    batches = ema_batches(rows=240)
    run = Run()
    run.step(batches[0])
    result = run.step(batches[1], horizon=0)
    assert result.paused
    finished = run.engine.finish(run.gateway)
    assert finished.paused and not finished.updates
    resumed = run.step(None)
    assert not resumed.paused
    assert resumed.updates[-1].ts_event == int(batches[1].trades.ts_event[-1])


def test_required_indicators() -> None:
    specs = SymbolEngine.required_indicators(RunConfig(strategy=MomentumBreakoutConfig()))
    assert IndicatorSpec("ema", "4h", 50) in specs
    assert SymbolEngine.required_indicators(CONFIG) == [
        IndicatorSpec("ema", "1m", 10),
        IndicatorSpec("ema", "1m", 20),
    ]


# ---------------------------------------------------------------- guarded user code


class Scripted(Strategy):
    """Calls `script(index, bars, position)` at each 1m bar close."""

    name = "scripted"

    def __init__(
        self, script: Callable[[int, BarView, PositionView], Sequence[StrategyAction]]
    ) -> None:
        self.script = script
        self.calls = 0

    def timeframes(self) -> tuple[str, ...]:
        return ("1m",)

    def required_indicators(self) -> list[IndicatorSpec]:
        return []

    def on_bar(
        self, timeframe: str, bars: BarView, position: PositionView
    ) -> Sequence[StrategyAction]:
        index = self.calls
        self.calls += 1
        return self.script(index, bars, position)


def scripted_run(
    script: Callable[[int, BarView, PositionView], Sequence[StrategyAction]], bars: int = 10
) -> Run:
    engine = SymbolEngine(SYMBOL, CONFIG)
    engine.strategy = GuardedStrategy(Scripted(script))
    run = Run(engine)
    minute = NS_PER_MINUTE
    start = 28_000_000 * minute
    closes = 100.0 + np.arange(bars, dtype=float)
    columns = {
        "ts_open": start + np.arange(bars) * minute,
        "ts_close": start + np.arange(1, bars + 1) * minute,
        "open": closes,
        "high": closes,
        "low": closes,
        "close": closes,
        "volume": np.full(bars, 10.0),
    }
    ts = np.concatenate([columns["ts_close"] - NS_PER_SECOND, columns["ts_close"] + NS_PER_SECOND])
    order = np.argsort(ts)
    prices = np.concatenate([closes, closes])[order]
    batch = FeatureBatch(
        SYMBOL,
        0,
        int(ts.max()) + 1,
        make_trades(ts[order], prices, 1.0),
        {"1m": make_bars("1m", columns)},
    )
    run.step(batch)
    run.finish()
    return run


def _raise(index: int, bars: BarView, position: PositionView) -> Sequence[StrategyAction]:
    raise ZeroDivisionError("boom")


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (_raise, "exception"),
        (lambda i, bars, p: [Signal(1, "x", quantity=math.nan)], "invalid_output"),
        (lambda i, bars, p: [Signal(1, "x", quantity=-1.0)], "invalid_output"),
        (lambda i, bars, p: [Signal(2, "x", quantity=1.0)], "invalid_output"),
        (lambda i, bars, p: ["buy"], "invalid_output"),
        (lambda i, bars, p: [Signal(1, "x", bar_ts=bars.now + 1)], "look_ahead"),
        (lambda i, bars, p: [Signal(1, "x")] if bars.value("close", -1) else [], "look_ahead"),
    ],
)
def test_strategy_failures_become_dead_letters_without_orders(
    script: Callable[[int, BarView, PositionView], Sequence[StrategyAction]], reason: str
) -> None:
    run = scripted_run(script, bars=5)
    letters = run.journal["dead_letters"]
    assert len(letters) == 5
    assert {(row["stage"], row["reason"], row["symbol"]) for row in letters} == {
        ("strategy", reason, SYMBOL)
    }
    assert all(row["source"] == "scripted.on_bar(1m)" for row in letters)
    assert run.gateway.decisions == [] and run.journal["orders"] == []
    assert run.journal["signals"] == []


def test_one_failing_call_does_not_stop_later_ones() -> None:
    def script(index: int, bars: BarView, position: PositionView) -> Sequence[StrategyAction]:
        if index == 0:
            raise RuntimeError("first bar")
        if index == 1:
            return [Signal(1, "go", quantity=0.5)]
        if index == 4:
            return [ClosePosition("enough")]
        return []

    run = scripted_run(script)
    assert len(run.journal["dead_letters"]) == 1
    [trade] = run.journal["trades"]
    assert (trade["exit_reason"], trade["quantity"], trade["side"]) == ("enough", 0.5, 1)
    kinds = [intent.intent_kind for intent, _ in run.gateway.decisions]
    assert kinds == ["entry", "exit"]


def test_a_round_trip_records_its_initial_risk_and_r_multiple() -> None:
    def script(index: int, bars: BarView, position: PositionView) -> Sequence[StrategyAction]:
        if index == 1:
            return [Signal(1, "go", quantity=0.5, exits=ExitPlan(stop_distance=2.0))]
        if index == 5:
            return [ClosePosition("enough")]
        return []

    [trade] = scripted_run(script).journal["trades"]
    assert trade["initial_risk"] == pytest.approx(0.5 * 2.0)  # quantity x stop distance
    assert trade["r_multiple"] == pytest.approx(trade["pnl"] / 1.0)
    [stopless] = scripted_run(lambda i, bars, p: (
        [Signal(1, "go", quantity=0.5)] if i == 1 else
        [ClosePosition("enough")] if i == 5 else [])).journal["trades"]
    assert math.isnan(stopless["initial_risk"]) and math.isnan(stopless["r_multiple"])


def test_signal_when_already_positioned_is_not_acted() -> None:
    def script(index: int, bars: BarView, position: PositionView) -> Sequence[StrategyAction]:
        if index in (1, 3):
            return [Signal(1, "go", quantity=0.5)]
        if index == 5:
            return [Signal(-1, "flip", quantity=0.5)]  # no reverse flag: position open
        return []

    run = scripted_run(script)
    acted = [(row["reason"], row["acted"]) for row in run.journal["signals"]]
    assert acted == [("go", True), ("go", False), ("flip", False)]
    notes = [row["details"] for row in run.journal["signals"]]
    assert notes[1] == '{"outcome":"already_positioned"}'
    assert notes[2] == '{"outcome":"position_open"}'


def test_bars_out_of_order_or_after_the_watermark_are_dead_letters() -> None:
    engine = SymbolEngine(SYMBOL, CONFIG)
    gateway = RecordingGateway()
    minute = NS_PER_MINUTE
    ts_close = np.array([3, 2, 4, 9]) * minute
    columns = {
        "ts_open": ts_close - minute,
        "ts_close": ts_close,
        "close": np.ones(4),
        "ema_10": np.ones(4),
        "ema_20": np.ones(4),
    }
    batch = FeatureBatch(
        SYMBOL, 0, 5 * minute, make_trades([minute], [1.0]), {"1m": make_bars("1m", columns)}
    )
    result = engine.step(batch, FOREVER, gateway)
    reasons = [row["reason"] for row in result.journal["dead_letters"]]
    assert reasons == ["out_of_order_bar", "bar_after_watermark"]
    assert result.counters["strategy_bars"] == 2


def test_bar_history_reaches_across_batches() -> None:
    seen: list[tuple[float, float]] = []

    def script(index: int, bars: BarView, position: PositionView) -> Sequence[StrategyAction]:
        seen.append((bars.value("close"), bars.value("close", 1)))
        return []

    engine = SymbolEngine(SYMBOL, CONFIG)
    engine.strategy = GuardedStrategy(Scripted(script))
    gateway = RecordingGateway()
    klines = load_klines()
    bars = {name: column[:30] for name, column in klines.items()}
    for batch in kline_batches(SYMBOL, bars, bars_per_batch=1):
        engine.step(batch, FOREVER, gateway)
    closes = bars["close"]
    assert seen[0][0] == closes[0] and math.isnan(seen[0][1])
    assert seen[1:] == list(zip(closes[1:].tolist(), closes[:-1].tolist(), strict=True))


def _one_bar_batch(quotes: QuoteColumns | None, trade_after_close: bool) -> FeatureBatch:
    minute = NS_PER_MINUTE
    close_ts = 28_000_000 * minute
    columns = {
        "ts_open": np.array([close_ts - minute]),
        "ts_close": np.array([close_ts]),
        "close": np.array([100.0]),
    }
    ts = [close_ts - NS_PER_SECOND] + ([close_ts + NS_PER_SECOND] if trade_after_close else [])
    return FeatureBatch(
        SYMBOL,
        0,
        close_ts + 2 * NS_PER_SECOND,
        make_trades(ts, [100.0] * len(ts), 5.0),
        {"1m": make_bars("1m", columns)},
        quotes=quotes,
    )


def _buy_once(index: int, bars: BarView, position: PositionView) -> Sequence[StrategyAction]:
    return [Signal(1, "go", quantity=1.0)]


def test_quotes_in_the_batch_price_the_fill() -> None:
    close_ts = 28_000_000 * NS_PER_MINUTE
    ts = np.array([close_ts - NS_PER_SECOND], np.int64)
    quotes = QuoteColumns(
        ts, ts, np.zeros(1, np.int64), np.array([99.9]), np.ones(1), np.array([100.1]), np.ones(1)
    )
    engine = SymbolEngine(SYMBOL, CONFIG)
    engine.strategy = GuardedStrategy(Scripted(_buy_once))
    gateway = RecordingGateway()
    result = engine.step(_one_bar_batch(quotes, trade_after_close=True), FOREVER, gateway)
    [fill] = result.journal["fills"]
    assert fill["reference_price"] == pytest.approx(100.0)
    assert fill["price"] == pytest.approx(100.1 * (1 + 10.0 * 1.0 / 5.0 / 1e4))
    assert result.journal["orders"][-1]["reason"] == "quote"
    [signal] = result.journal["signals"]
    assert signal["acted"] and signal["execution_latency_ms"] == 1000.0
    assert signal["estimated_slippage_bps"] == pytest.approx(
        (100.1 * (1 + 2.0 / 1e4) - 100.0) / 100.0 * 1e4
    )


def test_unfilled_signal_is_journaled_at_the_end_of_the_stream() -> None:
    engine = SymbolEngine(SYMBOL, CONFIG)
    engine.strategy = GuardedStrategy(Scripted(_buy_once))
    gateway = RecordingGateway()
    result = engine.step(_one_bar_batch(None, trade_after_close=False), FOREVER, gateway)
    assert result.journal["signals"] == [] and len(result.journal["orders"]) == 1
    final = engine.finish(gateway)
    [signal] = final.journal["signals"]
    assert signal["acted"] and signal["execution_latency_ms"] is None
    assert engine.finish(gateway).updates == []  # finishing twice adds nothing


def test_bar_schedule_orders_closes_longer_timeframe_first() -> None:
    minute = NS_PER_MINUTE
    one = {"ts_close": np.array([5, 10, 15]) * minute, "close": np.array([1.0, 2.0, 3.0])}
    five = {"ts_close": np.array([10]) * minute, "close": np.array([9.0])}
    batch = FeatureBatch(
        SYMBOL,
        0,
        15 * minute,
        make_trades([], []),
        {"1m": make_bars("1m", one), "5m": make_bars("5m", five)},
    )
    schedule = BarSchedule(("1m", "5m"), keep=2)
    events, dropped = schedule.begin(batch)
    assert dropped == []
    assert events.timeframe == ["1m", "5m", "1m", "1m"]
    assert events.ts_close.tolist() == [5 * minute, 10 * minute, 10 * minute, 15 * minute]
    assert events.end.tolist() == [1, 1, 2, 3]
    schedule.trim()
    later = FeatureBatch(
        SYMBOL,
        1,
        16 * minute,
        make_trades([], []),
        {"1m": make_bars("1m", {"ts_close": np.array([16 * minute]), "close": np.array([4.0])})},
    )
    events, _ = schedule.begin(later)
    assert events.end.tolist() == [3]  # two kept bars, then the new one
    assert events.history["1m"]["close"].tolist() == [2.0, 3.0, 4.0]


def test_entries_inside_a_stale_stretch_carry_the_flag() -> None:
    """The feed's stale/fresh events mark entry intents decided in between as stale."""
    from engine.batches import FeedEvent
    from engine.config import SimulationConfig
    from engine.order_flow import OrderFlow

    flow = OrderFlow("BTCUSDT", "test", SimulationConfig())
    flow.feed_health.observe([FeedEvent("BTCUSDT", 1_000, 990, "stale", "silent"),
                              FeedEvent("BTCUSDT", 2_000, 1_990, "fresh", "back")])
    entry_before = flow._intent(999, 1, "entry", None, 100.0)
    entry_inside = flow._intent(1_500, 1, "entry", None, 100.0)
    exit_inside = flow._intent(1_500, -1, "exit", 1.0, 100.0)
    entry_after = flow._intent(2_000, 1, "entry", None, 100.0)
    assert [entry_before.data_stale, entry_inside.data_stale, exit_inside.data_stale,
            entry_after.data_stale] == [False, True, False, False]


def test_an_operator_close_all_closes_the_position_at_the_next_check(tmp_path: Any) -> None:
    """Manual control's close-all becomes a flatten in risk; the engine's next position check
    picks it up and exits at market, with the rule in the trade's exit reason."""
    from engine.control.commands import parse_command
    from engine.control.controller import Controller

    config = CONFIG.model_copy(update={
        "risk": CONFIG.risk.model_copy(update={"position_checks": True})})
    run = Run(SymbolEngine(SYMBOL, config))
    controller = Controller(tmp_path / "control.json", run.gateway.risk)
    controller.start()
    batches = ema_batches()
    index = 0
    while run.engine.tracker.signed_quantity == 0:  # trade until a position is open
        run.step(batches[index])
        index += 1
    answer = controller.execute(parse_command(["close-all"]), "ops")
    assert answer["result"] == "applied", answer
    first_bar = int(batches[index].bars["1m"].columns["ts_close"][0])
    run.step(batches[index])
    closed = [trade for trade in run.journal["trades"]
              if trade["exit_reason"] == "risk:manual_control"]
    assert len(closed) == 1, run.journal["trades"]
    # decided at the batch's first 1-minute close, filled after the order latency
    assert first_bar <= closed[0]["exit_ts"] <= first_bar + NS_PER_SECOND
    assert run.results[-1].counters["risk_flattens"] == 1
