"""The intraday breakout plan's rules (engine/rules/intraday.py, intraday_sizing.py,
intraday_correlation.py), its bundled profile and its scenario: hand-computed sizes, caps and
threshold boundaries, state resets, manual reset and pickling mid-state."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import RiskConfig
from engine.risk import PortfolioRisk
from engine.rules.base import (
    ApiCallObserved,
    DayStarted,
    EquityObserved,
    FillObserved,
    MarkObserved,
    PortfolioSnapshot,
    PositionExposure,
    Proposal,
    RiskAction,
    RiskRule,
    TradeClosed,
)
from engine.rules.chain import effective_stop, evaluate
from engine.rules.core import DailyLossLimitConfig, FixedFractional, PortfolioHeatConfig
from engine.rules.intraday import (
    ApiErrorRate,
    DailyLossStreak,
    DailyLossStreakConfig,
    DrawdownShutdown,
    SlippageHalt,
    WeeklyLossHalt,
)
from engine.rules.intraday_correlation import (
    CorrelatedSignals,
    CorrelatedSignalsConfig,
    ReturnSampler,
    pearson,
)
from engine.rules.intraday_sizing import (
    AssetClassLeverage,
    AssetClassLeverageConfig,
    AtrVolatilityScale,
    LosingStreakHalfSize,
    MaxPositionsPerAssetClass,
    PositionHeatShare,
    PositionHeatShareConfig,
)
from engine.rules.profile import AssetInfo, RiskProfile, load_profile
from engine.rules.scenario import run_scenario
from engine.timeframes import NS_PER_DAY, NS_PER_HOUR, NS_PER_SECOND
from engine.types import Fill, Mark, OrderIntent

DAY = 19_786  # 2024-03-04, a Monday, in days since the epoch
T0 = DAY * NS_PER_DAY
EQUITY = 100_000.0
SECOND = NS_PER_SECOND


def intent(symbol: str = "BTCUSDT", price: float = 50_000.0, stop: float | None = 49_000.0,
           side: int = 1, quantity: float | None = None, ts: int = T0,
           features: dict[str, float] | None = None, score: float | None = None,
           sequence: int = 1) -> OrderIntent:
    return OrderIntent(
        intent_id=f"{symbol}:i{sequence}", symbol=symbol, ts_event=ts, sequence=sequence,
        side=side, intent_kind="entry", reduce_only=False, quantity=quantity,
        reference_price=price, stop_price=stop, score=score, reason="test",
        features=features or {})


def proposal(order: OrderIntent, quantity: float | None = None) -> Proposal:
    """A proposal as the size stage sees it: `quantity` set by a base sizer, if given."""
    sized = order.quantity is None
    return Proposal(order, order.quantity if quantity is None else quantity,
                    effective_stop(order, 0.02), sized=sized)


def snapshot(equity: float = EQUITY, ts: int = T0, peak: float | None = None,
             day_start: float = EQUITY, positions: tuple[PositionExposure, ...] = (),
             symbol_quantity: float = 0.0) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        ts_event=ts, equity=equity, peak_equity=max(equity, EQUITY) if peak is None else peak,
        day_start_equity=day_start, daily_pnl=equity - day_start, halted=False, halt_reason="",
        open_positions=len(positions), heat=sum(p.heat for p in positions),
        gross_notional=sum(p.notional for p in positions), symbol_quantity=symbol_quantity,
        positions=positions)


def exposure(symbol: str, notional: float = 10_000.0, heat: float = 100.0,
             price: float = 100.0) -> PositionExposure:
    return PositionExposure(symbol, notional / price, price, heat, notional)


def fill(slippage_bps: float, symbol: str = "BTCUSDT", ts: int = T0, sequence: int = 1) -> Fill:
    return Fill(fill_id=f"{symbol}:f{sequence}", order_id=f"{symbol}:o{sequence}",
                symbol=symbol, ts_event=ts, sequence=sequence, side=1, quantity=1.0,
                price=50_000.0, reference_price=50_000.0, fee=0.0, liquidity="taker",
                slippage_bps=slippage_bps, latency_ms=0.0)


def closed(pnl: float, ts: int = T0) -> TradeClosed:
    return TradeClosed("BTCUSDT", ts, pnl, 1_000.0, 10.0)


def day_started(day: int, start_equity: float) -> DayStarted:
    return DayStarted(day * NS_PER_DAY, day, start_equity, None, None)


RuleT = TypeVar("RuleT", bound=RiskRule)


def roundtrip(rule: RuleT) -> RuleT:
    """A pickled copy, equal field by field (the risk actor's checkpoint pickles rules)."""
    copy: RuleT = pickle.loads(pickle.dumps(rule))
    assert copy == rule and copy is not rule
    return copy


# ------------------------------------------------------------------ daily loss streak


def streak_hit(rule: DailyLossStreak, day: int, equity: float,
               start: float = EQUITY) -> list[RiskAction]:
    ts = day * NS_PER_DAY + 3 * NS_PER_HOUR
    return list(rule.observe(EquityObserved(ts), snapshot(equity, ts=ts, day_start=start)))


def test_daily_loss_streak_boundary_is_reached_not_exceeded() -> None:
    rule = DailyLossStreak(limit_pct=0.03, days=3)
    assert streak_hit(rule, DAY, 97_000.01) == []  # a cent short of 3%
    [alert] = streak_hit(rule, DAY, 97_000.0)  # exactly 3% counts
    assert alert.kind == "alert" and "day 1 of 3" in alert.reason
    assert streak_hit(rule, DAY, 90_000.0) == []  # one count per UTC day
    assert rule.streak == 1


def test_daily_loss_streak_suspends_on_third_day_until_manual_reset() -> None:
    rule = DailyLossStreak(limit_pct=0.03, days=3)
    streak_hit(rule, DAY, 96_000.0)
    [second] = streak_hit(rule, DAY + 1, 93_000.0, start=96_000.0)
    assert "day 2 of 3" in second.reason
    rule = roundtrip(rule)  # mid-streak
    assert rule.check(proposal(intent()), snapshot()).verdict == "approve"
    [halt] = streak_hit(rule, DAY + 2, 90_000.0, start=93_000.0)
    assert halt.kind == "halt" and halt.rule == "daily_loss_streak"
    outcome = rule.check(proposal(intent()), snapshot(ts=(DAY + 5) * NS_PER_DAY))
    assert outcome.verdict == "reject" and "manual reset" in outcome.reason
    rule = roundtrip(rule)  # suspended
    assert rule.check(proposal(intent()), snapshot()).verdict == "reject"
    rule.manual_reset()
    assert rule.check(proposal(intent()), snapshot()).verdict == "approve"
    assert rule.streak == 0
    [alert] = streak_hit(rule, DAY + 3, 87_000.0, start=90_000.0)
    assert "day 1 of 3" in alert.reason  # counting starts again


def test_daily_loss_streak_gap_day_breaks_the_streak_and_foreign_reset_keeps_it() -> None:
    rule = DailyLossStreak(limit_pct=0.03, days=3)
    streak_hit(rule, DAY, 96_000.0)
    streak_hit(rule, DAY + 1, 93_000.0, start=96_000.0)
    rule.manual_reset()  # the operator reset some other halt: the streak stands
    assert rule.streak == 2
    [alert] = streak_hit(rule, DAY + 3, 90_000.0, start=93_000.0)  # DAY + 2 had no hit
    assert alert.kind == "alert" and rule.streak == 1


def test_daily_loss_streak_takes_the_daily_limit_from_the_profile() -> None:
    profile = RiskProfile(name="p", rules=(DailyLossLimitConfig(limit_pct=0.025),
                                           DailyLossStreakConfig()))
    rules = profile.build()
    assert isinstance(rules[1], DailyLossStreak) and rules[1].limit_pct == 0.025
    alone = RiskProfile(name="p", rules=(DailyLossStreakConfig(),))
    with pytest.raises(ValueError, match=r"daily_loss_streak.*daily_loss_limit"):
        alone.build()
    own = RiskProfile(name="p", rules=(DailyLossStreakConfig(limit_pct=0.05, days=2),))
    built = own.build()[0]
    assert isinstance(built, DailyLossStreak) and built.limit_pct == 0.05 and built.days == 2


# ------------------------------------------------------------------ weekly loss


def test_weekly_loss_halt_blocks_seven_days_from_event_time() -> None:
    rule = WeeklyLossHalt(limit_pct=0.08, block_days=7)
    assert rule.observe(day_started(DAY, EQUITY), snapshot()) == ()
    ts = (DAY + 2) * NS_PER_DAY + 5 * NS_PER_HOUR
    rule.observe(day_started(DAY + 2, 95_000.0), snapshot(95_000.0, ts=(DAY + 2) * NS_PER_DAY))
    assert rule.observe(EquityObserved(ts), snapshot(92_000.01, ts=ts)) == ()
    [action] = rule.observe(EquityObserved(ts), snapshot(92_000.0, ts=ts))  # exactly 8%
    assert action.kind == "block_entries" and "2024-03-13 05:00:00" in action.reason
    rule = roundtrip(rule)
    rule.manual_reset()  # time-based: an operator reset does not lift it
    last_blocked = ts + 7 * NS_PER_DAY - 1
    outcome = rule.check(proposal(intent()), snapshot(ts=last_blocked))
    assert outcome.verdict == "reject" and "weekly loss" in outcome.reason
    assert rule.check(proposal(intent()), snapshot(ts=ts + 7 * NS_PER_DAY)).verdict == "approve"
    # the reference restarted at the equity of the trigger: 8% below 92,000 is 84,640
    later = ts + 7 * NS_PER_DAY
    assert rule.observe(EquityObserved(later), snapshot(84_640.01, ts=later)) == ()
    assert len(rule.observe(EquityObserved(later), snapshot(84_640.0, ts=later))) == 1


def test_weekly_loss_reference_rolls_with_the_last_seven_days() -> None:
    rule = WeeklyLossHalt(limit_pct=0.08)
    rule.observe(day_started(DAY, EQUITY), snapshot())
    for offset in range(1, 8):
        ts = (DAY + offset) * NS_PER_DAY
        rule.observe(day_started(DAY + offset, 99_000.0), snapshot(99_000.0, ts=ts))
    # DAY (100,000) left the window; DAY + 1 (99,000) is the reference now: 8% is 91,080
    assert rule.day_starts[0] == (DAY + 1, 99_000.0) and len(rule.day_starts) == 7
    ts = (DAY + 7) * NS_PER_DAY + NS_PER_HOUR
    assert rule.observe(EquityObserved(ts), snapshot(92_000.0, ts=ts)) == ()
    assert rule.observe(EquityObserved(ts), snapshot(91_080.01, ts=ts)) == ()
    assert len(rule.observe(EquityObserved(ts), snapshot(91_080.0, ts=ts))) == 1


# ------------------------------------------------------------------ API error rate


def api_calls(rule: ApiErrorRate, results: list[bool], start: int = T0,
              step_s: int = 10) -> list[RiskAction]:
    actions: list[RiskAction] = []
    for index, ok in enumerate(results):
        ts = start + index * step_s * SECOND
        actions += rule.observe(ApiCallObserved(ts, ok, "create_order"), snapshot(ts=ts))
    return actions


def test_api_error_rate_must_exceed_ten_percent_of_at_least_min_calls() -> None:
    rule = ApiErrorRate(max_error_rate=0.10, window_s=300, min_calls=10)
    assert api_calls(rule, [False] * 3) == []  # 3 of 3 failed, but only 3 calls: not judged
    after_three = T0 + 20 * SECOND
    outcome = rule.check(proposal(intent()), snapshot(ts=after_three))
    assert outcome.verdict == "approve" and "not judged" in outcome.reason

    rule = ApiErrorRate(max_error_rate=0.10, window_s=300, min_calls=10)
    assert api_calls(rule, [True] * 9 + [False]) == []  # 1 of 10: exactly 10%, not over
    now = T0 + 90 * SECOND
    assert rule.check(proposal(intent()), snapshot(ts=now)).verdict == "approve"
    [block] = api_calls(rule, [False], start=now + 10 * SECOND)  # 2 of 11
    assert block.kind == "block_entries" and "2 of 11" in block.reason
    rule = roundtrip(rule)
    outcome = rule.check(proposal(intent()), snapshot(ts=now + 20 * SECOND))
    assert outcome.verdict == "reject" and outcome.rule == "api_error_rate"


def test_api_error_rate_block_lifts_as_failures_leave_the_window() -> None:
    rule = ApiErrorRate(max_error_rate=0.10, window_s=300, min_calls=10)
    api_calls(rule, [False] * 10, step_s=1)  # T0 .. T0 + 9 s, all failed
    # the window is (now - 300 s, now]: at T0 + 300 s the call at T0 has left it (9 calls)
    assert rule.check(proposal(intent()), snapshot(ts=T0 + 299 * SECOND)).verdict == "reject"
    assert rule.check(proposal(intent()), snapshot(ts=T0 + 300 * SECOND)).verdict == "approve"
    ts = T0 + 300 * SECOND
    [alert] = rule.observe(EquityObserved(ts), snapshot(ts=ts))
    assert alert.kind == "alert" and "entries resume" in alert.reason
    assert len(rule.calls) == 9


# ------------------------------------------------------------------ slippage


def test_slippage_halt_over_five_times_expected_until_manual_reset() -> None:
    rule = SlippageHalt(multiple=5.0, expected_slippage_bps=2.0)
    assert rule.observe(FillObserved(fill(10.0)), snapshot()) == ()  # exactly 5x: not over
    assert rule.observe(FillObserved(fill(math.nan)), snapshot()) == ()
    [halt] = rule.observe(FillObserved(fill(10.01, sequence=2)), snapshot())
    assert halt.kind == "halt" and halt.symbol == "BTCUSDT" and "10.01 bps" in halt.reason
    assert rule.observe(FillObserved(fill(50.0, sequence=3)), snapshot()) == ()  # once
    rule = roundtrip(rule)
    outcome = rule.check(proposal(intent()), snapshot())
    assert outcome.verdict == "reject" and "manual reset" in outcome.reason
    rule.manual_reset()
    assert rule.check(proposal(intent()), snapshot()).verdict == "approve"


def test_slippage_expectation_can_follow_recent_fills_with_the_configured_floor() -> None:
    rule = SlippageHalt(multiple=5.0, expected_slippage_bps=2.0, rolling_fills=3)
    for sequence, value in enumerate((6.0, 6.0, -3.0)):  # negatives count as 0: mean 4
        assert rule.observe(FillObserved(fill(value, sequence=sequence)), snapshot()) == ()
    assert rule.expected() == pytest.approx(4.0)
    assert rule.observe(FillObserved(fill(20.0, sequence=5)), snapshot()) == ()  # 5 x 4
    # the window is now (6, -3, 20): mean 26/3 = 8.667, so 43.33 bps is exactly 5x
    assert rule.expected() == pytest.approx(26.0 / 3)
    assert len(rule.observe(FillObserved(fill(43.4, sequence=6)), snapshot())) == 1
    quiet = SlippageHalt(multiple=5.0, expected_slippage_bps=2.0, rolling_fills=3)
    for sequence in range(3):
        quiet.observe(FillObserved(fill(0.1, sequence=sequence)), snapshot())
    assert quiet.expected() == 2.0  # the configured value is a floor


# ------------------------------------------------------------------ drawdown


def drawdown_seen(rule: DrawdownShutdown, equity: float,
                  peak: float = EQUITY) -> list[RiskAction]:
    return list(rule.observe(EquityObserved(T0), snapshot(equity, peak=peak)))


def test_drawdown_shutdown_at_fifteen_percent_flattens_and_halts() -> None:
    rule = DrawdownShutdown(limit_pct=0.15)
    assert drawdown_seen(rule, 85_000.01) == []
    rule = roundtrip(rule)
    flatten, halt = drawdown_seen(rule, 85_000.0)
    assert (flatten.kind, halt.kind) == ("flatten_all", "halt")
    assert "15.00%" in halt.reason and "100000.00" in halt.reason
    assert drawdown_seen(rule, 80_000.0) == []  # once
    rule = roundtrip(rule)
    assert rule.check(proposal(intent()), snapshot(80_000.0)).verdict == "reject"
    rule.manual_reset()
    assert rule.check(proposal(intent()), snapshot(80_000.0)).verdict == "approve"
    # the peak restarts at the first equity after the reset: 80,000, shut down again at 68,000
    assert drawdown_seen(rule, 80_000.0) == []
    assert drawdown_seen(rule, 68_000.01) == []
    assert len(drawdown_seen(rule, 68_000.0)) == 2


def test_drawdown_peak_is_not_rebased_by_another_halts_reset() -> None:
    rule = DrawdownShutdown(limit_pct=0.15)
    drawdown_seen(rule, 90_000.0)  # peak 100,000 taken from the portfolio
    rule.manual_reset()  # e.g. the operator cleared a slippage halt
    assert rule.peak == EQUITY
    assert len(drawdown_seen(rule, 85_000.0)) == 2


# ------------------------------------------------------------------ ATR scaling


def test_atr_scale_is_baseline_over_atr_capped_at_one_and_a_half() -> None:
    rule = AtrVolatilityScale(max_scale=1.5)
    cases = {(400.0, 500.0): 12.5, (200.0, 500.0): 15.0, (1_000.0, 500.0): 5.0}
    for (atr, baseline), expected in cases.items():
        order = intent(features={"atr": atr, "atr_baseline": baseline})
        outcome = rule.check(proposal(order, quantity=10.0), snapshot())
        assert outcome.verdict == "cap" and outcome.quantity == pytest.approx(expected)
    flat = rule.check(proposal(intent(features={"atr": 5.0, "atr_baseline": 5.0}), 10.0),
                      snapshot())
    assert flat.verdict == "approve" and flat.quantity == 10.0
    fixed = rule.check(proposal(intent(quantity=3.0)), snapshot())
    assert fixed.verdict == "approve" and fixed.quantity == 3.0  # never resized


def test_atr_scale_fails_closed_on_missing_or_bad_features() -> None:
    rule = AtrVolatilityScale()
    for features, missing in (({"atr_baseline": 500.0}, "'atr'"),
                              ({"atr": 400.0}, "'atr_baseline'"),
                              ({"atr": 0.0, "atr_baseline": 500.0}, "'atr'"),
                              ({"atr": math.nan, "atr_baseline": 500.0}, "'atr'")):
        outcome = rule.check(proposal(intent(features=features), 10.0), snapshot())
        assert outcome.verdict == "reject" and missing in outcome.reason


def test_fixed_fractional_then_atr_scale_through_the_chain() -> None:
    # 1% of 100,000 over the 1,000 stop distance = 1.0 BTC, x 500/400 = 1.25 BTC
    order = intent(features={"atr": 400.0, "atr_baseline": 500.0})
    decision = evaluate([FixedFractional(risk_pct=0.01), AtrVolatilityScale()], order,
                        snapshot(), 0.02)
    assert decision.outcome.rule == "atr_volatility_scale"
    assert decision.outcome.quantity == pytest.approx(1.25)
    assert [note.split(":")[0] for note in decision.notes] == ["fixed_fractional",
                                                               "atr_volatility_scale"]


# ------------------------------------------------------------------ losing streak


def test_five_losses_halve_the_next_ten_trades() -> None:
    rule = LosingStreakHalfSize(losses_in_row=5, size_factor=0.5, reduced_trades=10)
    for _ in range(4):
        assert rule.observe(closed(-100.0), snapshot()) == ()
    assert rule.check(proposal(intent(), 2.0), snapshot()).verdict == "approve"
    [alert] = rule.observe(closed(0.0), snapshot())  # a zero P&L is not a win
    assert alert.kind == "alert" and "next 10 trades" in alert.reason
    rule = roundtrip(rule)
    halved = rule.check(proposal(intent(), 2.0), snapshot())
    assert halved.verdict == "cap" and halved.quantity == pytest.approx(1.0)
    fixed = rule.check(proposal(intent(quantity=2.0)), snapshot())
    assert fixed.verdict == "approve" and fixed.quantity == 2.0
    rule.observe(closed(250.0), snapshot())  # a win does not end the phase
    for _ in range(8):
        rule.observe(closed(-10.0 if _ % 2 else 10.0), snapshot())
    assert rule.reduced_left == 1
    assert rule.check(proposal(intent(), 2.0), snapshot()).quantity == pytest.approx(1.0)
    rule.manual_reset()  # not a suspension: unchanged
    assert rule.reduced_left == 1
    rule.observe(closed(10.0), snapshot())  # the tenth
    full = rule.check(proposal(intent(), 2.0), snapshot())
    assert full.verdict == "approve" and full.quantity == 2.0


def test_a_new_streak_inside_the_reduced_phase_restarts_the_count() -> None:
    rule = LosingStreakHalfSize(losses_in_row=5, reduced_trades=10)
    for _ in range(5):
        rule.observe(closed(-1.0), snapshot())
    actions = [rule.observe(closed(-1.0), snapshot()) for _ in range(5)]
    assert [len(action) for action in actions] == [0, 0, 0, 0, 1]
    assert rule.reduced_left == 10


# ------------------------------------------------------------------ asset classes


CLASSES = {"BTCUSDT": "crypto", "ETHUSDT": "crypto", "SOLUSDT": "crypto", "EURUSD": "forex",
           "SPY": "equity"}


def test_max_two_positions_per_asset_class() -> None:
    rule = MaxPositionsPerAssetClass(limit=2, classes=CLASSES, default_class="crypto")
    one = snapshot(positions=(exposure("BTCUSDT"), exposure("EURUSD")))
    assert rule.check(proposal(intent("SOLUSDT")), one).verdict == "approve"
    two = snapshot(positions=(exposure("BTCUSDT"), exposure("ETHUSDT"), exposure("EURUSD")))
    outcome = rule.check(proposal(intent("SOLUSDT")), two)
    assert outcome.verdict == "reject" and "2 crypto positions open (BTCUSDT, ETHUSDT)" in \
        outcome.reason
    assert rule.check(proposal(intent("DOGEUSDT")), two).verdict == "reject"  # default class
    assert rule.check(proposal(intent("SPY")), two).verdict == "approve"
    adding = replace(two, symbol_quantity=0.5)
    assert rule.check(proposal(intent("BTCUSDT")), adding).verdict == "approve"


def test_asset_class_leverage_caps_the_entry_class_notional() -> None:
    rule = AssetClassLeverage(limits={"crypto": 3.0, "forex": 10.0, "equity": 1.0},
                              classes=CLASSES)
    # crypto holds 250,000 of its 300,000: room 50,000 = 1.0 BTC at 50,000
    held = snapshot(positions=(exposure("ETHUSDT", notional=250_000.0),
                               exposure("EURUSD", notional=900_000.0)))
    capped = rule.check(proposal(intent(), 2.0), held)
    assert capped.verdict == "cap" and capped.quantity == pytest.approx(1.0)
    assert rule.check(proposal(intent(), 1.0), held).verdict == "approve"  # exactly at the cap
    too_big = rule.check(proposal(intent(quantity=1.01)), held)
    assert too_big.verdict == "reject" and "crypto leverage limit 3x" in too_big.reason
    # forex: 900,000 of 1,000,000 held, room 100,000 = 92,165.9 EUR at 1.085
    euro = intent("EURUSD", price=1.085, stop=1.08)
    assert rule.check(proposal(euro, 100_000.0), held).quantity == pytest.approx(
        100_000.0 / 1.085)
    # equity: 1x, nothing held: 100,000 / 500 = 200 SPY
    spy = intent("SPY", price=500.0, stop=490.0)
    assert rule.check(proposal(spy, 250.0), held).quantity == pytest.approx(200.0)
    unknown = AssetClassLeverage(limits={"crypto": 3.0}, classes={"GOLD": "commodity"})
    outcome = unknown.check(proposal(intent("GOLD"), 1.0), snapshot())
    assert outcome.verdict == "reject" and "'commodity'" in outcome.reason


def test_asset_class_leverage_config_rejects_bad_caps() -> None:
    with pytest.raises(ValueError, match="limits"):
        AssetClassLeverageConfig(limits={"crypto": 0.0})
    with pytest.raises(ValueError, match="limits"):
        AssetClassLeverageConfig(limits={})


def test_position_heat_share_is_thirty_percent_of_the_heat_limit() -> None:
    rule = PositionHeatShare(share=0.30, heat_limit_pct=0.05)
    # cap 0.3 x 5% x 100,000 = 1,500; BTC holds 1,000 of heat; stop distance 100: 5 BTC fit
    held = snapshot(positions=(exposure("BTCUSDT", heat=1_000.0),), symbol_quantity=1.0)
    order = intent(price=50_000.0, stop=49_900.0)
    capped = rule.check(proposal(order, 8.0), held)
    assert capped.verdict == "cap" and capped.quantity == pytest.approx(5.0)
    assert rule.check(proposal(intent(price=50_000.0, stop=49_900.0, quantity=5.0)),
                      held).verdict == "approve"
    assert rule.check(proposal(intent(price=50_000.0, stop=49_900.0, quantity=5.01)),
                      held).verdict == "reject"
    # a new symbol has the whole 1,500: 15 at a 100 stop distance
    assert rule.check(proposal(intent("ETHUSDT", 3_000.0, 2_900.0), 20.0),
                      held).quantity == pytest.approx(15.0)


def test_position_heat_share_takes_the_heat_limit_from_the_profile() -> None:
    profile = RiskProfile(name="p", rules=(PortfolioHeatConfig(limit_pct=0.04),
                                           PositionHeatShareConfig(share=0.25)))
    built = profile.build()[1]
    assert isinstance(built, PositionHeatShare) and built.heat_limit_pct == 0.04
    with pytest.raises(ValueError, match="portfolio_heat"):
        RiskProfile(name="p", rules=(PositionHeatShareConfig(),)).build()


# ------------------------------------------------------------------ correlation


def test_pearson_and_return_sampling() -> None:
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    sampler = ReturnSampler(NS_PER_HOUR, 24)
    hour = NS_PER_HOUR
    sampler.add("A", T0, 100.0)
    sampler.add("A", T0 + hour // 2, 110.0)  # the close of hour 0 is its last mark, 110
    sampler.add("A", T0 + hour, 121.0)
    assert "A" not in sampler.returns  # hour 1 is still open
    sampler.add("A", T0 + 3 * hour, 99.0)  # hour 2 had no marks: the return spans it
    [(bucket, value)] = sampler.returns["A"]
    assert bucket == T0 // hour + 1 and value == pytest.approx(math.log(121.0 / 110.0))


def warm_up(rule: CorrelatedSignals, hours: int, moves: dict[str, list[float]]) -> None:
    """Hourly marks: every symbol's price follows its own list of hourly factors."""
    prices = dict.fromkeys(moves, 100.0)
    for hour in range(hours + 1):
        ts = T0 + hour * NS_PER_HOUR
        for symbol, factors in moves.items():
            if hour:
                prices[symbol] *= factors[(hour - 1) % len(factors)]
            rule.observe(MarkObserved(symbol, ts, prices[symbol]), snapshot(ts=ts))


PATTERN = [1.01, 0.995, 1.004, 0.99, 1.007, 1.002, 0.997]
# a near copy of PATTERN (correlated ~0.99) and one that is not (x drifts its own way)
ALIKE = [1.011, 0.994, 1.005, 0.991, 1.006, 1.002, 0.996]
OTHER = [0.995, 1.01, 0.99, 1.0, 1.004, 0.99, 1.012, 0.998, 1.003]


def correlated_rule(hours: int = 26, max_correlation: float = 0.75) -> CorrelatedSignals:
    rule = CorrelatedSignalsConfig(max_correlation=max_correlation).build(
        RiskProfile(name="p", rules=(CorrelatedSignalsConfig(),)))
    assert isinstance(rule, CorrelatedSignals)
    warm_up(rule, hours, {"BTCUSDT": PATTERN, "ETHUSDT": ALIKE, "SOLUSDT": OTHER})
    return rule


def test_correlated_entry_needs_a_higher_score_than_the_held_one() -> None:
    rule = correlated_rule()
    now = T0 + 26 * NS_PER_HOUR + 60 * SECOND
    rho, pairs = rule.sampler.correlation("ETHUSDT", "BTCUSDT", now)
    assert pairs == 25 and rho > 0.95
    assert rule.sampler.correlation("SOLUSDT", "BTCUSDT", now)[0] < 0.75
    flat = snapshot(ts=now)
    assert rule.check(proposal(intent(score=4.0, ts=now)), flat).verdict == "approve"
    held = snapshot(ts=now, positions=(exposure("BTCUSDT"),))
    rule = roundtrip(rule)  # with its return history and the held score
    for score in (3.0, 4.0):  # lower, and a tie: the held one wins
        outcome = rule.check(proposal(intent("ETHUSDT", 3_500.0, 3_450.0, score=score,
                                             ts=now)), held)
        assert outcome.verdict == "reject" and "already held wins" in outcome.reason
    unscored = rule.check(proposal(intent("ETHUSDT", 3_500.0, 3_450.0, ts=now)), held)
    assert unscored.verdict == "reject" and "no score" in unscored.reason
    assert rule.check(proposal(intent("SOLUSDT", 130.0, 128.0, score=1.0, ts=now)),
                      held).verdict == "approve"
    better = rule.check(proposal(intent("ETHUSDT", 3_500.0, 3_450.0, score=4.5, ts=now)), held)
    assert better.verdict == "approve" and "to be flattened" in better.reason
    rule = roundtrip(rule)  # with the displacement pending
    both = snapshot(ts=now, positions=(exposure("BTCUSDT"), exposure("ETHUSDT")))
    [flatten] = rule.observe(EquityObserved(now), both)
    assert (flatten.kind, flatten.symbol) == ("flatten_symbol", "BTCUSDT")
    assert rule.observe(EquityObserved(now), both) == ()  # once


def test_a_displacing_entry_refused_later_in_the_chain_flattens_nothing() -> None:
    rule = correlated_rule()
    now = T0 + 26 * NS_PER_HOUR
    rule.check(proposal(intent(score=4.0, ts=now)), snapshot(ts=now))
    held = snapshot(ts=now, positions=(exposure("BTCUSDT"),))
    assert rule.check(proposal(intent("ETHUSDT", score=5.0, ts=now)), held).verdict == "approve"
    assert rule.observe(EquityObserved(now), held) == ()  # ETH was not approved after all
    assert rule.displacing == {}
    # a held symbol whose score the rule never saw cannot be outscored
    unknown = snapshot(ts=now, positions=(exposure("BTCUSDT"), exposure("SOLUSDT")))
    rule.scores.pop("BTCUSDT")
    outcome = rule.check(proposal(intent("ETHUSDT", score=99.0, ts=now)), unknown)
    assert outcome.verdict == "reject" and "score inf" in outcome.reason


def test_correlation_needs_min_samples_and_must_exceed_the_threshold() -> None:
    short = correlated_rule(hours=24)  # closes of hours 0..23 -> 23 returns
    now = T0 + 24 * NS_PER_HOUR
    assert short.sampler.correlation("ETHUSDT", "BTCUSDT", now)[1] == 23
    short.check(proposal(intent(score=4.0, ts=now)), snapshot(ts=now))
    held = snapshot(ts=now, positions=(exposure("BTCUSDT"),))
    outcome = short.check(proposal(intent("ETHUSDT", score=1.0, ts=now)), held)
    assert outcome.verdict == "approve" and "not judged: BTCUSDT (23 returns)" in outcome.reason
    enough = correlated_rule(hours=25)
    now = T0 + 25 * NS_PER_HOUR
    enough.check(proposal(intent(score=4.0, ts=now)), snapshot(ts=now))
    held = replace(held, ts_event=now)
    assert enough.check(proposal(intent("ETHUSDT", score=1.0, ts=now)),
                        held).verdict == "reject"
    rho, _ = enough.sampler.correlation("ETHUSDT", "BTCUSDT", now)
    enough.max_correlation = rho  # equal is not over
    assert enough.check(proposal(intent("ETHUSDT", score=1.0, ts=now)),
                        held).verdict == "approve"


def test_correlation_window_forgets_returns_older_than_the_lookback() -> None:
    rule = CorrelatedSignalsConfig(lookback_days=1, min_samples=3).build(
        RiskProfile(name="p", rules=(CorrelatedSignalsConfig(),)))
    assert isinstance(rule, CorrelatedSignals)
    warm_up(rule, 60, {"BTCUSDT": PATTERN})
    buckets = [bucket for bucket, _ in rule.sampler.returns["BTCUSDT"]]
    assert len(buckets) == 24 and buckets[-1] == T0 // NS_PER_HOUR + 59


# ------------------------------------------------------------------ profile and scenario


PLAN_RULES = (
    "drawdown_shutdown", "daily_loss_streak", "slippage_halt", "kill_switch", "stale_data",
    "spread_filter", "daily_loss_limit", "weekly_loss_halt", "api_error_rate", "net_flip",
    "max_open_positions", "max_positions_per_asset_class", "correlated_signals",
    "fixed_fractional", "atr_volatility_scale", "losing_streak_half_size", "portfolio_heat",
    "position_heat_share", "asset_class_leverage", "volume_cap",
)


def test_bundled_profile_has_the_plan_numbers() -> None:
    profile = load_profile("intraday_breakout")
    assert profile.rule_names == PLAN_RULES
    rules = {rule.name: rule for rule in profile.build()}
    assert rules["fixed_fractional"].risk_pct == 0.01  # type: ignore[attr-defined]
    assert rules["atr_volatility_scale"].max_scale == 1.5  # type: ignore[attr-defined]
    assert rules["asset_class_leverage"].limits == {  # type: ignore[attr-defined]
        "crypto": 3.0, "forex": 10.0, "equity": 1.0}
    assert rules["max_open_positions"].limit == 5  # type: ignore[attr-defined]
    assert rules["max_positions_per_asset_class"].limit == 2  # type: ignore[attr-defined]
    assert rules["portfolio_heat"].limit_pct == 0.05  # type: ignore[attr-defined]
    heat_share = rules["position_heat_share"]
    assert isinstance(heat_share, PositionHeatShare)
    assert (heat_share.share, heat_share.heat_limit_pct) == (0.30, 0.05)
    streak = rules["daily_loss_streak"]
    assert isinstance(streak, DailyLossStreak) and (streak.limit_pct, streak.days) == (0.03, 3)
    weekly = rules["weekly_loss_halt"]
    assert isinstance(weekly, WeeklyLossHalt) and (weekly.limit_pct, weekly.block_days) == (
        0.08, 7)
    api = rules["api_error_rate"]
    assert isinstance(api, ApiErrorRate) and (api.max_error_rate, api.window_s) == (0.10, 300)
    slippage = rules["slippage_halt"]
    assert isinstance(slippage, SlippageHalt) and slippage.multiple == 5.0
    assert rules["drawdown_shutdown"].limit_pct == 0.15  # type: ignore[attr-defined]
    correlated = rules["correlated_signals"]
    assert isinstance(correlated, CorrelatedSignals) and correlated.max_correlation == 0.75
    assert correlated.sampler.window == 30 * 24
    losing = rules["losing_streak_half_size"]
    assert isinstance(losing, LosingStreakHalfSize)
    assert (losing.losses_in_row, losing.size_factor, losing.reduced_trades) == (5, 0.5, 10)
    assert profile.asset("EURUSD") == AssetInfo(asset_class="forex", sector="major")


def test_profile_errors_name_the_rule_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nrules:\n  - rule: correlated_signals\n    max_correlation: 1.5\n")
    with pytest.raises(ValueError, match=r"correlated_signals.*max_correlation"):
        load_profile(str(bad))


def test_every_rule_pickles_mid_state_inside_a_portfolio() -> None:
    risk = PortfolioRisk(RiskConfig(profile=load_profile("intraday_breakout")), EQUITY)
    for hour in range(3):
        ts = T0 + hour * NS_PER_HOUR
        risk.submit([Mark("BTCUSDT", ts, hour, 60_000.0 + 100 * hour),
                     Mark("ETHUSDT", ts, hour, 3_000.0 + 5 * hour)])
    risk.apply_all()
    risk.observe_api_call(T0 + 3 * NS_PER_HOUR, False, "create_order")
    copy = pickle.loads(pickle.dumps(risk))
    assert [type(rule).__name__ for rule in copy.rules] == [
        type(rule).__name__ for rule in risk.rules]
    for original, restored in zip(risk.rules, copy.rules, strict=True):
        assert restored == original
    order = intent(ts=T0 + 4 * NS_PER_HOUR, price=60_200.0, stop=59_300.0, score=3.0,
                   features={"atr": 450.0, "atr_baseline": 600.0}, sequence=50)
    assert copy.decide(order) == risk.decide(order)


def test_scenario_triggers_every_rule_and_journals_reasons() -> None:
    result = run_scenario("intraday_breakout")
    assert result.ok, (result.mismatches, result.missing_rules)
    assert set(PLAN_RULES) <= set(result.triggered)
    decisions = result.journal["risk_decisions"]
    events = result.journal["risk_events"]
    for rule in PLAN_RULES:
        reasons = [row["reason"] for row in decisions if row["rule"] == rule]
        reasons += [note.split(": ", 1)[1] for row in decisions
                    for note in str(row["rules_applied"] or "").split(" | ")
                    if note.startswith(f"{rule}: ")]
        reasons += [row["reason"] for row in events if row["rule"] == rule]
        assert reasons and all(reason.strip() for reason in reasons), rule
    kinds = {(row["rule"], row["kind"]) for row in events}
    assert {("drawdown_shutdown", "flatten_all"), ("drawdown_shutdown", "halt"),
            ("daily_loss_streak", "halt"), ("slippage_halt", "halt"),
            ("weekly_loss_halt", "block_entries"), ("api_error_rate", "block_entries"),
            ("correlated_signals", "flatten_symbol")} <= kinds
    # the execution filters refuse the first two; then the first BTC entry: 1% of 100,000
    # over 970, x 600/450
    assert [(row["approved"], row["rule"]) for row in decisions[:2]] == [
        (False, "spread_filter"), (False, "volume_cap")]
    assert "3.10 bps > 2x its average 1.00 bps" in decisions[0]["reason"]
    first = decisions[2]
    assert first["approved"] and first["approved_qty"] == pytest.approx(1_000 / 970 * 4 / 3)
    assert not result.summary["halted"]


def test_scenario_replays_identically() -> None:
    first, second = run_scenario("intraday_breakout"), run_scenario("intraday_breakout")
    assert repr(first.journal) == repr(second.journal)
    assert first.triggered == second.triggered and first.summary == second.summary


# ------------------------------------------------------------------ limits under random entries


# symbol -> (price, stop): one stop per symbol, so adding to a position keeps its stop distance
MARKET = {"BTCUSDT": (64_000.0, 63_000.0), "ETHUSDT": (3_500.0, 3_430.0),
          "SOLUSDT": (130.0, 128.7), "BNBUSDT": (415.0, 409.0), "EURUSD": (1.085, 1.08),
          "GBPUSD": (1.27, 1.262), "SPY": (512.0, 505.0), "QQQ": (445.0, 441.0)}
CAPS = {"crypto": 3.0, "forex": 10.0, "equity": 1.0}

entry_strategy = st.tuples(
    st.sampled_from(sorted(MARKET)),
    st.floats(0.25, 4.0),  # ATR baseline / ATR
    st.one_of(st.none(), st.floats(0.0001, 5.0)),  # a fixed quantity, in units of 1% risk
    st.booleans(),  # filled at once
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(entry_strategy, min_size=1, max_size=25))
def test_profile_limits_hold_for_any_sequence_of_entries(
    entries: list[tuple[str, float, float | None, bool]],
) -> None:
    """Approved entries never take the portfolio past 5 positions, 2 per asset class, 5% heat,
    30% of it per position, or a class past its leverage cap (projected: filled + pending)."""
    profile = load_profile("intraday_breakout")
    risk = PortfolioRisk(RiskConfig(profile=profile), EQUITY)
    for sequence, (symbol, volatility_ratio, fixed, filled) in enumerate(entries, start=1):
        price, stop = MARKET[symbol]
        quantity = None if fixed is None else fixed * 1_000.0 / (price - stop)
        order = intent(symbol, price, stop, quantity=quantity, ts=T0 + sequence * SECOND,
                       features={"atr": 100.0, "atr_baseline": 100.0 * volatility_ratio},
                       score=1.0, sequence=sequence)
        decision = risk.decide(order)
        if decision.approved and filled:
            risk.submit([Fill(f"f{sequence}", order.order_id, symbol, order.ts_event + 1,
                              sequence, 1, decision.quantity, price, price, 0.0, "taker", 0.0,
                              0.0, stop)])
            risk.apply_all()
        view = risk._snapshot(order.ts_event, None)
        assert view.open_positions <= 5
        assert view.heat <= 0.05 * EQUITY * (1 + 1e-9)
        by_class: dict[str, list[PositionExposure]] = {}
        for position in view.positions:
            assert position.heat <= 0.015 * EQUITY * (1 + 1e-9), position
            by_class.setdefault(profile.asset(position.symbol).asset_class, []).append(position)
        for asset_class, positions in by_class.items():
            assert len(positions) <= 2, asset_class
            notional = sum(position.notional for position in positions)
            assert notional <= CAPS[asset_class] * EQUITY * (1 + 1e-9), asset_class
        if decision.approved and quantity is not None:
            assert decision.quantity == quantity  # a fixed quantity is never resized
