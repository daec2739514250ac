"""The order-flow scalper plan's rules (engine/rules/scalper.py, scalper_sizing.py), its bundled
profile and its scenario: hand-computed sizes, caps and boundaries, state resets, manual reset,
pickling mid-state, and a deterministic scenario journal."""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import RiskConfig
from engine.risk import PortfolioRisk
from engine.rules.base import (
    DayStarted,
    EquityObserved,
    FillObserved,
    MarkObserved,
    PortfolioSnapshot,
    PositionExposure,
    Proposal,
    RiskRule,
    TradeClosed,
)
from engine.rules.chain import effective_stop
from engine.rules.profile import RiskProfile, load_profile
from engine.rules.scalper import (
    DailyLossAmount,
    FlashCrashExit,
    MarginDeleverage,
    WeeklyLossAmount,
    iso_week,
)
from engine.rules.scalper_sizing import (
    ConfidenceLevel,
    DynamicLeverage,
    FundingBias,
    GrowthMilestones,
    Milestone,
)
from engine.rules.scenario import run_scenario
from engine.timeframes import NS_PER_DAY, NS_PER_MINUTE, NS_PER_SECOND
from engine.types import Fill, Mark, OrderIntent

RuleT = TypeVar("RuleT", bound=RiskRule)
MONDAY = 19_793 * NS_PER_DAY  # 2024-03-11 00:00 UTC, a Monday
EQUITY = 10_000.0
FEATURES = {"confidence": 0.7, "volatility": 0.001, "funding_rate": 0.0001}


def intent(symbol: str = "BTCUSDT", price: float = 100.0, stop: float | None = 99.0,
           side: int = 1, quantity: float | None = None, ts: int = MONDAY,
           features: Mapping[str, float] | None = None, sequence: int = 1) -> OrderIntent:
    return OrderIntent(
        intent_id=f"{symbol}:i{sequence}", symbol=symbol, ts_event=ts, sequence=sequence,
        side=side, intent_kind="entry", reduce_only=False, quantity=quantity,
        reference_price=price, stop_price=stop, reason="test",
        features=FEATURES if features is None else features)


def proposal(order: OrderIntent, quantity: float | None = None, sized: bool | None = None,
             ) -> Proposal:
    """The proposal a size or limit rule sees: `quantity` as settled by earlier rules."""
    settled = order.quantity if quantity is None else quantity
    return Proposal(order, settled, effective_stop(order, 0.003),
                    sized=order.quantity is None if sized is None else sized)


def snapshot(equity: float = EQUITY, ts: int = MONDAY, peak: float | None = None,
             day_start: float = EQUITY,
             positions: tuple[PositionExposure, ...] = ()) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        ts_event=ts, equity=equity, peak_equity=max(equity, peak or equity),
        day_start_equity=day_start, daily_pnl=equity - day_start, halted=False, halt_reason="",
        open_positions=len(positions), heat=0.0,
        gross_notional=sum(position.notional for position in positions), symbol_quantity=0.0,
        positions=positions)


def exposure(symbol: str, quantity: float, price: float) -> PositionExposure:
    return PositionExposure(symbol, quantity, price, 0.0, abs(quantity) * price)


def fill(symbol: str, ts: int, side: int, quantity: float, price: float,
         sequence: int = 1) -> Fill:
    return Fill(fill_id=f"{symbol}:f{sequence}", order_id=f"{symbol}:o{sequence}",
                symbol=symbol, ts_event=ts, sequence=sequence, side=side, quantity=quantity,
                price=price, reference_price=price, fee=0.0, liquidity="taker",
                slippage_bps=0.0, latency_ms=0.0)


def roundtrip(rule: RuleT) -> RuleT:
    restored = pickle.loads(pickle.dumps(rule))
    assert restored == rule
    return restored


# ---------------------------------------------------------------- loss limits in currency


def test_iso_week_starts_monday_utc() -> None:
    assert iso_week(MONDAY) == iso_week(MONDAY + 7 * NS_PER_DAY - 1)
    assert iso_week(MONDAY - 1) == iso_week(MONDAY) - 1
    assert iso_week(MONDAY + 7 * NS_PER_DAY) == iso_week(MONDAY) + 1


def test_daily_loss_amount_blocks_at_exactly_the_limit_until_the_next_day() -> None:
    rule = DailyLossAmount(limit=150.0)
    assert rule.observe(DayStarted(MONDAY, 0, EQUITY, None, None), snapshot()) == ()
    hour = MONDAY + 3_600 * NS_PER_SECOND
    assert rule.observe(EquityObserved(hour), snapshot(9_850.01, hour)) == ()
    assert rule.check(proposal(intent(ts=hour)), snapshot(9_850.01, hour)).verdict == "approve"
    (action,) = rule.observe(EquityObserved(hour + 1), snapshot(9_850.0, hour + 1))
    assert (action.kind, action.rule) == ("block_entries", "daily_loss_amount")
    assert "150.00" in action.reason and "00:00 UTC" in action.reason
    # once per day; a recovery does not lift the block, nor does a manual reset
    assert rule.observe(EquityObserved(hour + 2), snapshot(9_700.0, hour + 2)) == ()
    rule.manual_reset()
    restored = roundtrip(rule)
    later = hour + 3_600 * NS_PER_SECOND
    outcome = restored.check(proposal(intent(ts=later)), snapshot(9_990.0, later))
    assert (outcome.verdict, outcome.rule) == ("reject", "daily_loss_amount")
    tuesday = MONDAY + NS_PER_DAY
    restored.observe(DayStarted(tuesday, 1, 9_700.0, -300.0, EQUITY),
                     snapshot(9_700.0, tuesday, day_start=9_700.0))
    assert restored.check(proposal(intent(ts=tuesday)),
                          snapshot(9_700.0, tuesday, day_start=9_700.0)).verdict == "approve"


def test_weekly_loss_amount_holds_across_days_until_monday() -> None:
    rule = WeeklyLossAmount(limit=400.0)
    rule.observe(DayStarted(MONDAY, 0, EQUITY, None, None), snapshot())
    tuesday = MONDAY + NS_PER_DAY
    # Tuesday's day start does not restart the week
    assert rule.observe(DayStarted(tuesday, 1, 9_800.0, -200.0, EQUITY),
                        snapshot(9_800.0, tuesday, day_start=9_800.0)) == ()
    assert rule.observe(EquityObserved(tuesday + 1),
                        snapshot(9_600.01, tuesday + 1, day_start=9_800.0)) == ()
    (action,) = rule.observe(EquityObserved(tuesday + 2),
                             snapshot(9_600.0, tuesday + 2, day_start=9_800.0))
    assert action.kind == "block_entries" and "ISO week" in action.reason
    sunday_night = MONDAY + 7 * NS_PER_DAY - 1
    blocked = rule.check(proposal(intent(ts=sunday_night)),
                         snapshot(9_650.0, sunday_night, day_start=9_650.0))
    assert (blocked.verdict, blocked.rule) == ("reject", "weekly_loss_amount")
    next_monday = MONDAY + 7 * NS_PER_DAY
    rule.observe(DayStarted(next_monday, 7, 9_650.0, 0.0, 9_650.0),
                 snapshot(9_650.0, next_monday, day_start=9_650.0))
    assert rule.period_start_equity == 9_650.0
    assert rule.check(proposal(intent(ts=next_monday)),
                      snapshot(9_650.0, next_monday, day_start=9_650.0)).verdict == "approve"


# ---------------------------------------------------------------- flash crash


def crash_rule() -> FlashCrashExit:
    return FlashCrashExit(move_pct=0.05, window_ns=60 * NS_PER_SECOND,
                          cooldown_ns=15 * NS_PER_MINUTE)


def test_flash_crash_exactly_five_percent_does_not_trigger() -> None:
    rule = crash_rule()
    assert rule.observe(MarkObserved("BTCUSDT", MONDAY, 100.0), snapshot()) == ()
    assert rule.observe(MarkObserved("BTCUSDT", MONDAY + 30 * NS_PER_SECOND, 95.0),
                        snapshot()) == ()
    assert rule.check(proposal(intent(ts=MONDAY + 31 * NS_PER_SECOND)),
                      snapshot()).verdict == "approve"


def test_flash_crash_flattens_a_held_symbol_and_cools_down() -> None:
    rule = crash_rule()
    held = snapshot(positions=(exposure("BTCUSDT", 0.2, 68_000.0),))
    rule.observe(MarkObserved("BTCUSDT", MONDAY, 68_310.0), held)
    rule.observe(MarkObserved("ETHUSDT", MONDAY, 3_500.0), held)  # other symbols do not mix
    crash = MONDAY + 60 * NS_PER_SECOND  # exactly the window: the first mark still counts
    (action,) = rule.observe(MarkObserved("BTCUSDT", crash, 64_690.0), held)
    assert (action.kind, action.symbol) == ("flatten_symbol", "BTCUSDT")
    assert "5.30%" in action.reason
    restored = roundtrip(rule)
    last = crash + 15 * NS_PER_MINUTE - 1
    refused = restored.check(proposal(intent(ts=last)), snapshot(ts=last))
    assert (refused.verdict, refused.rule) == ("reject", "flash_crash_exit")
    assert restored.check(proposal(intent(symbol="ETHUSDT", ts=crash)),
                          snapshot(ts=crash)).verdict == "approve"
    assert restored.check(proposal(intent(ts=last + 1)), snapshot(ts=last + 1)).verdict == (
        "approve")
    # the window restarted at the crash mark: the same move does not trigger twice
    assert restored.observe(MarkObserved("BTCUSDT", crash + NS_PER_SECOND, 64_700.0),
                            held) == ()


def test_flash_crash_window_drops_older_marks_and_spikes_count() -> None:
    rule = crash_rule()
    rule.observe(MarkObserved("SOLUSDT", MONDAY, 141.2), snapshot())
    late = MONDAY + 60 * NS_PER_SECOND + 1  # the 141.2 mark is now outside the window
    assert rule.observe(MarkObserved("SOLUSDT", late, 149.0), snapshot()) == ()
    (spike,) = rule.observe(MarkObserved("SOLUSDT", late + NS_PER_SECOND, 157.0), snapshot())
    assert (spike.kind, spike.symbol) == ("block_entries", "SOLUSDT")  # nothing held


# ---------------------------------------------------------------- margin deleverage


def test_cross_margin_ratio_boundary_and_flatten_all() -> None:
    rule = MarginDeleverage(min_margin_ratio=0.2, venue_leverage=10.0)
    # equity 1,000 over 50,000 / 10 = 20% exactly: no action
    at_floor = snapshot(1_000.0, positions=(exposure("BTCUSDT", 1.0, 50_000.0),))
    assert rule.margin_ratio(1_000.0, 50_000.0) == pytest.approx(0.2)
    assert rule.observe(EquityObserved(MONDAY), at_floor) == ()
    under = snapshot(999.0, positions=(exposure("BTCUSDT", 1.0, 50_000.0),))
    (action,) = rule.observe(EquityObserved(MONDAY + 1), under)
    assert action.kind == "flatten_all" and "19.98%" in action.reason
    assert rule.observe(EquityObserved(MONDAY + 2), under) == ()  # once per episode
    refused = roundtrip(rule).check(proposal(intent(quantity=1.0)), snapshot())
    assert (refused.verdict, refused.rule) == ("reject", "margin_deleverage")
    rule.manual_reset()
    assert rule.check(proposal(intent(quantity=1.0)), snapshot()).verdict == "approve"


def test_cross_margin_flatten_largest() -> None:
    rule = MarginDeleverage(min_margin_ratio=0.2, venue_leverage=10.0, action="flatten_largest")
    positions = (exposure("BTCUSDT", 0.5, 60_000.0), exposure("ETHUSDT", 5.0, 3_500.0))
    # 900 / (47,500 / 10) = 18.9%
    (action,) = rule.observe(EquityObserved(MONDAY), snapshot(900.0, positions=positions))
    assert (action.kind, action.symbol) == ("flatten_symbol", "BTCUSDT")


def test_margin_floor_caps_sized_and_rejects_fixed_entries() -> None:
    rule = MarginDeleverage(min_margin_ratio=0.2, venue_leverage=10.0)
    # room = 10,000 x 10 / 0.2 - 490,000 = 10,000 of notional = 100 units at 100
    book = snapshot(positions=(exposure("ETHUSDT", 140.0, 3_500.0),))
    capped = rule.check(proposal(intent(), quantity=200.0, sized=True), book)
    assert capped.verdict == "cap" and capped.quantity == pytest.approx(100.0)
    fixed = rule.check(proposal(intent(quantity=200.0)), book)
    assert fixed.verdict == "reject"
    assert rule.check(proposal(intent(quantity=100.0)), book).verdict == "approve"


def test_isolated_margin_tracks_the_entry_and_flattens_once() -> None:
    rule = MarginDeleverage(min_margin_ratio=0.2, venue_leverage=10.0, mode="isolated")
    rule.observe(FillObserved(fill("SOLUSDT", MONDAY, 1, 10.0, 100.0, 1)), snapshot())
    rule.observe(FillObserved(fill("SOLUSDT", MONDAY + 1, 1, 10.0, 110.0, 2)), snapshot())
    rule.observe(FillObserved(fill("SOLUSDT", MONDAY + 2, -1, 5.0, 120.0, 3)), snapshot())
    assert rule.entries["SOLUSDT"] == (15.0, pytest.approx(105.0))  # a reduction keeps it
    # 105 x 0.92 = 96.6: an 8% adverse move leaves exactly 20%
    assert rule.position_margin_ratio("SOLUSDT", 96.6) == pytest.approx(0.2)
    at_floor = snapshot(positions=(exposure("SOLUSDT", 15.0, 96.6),))
    assert rule.observe(EquityObserved(MONDAY + 3), at_floor) == ()
    under = snapshot(positions=(exposure("SOLUSDT", 15.0, 96.5),))
    (action,) = rule.observe(EquityObserved(MONDAY + 4), under)
    assert (action.kind, action.symbol) == ("flatten_symbol", "SOLUSDT")
    assert rule.observe(EquityObserved(MONDAY + 5), under) == ()
    restored = roundtrip(rule)
    assert restored.check(proposal(intent(quantity=1.0)), snapshot()).verdict == "reject"
    # flat, reopened, under again: a new flatten (the entries block is still on)
    restored.observe(FillObserved(fill("SOLUSDT", MONDAY + 6, -1, 15.0, 96.5, 4)), snapshot())
    restored.observe(FillObserved(fill("SOLUSDT", MONDAY + 7, 1, 1.0, 100.0, 5)), snapshot())
    (again,) = restored.observe(EquityObserved(MONDAY + 8),
                                snapshot(positions=(exposure("SOLUSDT", 1.0, 90.0),)))
    assert again.symbol == "SOLUSDT"


def test_isolated_margin_short_and_auto_resume() -> None:
    rule = MarginDeleverage(min_margin_ratio=0.2, venue_leverage=10.0, mode="isolated",
                            until_manual_reset=False)
    rule.observe(FillObserved(fill("ETHUSDT", MONDAY, -1, 2.0, 4_000.0)), snapshot())
    assert rule.position_margin_ratio("ETHUSDT", 4_320.0) == pytest.approx(0.2)
    (action,) = rule.observe(EquityObserved(MONDAY + 1),
                             snapshot(positions=(exposure("ETHUSDT", -2.0, 4_330.0),)))
    assert "until the margin ratio recovers" in action.reason
    assert rule.check(proposal(intent(quantity=1.0)), snapshot()).verdict == "reject"
    rule.observe(FillObserved(fill("ETHUSDT", MONDAY + 2, 1, 2.0, 4_330.0, 2)), snapshot())
    assert rule.observe(EquityObserved(MONDAY + 3), snapshot()) == ()
    assert rule.check(proposal(intent(quantity=1.0)), snapshot()).verdict == "approve"


# ---------------------------------------------------------------- funding bias


@pytest.mark.parametrize(
    ("side", "rate", "verdict", "quantity"),
    [
        (1, 0.0003, "approve", 10.0),  # exactly the downsize threshold: not above
        (1, 0.00031, "cap", 5.0),
        (-1, -0.00031, "cap", 5.0),  # shorts pay a negative rate
        (-1, 0.002, "approve", 10.0),  # receiving funding never rejects nor upsizes
        (1, 0.001, "cap", 5.0),  # exactly the reject threshold: downsized
        (1, 0.0011, "reject", None),
    ],
)
def test_funding_bias_thresholds(side: int, rate: float, verdict: str,
                                 quantity: float | None) -> None:
    rule = FundingBias(downsize_above=0.0003, reject_above=0.001, downsize_factor=0.5)
    order = intent(side=side, stop=101.0 if side < 0 else 99.0,
                   features={"funding_rate": rate})
    outcome = rule.check(proposal(order, quantity=10.0, sized=True), snapshot())
    assert outcome.verdict == verdict
    if quantity is not None:
        assert outcome.quantity == pytest.approx(quantity)


def test_funding_bias_fails_closed_and_never_resizes_a_fixed_quantity() -> None:
    rule = FundingBias()
    missing = rule.check(proposal(intent(features={}), quantity=10.0, sized=True), snapshot())
    assert missing.verdict == "reject" and "funding_rate" in missing.reason
    neutral = FundingBias(require_funding_rate=False)
    assert neutral.check(proposal(intent(features={}), quantity=10.0, sized=True),
                         snapshot()).verdict == "approve"
    fixed = rule.check(proposal(intent(quantity=10.0, features={"funding_rate": 0.0005})),
                       snapshot())
    assert fixed.verdict == "reject" and "fixed quantity" in fixed.reason


# ---------------------------------------------------------------- growth milestones


PLAN_MILESTONES = (
    Milestone(gain_pct=0.0, size_factor=0.5, max_leverage=3.0),
    Milestone(gain_pct=0.25, size_factor=0.75, max_leverage=5.0),
    Milestone(gain_pct=0.5, size_factor=1.0, max_leverage=10.0),
)


def test_growth_milestones_scale_and_cap_from_the_first_equity() -> None:
    rule = GrowthMilestones(milestones=PLAN_MILESTONES)
    assert rule.observe(DayStarted(MONDAY, 0, EQUITY, None, None), snapshot()) == ()
    assert rule.start_equity == EQUITY
    scaled = rule.check(proposal(intent(), quantity=100.0, sized=True), snapshot())
    assert scaled.verdict == "cap" and scaled.quantity == pytest.approx(50.0)
    # 3x of 10,000 = 30,000; 29,800 used: room for 2 units at 100
    busy = snapshot(positions=(exposure("ETHUSDT", 10.0, 2_980.0),))
    capped = rule.check(proposal(intent(), quantity=100.0, sized=True), busy)
    assert capped.quantity == pytest.approx(2.0) and "leverage cap" in capped.reason
    # a fixed quantity keeps its size within the cap and is refused beyond it
    assert rule.check(proposal(intent(quantity=2.0)), busy).verdict == "approve"
    assert rule.check(proposal(intent(quantity=2.5)), busy).verdict == "reject"
    full = snapshot(positions=(exposure("ETHUSDT", 10.0, 3_000.0),))
    assert rule.check(proposal(intent(), quantity=100.0, sized=True), full).verdict == "reject"


def test_growth_milestones_unlock_at_the_exact_gain_and_stay_when_sticky() -> None:
    rule = GrowthMilestones(milestones=PLAN_MILESTONES, sticky=True, start_equity=EQUITY)
    assert rule.observe(EquityObserved(MONDAY), snapshot(12_499.99)) == ()
    (alert,) = rule.observe(EquityObserved(MONDAY + 1), snapshot(12_500.0))
    assert alert.kind == "alert" and "unlocked milestone +25%" in alert.reason
    assert rule.observe(EquityObserved(MONDAY + 2), snapshot(11_000.0)) == ()
    restored = roundtrip(rule)
    sized = restored.check(proposal(intent(), quantity=100.0, sized=True), snapshot(11_000.0))
    assert sized.quantity == pytest.approx(75.0)
    (top,) = restored.observe(EquityObserved(MONDAY + 3), snapshot(15_000.0))
    assert "+50%" in top.reason
    assert restored.check(proposal(intent(), quantity=100.0, sized=True),
                          snapshot(15_000.0)).verdict == "approve"


def test_growth_milestones_relock_when_not_sticky() -> None:
    rule = GrowthMilestones(milestones=PLAN_MILESTONES, sticky=False, start_equity=EQUITY)
    rule.observe(EquityObserved(MONDAY), snapshot(12_600.0))
    (relock,) = rule.observe(EquityObserved(MONDAY + 1), snapshot(12_400.0))
    assert "relocked to milestone +0%" in relock.reason
    sized = rule.check(proposal(intent(), quantity=100.0, sized=True), snapshot(12_400.0))
    assert sized.quantity == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("milestones", "message"),
    [
        ([{"gain_pct": 0.1, "size_factor": 0.5, "max_leverage": 3}], "gain_pct 0"),
        ([{"gain_pct": 0.0, "size_factor": 0.5, "max_leverage": 3},
          {"gain_pct": 0.0, "size_factor": 1.0, "max_leverage": 5}], "increase strictly"),
        ([{"gain_pct": 0.0, "size_factor": 1.5, "max_leverage": 3}], "size_factor"),
    ],
)
def test_growth_milestones_config_errors_name_the_key(
        milestones: list[dict[str, float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RiskProfile.model_validate(
            {"name": "x", "rules": [{"rule": "growth_milestones", "milestones": milestones}]})


def test_funding_bias_config_orders_its_thresholds() -> None:
    with pytest.raises(ValueError, match="downsize_above"):
        RiskProfile.model_validate({"name": "x", "rules": [
            {"rule": "funding_bias", "downsize_above": 0.001, "reject_above": 0.001}]})


# ---------------------------------------------------------------- dynamic leverage


PLAN_LEVELS = (ConfidenceLevel(min_confidence=0.5, leverage=2.0),
               ConfidenceLevel(min_confidence=0.65, leverage=5.0),
               ConfidenceLevel(min_confidence=0.8, leverage=10.0))


def leverage_rule() -> DynamicLeverage:
    return DynamicLeverage(confidence_levels=PLAN_LEVELS, volatility_threshold=0.0015,
                           high_volatility_factor=0.5, recent_loss_ns=15 * NS_PER_MINUTE,
                           recent_loss_factor=0.5, drawdown_pct=0.05, drawdown_leverage=2.0)


def allowed(rule: DynamicLeverage, confidence: float, volatility: float = 0.001,
            equity: float = EQUITY, peak: float = EQUITY, ts: int = MONDAY) -> float:
    order = intent(features={"confidence": confidence, "volatility": volatility})
    return rule.allowed(proposal(order, quantity=1.0), snapshot(equity, ts, peak=peak))[0]


def test_dynamic_leverage_base_by_confidence_levels() -> None:
    rule = leverage_rule()
    assert allowed(rule, 0.5) == 2.0
    assert allowed(rule, 0.6499) == 2.0
    assert allowed(rule, 0.65) == 5.0
    assert allowed(rule, 1.0) == 10.0
    low = rule.check(proposal(intent(features={"confidence": 0.49, "volatility": 0.001}),
                              quantity=1.0), snapshot())
    assert low.verdict == "reject" and "below the lowest level 0.5" in low.reason


@pytest.mark.parametrize(
    ("features", "named"),
    [({"volatility": 0.001}, "confidence"), ({"confidence": 1.2, "volatility": 0.001},
                                             "confidence"),
     ({"confidence": 0.7}, "volatility"), ({"confidence": 0.7, "volatility": -0.1},
                                           "volatility")],
)
def test_dynamic_leverage_fails_closed_on_missing_features(
        features: dict[str, float], named: str) -> None:
    outcome = leverage_rule().check(proposal(intent(features=features), quantity=1.0),
                                    snapshot())
    assert outcome.verdict == "reject" and f"feature {named}" in outcome.reason


def test_dynamic_leverage_reductions_take_the_minimum_not_the_product() -> None:
    rule = leverage_rule()
    assert allowed(rule, 0.7, volatility=0.0015) == 5.0  # exactly the threshold: not above
    assert allowed(rule, 0.7, volatility=0.0016) == 2.5
    loss_at = MONDAY
    rule.observe(TradeClosed("ETHUSDT", loss_at, pnl=-12.0, initial_risk=50.0, fees=3.0),
                 snapshot())
    rule.observe(TradeClosed("SOLUSDT", loss_at - NS_PER_MINUTE, pnl=30.0, initial_risk=50.0,
                             fees=3.0), snapshot())  # a win does not move the loss time
    just_before = loss_at + 15 * NS_PER_MINUTE - 1
    assert allowed(rule, 0.7, ts=just_before) == 2.5
    assert allowed(rule, 0.7, volatility=0.0016, ts=just_before) == 2.5  # min, not 1.25
    assert allowed(rule, 0.7, ts=loss_at + 15 * NS_PER_MINUTE) == 5.0
    restored = roundtrip(rule)
    assert restored.last_loss_ts == loss_at


def test_dynamic_leverage_drawdown_cap_boundary() -> None:
    rule = leverage_rule()
    assert allowed(rule, 0.9, equity=9_500.0, peak=EQUITY) == 10.0  # exactly 5%
    assert allowed(rule, 0.9, equity=9_499.0, peak=EQUITY) == 2.0
    assert allowed(rule, 0.55, equity=9_000.0, peak=EQUITY) == 2.0


def test_dynamic_leverage_caps_gross_notional() -> None:
    rule = leverage_rule()
    order = intent(features={"confidence": 0.55, "volatility": 0.001})
    book = snapshot(positions=(exposure("ETHUSDT", 2.5, 4_000.0),))  # 10,000 of 20,000
    capped = rule.check(proposal(order, quantity=150.0, sized=True), book)
    assert capped.verdict == "cap" and capped.quantity == pytest.approx(100.0)
    fixed = rule.check(proposal(intent(quantity=150.0, features=order.features)), book)
    assert fixed.verdict == "reject"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(confidence=st.floats(0.5, 1.0), volatility=st.floats(0.0, 0.01),
       drawdown=st.floats(0.0, 0.5), gross=st.floats(0.0, 150_000.0),
       wanted=st.floats(0.001, 5_000.0), loss_minutes_ago=st.floats(0.0, 60.0))
def test_dynamic_leverage_never_lets_gross_exceed_the_allowed_leverage(
        confidence: float, volatility: float, drawdown: float, gross: float, wanted: float,
        loss_minutes_ago: float) -> None:
    rule = leverage_rule()
    rule.last_loss_ts = MONDAY - round(loss_minutes_ago * NS_PER_MINUTE)
    equity = EQUITY * (1.0 - drawdown)
    book = snapshot(equity, peak=EQUITY, positions=(exposure("ETHUSDT", gross / 100.0, 100.0),))
    order = intent(features={"confidence": confidence, "volatility": volatility})
    limit, _ = rule.allowed(proposal(order, quantity=wanted), book)
    assert limit <= 10.0
    if drawdown > 0.05 + 1e-9:
        assert limit <= 2.0
    outcome = rule.check(proposal(order, quantity=wanted, sized=True), book)
    if outcome.verdict != "reject":
        quantity = wanted if outcome.quantity is None else outcome.quantity
        assert gross + quantity * 100.0 <= limit * equity * (1 + 1e-9)


# ---------------------------------------------------------------- the bundled profile


def scalper_risk() -> PortfolioRisk:
    return PortfolioRisk(RiskConfig(profile=load_profile("orderflow_scalper")), EQUITY)


def test_profile_loads_with_the_plan_numbers() -> None:
    profile = load_profile("orderflow_scalper")
    assert profile.rule_names == (
        "kill_switch", "stale_data", "net_flip", "daily_loss_amount", "weekly_loss_amount",
        "max_open_positions", "hold_time_exit", "flash_crash_exit", "fixed_fractional",
        "funding_bias", "growth_milestones", "dynamic_leverage", "margin_deleverage")
    configs = {config.rule: config.model_dump() for config in profile.rules}
    assert configs["fixed_fractional"]["risk_pct"] == 0.005
    assert (configs["daily_loss_amount"]["limit"], configs["weekly_loss_amount"]["limit"]) == (
        150.0, 400.0)
    assert configs["max_open_positions"]["limit"] == 2
    assert configs["hold_time_exit"]["max_hold_seconds"] == 1800
    assert configs["flash_crash_exit"]["move_pct"] == 0.05
    assert configs["margin_deleverage"]["min_margin_ratio"] == 0.2
    assert configs["dynamic_leverage"]["drawdown_leverage"] == 2.0


def test_profile_decision_by_hand() -> None:
    risk = scalper_risk()
    # 0.5% of 10,000 = 50 over a 120 stop = 0.416667 BTC; base milestone x0.5 = 0.208333
    # (12,500 of notional: within 3x, and within the 5x of confidence 0.7)
    decision = risk.decide(intent(price=60_000.0, stop=59_880.0, sequence=2))
    assert decision.approved and decision.rule == "growth_milestones"
    assert decision.quantity == pytest.approx(50.0 / 120.0 * 0.5)
    row = risk.drain_journal()["risk_decisions"][0]
    assert row["rules_applied"].startswith("fixed_fractional: 0.50% of equity 10000.00")
    assert "growth_milestones: milestone +0%: size x0.5" in row["rules_applied"]


def test_profile_times_out_a_position_at_thirty_minutes() -> None:
    risk = scalper_risk()
    risk.submit([fill("BTCUSDT", MONDAY, 1, 0.1, 60_000.0),
                 Mark("BTCUSDT", MONDAY + 1_799 * NS_PER_SECOND, 2, 60_010.0)])
    risk.apply_all()
    assert risk.drain_actions() == []
    risk.submit([Mark("BTCUSDT", MONDAY + 1_800 * NS_PER_SECOND, 3, 60_020.0)])
    risk.apply_all()
    (action,) = risk.drain_actions()
    assert (action.kind, action.rule, action.symbol) == ("flatten_symbol", "hold_time_exit",
                                                        "BTCUSDT")


def test_every_scalper_rule_pickles_mid_state() -> None:
    risk = scalper_risk()
    risk.submit([fill("SOLUSDT", MONDAY, 1, 10.0, 146.0),
                 Mark("SOLUSDT", MONDAY + 30 * NS_PER_SECOND, 2, 140.0)])
    risk.apply_all()
    restored = pickle.loads(pickle.dumps(risk))
    assert [rule.name for rule in restored.rules] == [rule.name for rule in risk.rules]
    for before, after in zip(risk.rules, restored.rules, strict=True):
        assert after == before


# ---------------------------------------------------------------- the scenario


def test_scenario_triggers_every_rule_with_a_reason() -> None:
    result = run_scenario("orderflow_scalper")
    assert result.ok, (result.mismatches, result.missing_rules)
    profile = load_profile("orderflow_scalper")
    reasons: dict[str, list[str]] = {}
    for row in result.journal["risk_decisions"]:
        if not row["approved"]:
            reasons.setdefault(row["rule"], []).append(row["reason"])
        for note in filter(None, row["rules_applied"].split(" | ")):
            rule, reason = note.split(": ", 1)
            reasons.setdefault(rule, []).append(reason)
    for row in result.journal["risk_events"]:
        reasons.setdefault(row["rule"], []).append(row["reason"])
    for rule in profile.rule_names:
        assert reasons.get(rule), f"{rule} never shows in the journal"
        assert all(reason.strip() for reason in reasons[rule])
    kinds = {(row["rule"], row["kind"]) for row in result.journal["risk_events"]}
    assert {("growth_milestones", "alert"), ("hold_time_exit", "flatten_symbol"),
            ("flash_crash_exit", "flatten_symbol"), ("flash_crash_exit", "block_entries"),
            ("margin_deleverage", "flatten_symbol"), ("daily_loss_amount", "block_entries"),
            ("weekly_loss_amount", "block_entries")} <= kinds


def test_scenario_is_deterministic() -> None:
    first, second = run_scenario("orderflow_scalper"), run_scenario("orderflow_scalper")
    assert repr(first.journal) == repr(second.journal)
    assert first.triggered == second.triggered and not math.isnan(first.summary["equity"])
