"""The perpetuals HFT plan's rules (engine/rules/perps.py, perps_sizing.py), its bundled profile
and its scenario: hand-computed sizes and boundaries, state resets, manual reset, pickling."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import numpy as np
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
)
from engine.rules.chain import effective_stop, evaluate
from engine.rules.core import DrawdownKillSwitch, DrawdownKillSwitchConfig, KillSwitchConfig
from engine.rules.perps import (
    HoldTimeExit,
    HoldTimeExitConfig,
    MaxStopDistance,
)
from engine.rules.perps_sizing import CvarSizing, CvarSizingConfig, ReturnWindow
from engine.rules.profile import RiskProfile, load_profile
from engine.rules.scenario import load_scenario, run_scenario
from engine.timeframes import NS_PER_DAY, NS_PER_SECOND
from engine.types import Fill, Mark, OrderIntent

T0 = 19_793 * NS_PER_DAY  # 2024-03-11 00:00 UTC
EQUITY = 100_000.0
SECOND = NS_PER_SECOND


def intent(symbol: str = "BTCUSDT", price: float = 100.0, stop: float | None = 99.95,
           side: int = 1, quantity: float | None = None, ts: int = T0,
           features: dict[str, float] | None = None, sequence: int = 1) -> OrderIntent:
    return OrderIntent(
        intent_id=f"{symbol}:i{sequence}", symbol=symbol, ts_event=ts, sequence=sequence,
        side=side, intent_kind="entry", reduce_only=False, quantity=quantity,
        reference_price=price, stop_price=stop, reason="test", features=features or {})


def proposal(order: OrderIntent, default_stop_pct: float = 0.02) -> Proposal:
    return Proposal(order, order.quantity, effective_stop(order, default_stop_pct),
                    sized=order.quantity is None)


def snapshot(equity: float = EQUITY, peak: float | None = None, ts: int = T0,
             positions: tuple[PositionExposure, ...] = ()) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        ts_event=ts, equity=equity, peak_equity=equity if peak is None else peak,
        day_start_equity=EQUITY, daily_pnl=equity - EQUITY, halted=False, halt_reason="",
        open_positions=len(positions), heat=sum(p.heat for p in positions),
        gross_notional=sum(p.notional for p in positions), symbol_quantity=0.0,
        positions=positions)


def exposure(symbol: str, quantity: float, price: float) -> PositionExposure:
    return PositionExposure(symbol, quantity, price, 0.0, abs(quantity) * price)


def fill(symbol: str, ts: int, side: int, quantity: float, price: float = 100.0,
         sequence: int = 1, stop: float | None = None) -> Fill:
    return Fill(fill_id=f"{symbol}:f{sequence}", order_id=f"{symbol}:o{sequence}",
                symbol=symbol, ts_event=ts, sequence=sequence, side=side, quantity=quantity,
                price=price, reference_price=price, fee=0.0, liquidity="taker",
                slippage_bps=0.0, latency_ms=0.0, stop_price=stop)


# ------------------------------------------------------------------ max_stop_distance


@pytest.mark.parametrize(("side", "stop", "approved"), [
    (1, 9990.01, True),     # 0.0999%: under the limit
    (1, 9990.0, False),     # exactly 0.1%: the boundary rejects
    (1, 9989.0, False),     # 0.11%
    (-1, 10009.99, True),
    (-1, 10010.0, False),
])
def test_stop_distance_boundary(side: int, stop: float, approved: bool) -> None:
    rule = MaxStopDistance(max_pct=0.001)
    outcome = rule.check(proposal(intent(price=10_000.0, stop=stop, side=side)), snapshot())
    assert (outcome.verdict == "approve") is approved
    if not approved:
        assert outcome.rule == "max_stop_distance" and "not under 0.10%" in outcome.reason


def test_stop_distance_requires_a_stop_unless_told_not_to() -> None:
    no_stop = intent(price=10_000.0, stop=None)
    outcome = MaxStopDistance().check(proposal(no_stop, 0.0005), snapshot())
    assert outcome.verdict == "reject" and "no stop price" in outcome.reason
    # without require_stop the profile's default stop is judged: 0.05% passes, 2% does not
    relaxed = MaxStopDistance(require_stop=False)
    assert relaxed.check(proposal(no_stop, 0.0005), snapshot()).verdict == "approve"
    assert relaxed.check(proposal(no_stop, 0.02), snapshot()).verdict == "reject"


# ------------------------------------------------------------------ hold_time_exit


def observe_fill(rule: HoldTimeExit, event_fill: Fill) -> list[str]:
    actions = rule.observe(FillObserved(event_fill), snapshot(ts=event_fill.ts_event))
    return [action.kind for action in actions]


def tick(rule: HoldTimeExit, ts: int, symbol: str = "BTCUSDT") -> list[tuple[str, str | None]]:
    actions = rule.observe(MarkObserved(symbol, ts, 100.0), snapshot(ts=ts))
    return [(action.kind, action.symbol) for action in actions]


def test_time_exit_fires_once_at_exactly_sixty_seconds() -> None:
    rule = HoldTimeExit(max_hold_seconds=60)
    assert observe_fill(rule, fill("BTCUSDT", T0, 1, 0.5)) == []
    assert tick(rule, T0 + 60 * SECOND - 1) == []
    assert rule.check(proposal(intent(ts=T0 + 30 * SECOND)), snapshot()).verdict == "approve"
    assert tick(rule, T0 + 60 * SECOND) == [("flatten_symbol", "BTCUSDT")]
    assert tick(rule, T0 + 61 * SECOND) == []  # one action per position
    assert tick(rule, T0 + 600 * SECOND, "ETHUSDT") == []
    refused = rule.check(proposal(intent(ts=T0 + 61 * SECOND)), snapshot())
    assert refused.verdict == "reject" and "past its 60s time exit" in refused.reason
    other = rule.check(proposal(intent("ETHUSDT", ts=T0 + 61 * SECOND)), snapshot())
    assert other.verdict == "approve"


def test_time_exit_clock_keeps_through_adds_and_restarts_on_a_new_position() -> None:
    rule = HoldTimeExit()
    observe_fill(rule, fill("BTCUSDT", T0, 1, 1.0))
    observe_fill(rule, fill("BTCUSDT", T0 + 30 * SECOND, 1, 1.0, sequence=2))  # add: same clock
    assert tick(rule, T0 + 60 * SECOND) == [("flatten_symbol", "BTCUSDT")]
    observe_fill(rule, fill("BTCUSDT", T0 + 62 * SECOND, -1, 2.0, sequence=3))  # flat
    assert rule.opened_at == {} and rule.exits_sent == set()
    assert rule.check(proposal(intent(ts=T0 + 63 * SECOND)), snapshot()).verdict == "approve"
    observe_fill(rule, fill("BTCUSDT", T0 + 100 * SECOND, -1, 1.0, sequence=4))  # new short
    assert tick(rule, T0 + 159 * SECOND) == []
    assert tick(rule, T0 + 160 * SECOND) == [("flatten_symbol", "BTCUSDT")]


def test_time_exit_flip_through_zero_restarts_the_clock() -> None:
    rule = HoldTimeExit()
    observe_fill(rule, fill("SOLUSDT", T0, 1, 1.0))
    observe_fill(rule, fill("SOLUSDT", T0 + 20 * SECOND, -1, 3.0, sequence=2))
    assert rule.quantities == {"SOLUSDT": -2.0} and rule.opened_at["SOLUSDT"] == T0 + 20 * SECOND
    assert tick(rule, T0 + 79 * SECOND) == []
    assert tick(rule, T0 + 80 * SECOND) == [("flatten_symbol", "SOLUSDT")]


def test_time_exit_check_refuses_before_any_event_reported_the_expiry() -> None:
    rule = HoldTimeExit()
    observe_fill(rule, fill("BTCUSDT", T0, 1, 1.0))
    outcome = rule.check(proposal(intent(ts=T0 + 60 * SECOND)), snapshot())
    assert outcome.verdict == "reject"


def test_time_exit_pickles_mid_state() -> None:
    rule = HoldTimeExit()
    observe_fill(rule, fill("BTCUSDT", T0, 1, 1.0))
    copy = pickle.loads(pickle.dumps(rule))
    assert tick(copy, T0 + 60 * SECOND) == [("flatten_symbol", "BTCUSDT")]
    assert tick(rule, T0 + 60 * SECOND) == [("flatten_symbol", "BTCUSDT")]
    again = pickle.loads(pickle.dumps(copy))
    assert tick(again, T0 + 70 * SECOND) == [] and again.exits_sent == {"BTCUSDT"}


def test_time_exit_through_portfolio_risk() -> None:
    profile = RiskProfile(name="t", rules=(KillSwitchConfig(), HoldTimeExitConfig()))
    risk = PortfolioRisk(RiskConfig(profile=profile), EQUITY)
    risk.submit([fill("ETHUSDT", T0, 1, 2.0, 3880.0, sequence=1),
                 Mark("ETHUSDT", T0 + 59 * SECOND, 2, 3881.0),
                 Mark("ETHUSDT", T0 + 60 * SECOND, 3, 3882.0),
                 Mark("ETHUSDT", T0 + 90 * SECOND, 4, 3883.0)])
    risk.apply_all()
    actions = [(a.kind, a.rule, a.symbol) for a in risk.drain_actions()]
    assert actions == [("flatten_symbol", "hold_time_exit", "ETHUSDT")]
    events = risk.drain_journal()["risk_events"]
    assert [row["ts_event"] for row in events] == [T0 + 60 * SECOND]


# ------------------------------------------------------------------ drawdown_kill_switch


def equity_event(rule: DrawdownKillSwitch, equity: float, peak: float = EQUITY,
                 ts: int = T0) -> list[str]:
    return [a.kind for a in rule.observe(EquityObserved(ts), snapshot(equity, peak, ts))]


def test_drawdown_kill_switch_trips_at_exactly_five_percent_once() -> None:
    rule = DrawdownKillSwitch(limit_pct=0.05)
    assert equity_event(rule, EQUITY) == []
    assert equity_event(rule, 95_000.01) == []
    assert rule.check(proposal(intent()), snapshot(95_000.01)).verdict == "approve"
    assert equity_event(rule, 95_000.0) == ["flatten_all", "halt"]
    assert equity_event(rule, 90_000.0) == []  # once
    outcome = rule.check(proposal(intent()), snapshot(99_000.0))
    assert outcome.verdict == "reject" and "manual reset" in outcome.reason


def test_drawdown_kill_switch_follows_new_peaks_and_starts_from_the_portfolio_peak() -> None:
    rule = DrawdownKillSwitch()
    assert equity_event(rule, 110_000.0, 110_000.0) == []
    assert equity_event(rule, 104_500.01, 110_000.0) == []
    assert equity_event(rule, 104_500.0, 110_000.0) == ["flatten_all", "halt"]
    fresh = DrawdownKillSwitch()  # first sight: the portfolio's peak counts
    assert equity_event(fresh, 114_000.0, 120_000.0) == ["flatten_all", "halt"]


def test_drawdown_kill_switch_manual_reset_rebases_the_peak() -> None:
    rule = DrawdownKillSwitch()
    equity_event(rule, EQUITY)
    assert equity_event(rule, 95_000.0) == ["flatten_all", "halt"]
    rule.manual_reset()
    assert rule.check(proposal(intent()), snapshot(95_000.0)).verdict == "approve"
    assert equity_event(rule, 95_000.0) == []  # the old peak no longer counts
    assert equity_event(rule, 90_250.01) == []
    assert equity_event(rule, 90_250.0) == ["flatten_all", "halt"]  # 5% below 95,000


def test_drawdown_kill_switch_check_refuses_an_unreported_breach_and_pickles() -> None:
    rule = DrawdownKillSwitch()
    equity_event(rule, EQUITY)
    assert rule.check(proposal(intent()), snapshot(94_000.0)).verdict == "reject"
    assert not rule.tripped
    equity_event(rule, 94_000.0)
    copy = pickle.loads(pickle.dumps(rule))
    assert copy.tripped and copy.check(proposal(intent()), snapshot()).verdict == "reject"
    copy.manual_reset()
    assert copy.check(proposal(intent()), snapshot()).verdict == "approve"
    assert rule.tripped  # the original is untouched
    assert rule.observe(DayStarted(T0, 1, 90_000.0, None, None), snapshot(90_000.0)) == ()


def test_drawdown_kill_switch_halts_portfolio_risk_until_reset() -> None:
    profile = RiskProfile(name="t", default_stop_pct=0.001, rules=(
        KillSwitchConfig(), DrawdownKillSwitchConfig(limit_pct=0.05),
        CvarSizingConfig(min_history=1, window=10)))
    risk = PortfolioRisk(RiskConfig(profile=profile), EQUITY)
    # 2 BTC long at 69,000; a mark at 66,500 loses 5,000 = 5% of the 100,000 peak
    risk.submit([fill("BTCUSDT", T0, 1, 2.0, 69_000.0, sequence=1),
                 Mark("BTCUSDT", T0 + 10 * SECOND, 2, 66_500.0)])
    risk.apply_all()
    assert risk.halted and "drawdown_kill_switch" in risk.halt_reason
    kinds = [(a.kind, a.rule) for a in risk.drain_actions()]
    assert kinds == [("flatten_all", "drawdown_kill_switch"), ("halt", "drawdown_kill_switch")]
    entry = intent("ETHUSDT", 3880.0, 3877.0, ts=T0 + 20 * SECOND, sequence=3,
                   features={"cvar_99": 0.07})
    assert risk.decide(entry).rule == "kill_switch"
    risk.submit([fill("BTCUSDT", T0 + 21 * SECOND, -1, 2.0, 66_500.0, sequence=5)])  # flattened
    risk.reset_halt()
    approved = risk.decide(replace(entry, ts_event=T0 + 22 * SECOND, sequence=6))
    assert approved.approved and approved.rule == "cvar_sizing"


# ------------------------------------------------------------------ the CVaR estimate


def ring_from(prices: list[float], spacing_s: float, horizon_s: float,
              capacity: int = 1_000) -> ReturnWindow:
    ring = ReturnWindow.empty(capacity)
    for index, price in enumerate(prices):
        ring.add_mark(T0 + int(index * spacing_s * SECOND), price, int(horizon_s * SECOND))
    return ring


def zigzag(returns: int) -> list[float]:
    """`returns` + 1 prices alternating 100 and 101 (returns +1% and -0.990099%), ending at 100."""
    return [100.0 + (returns - index) % 2 for index in range(returns + 1)]


def test_cvar_is_the_worst_loss_at_one_hundred_returns() -> None:
    prices = [*zigzag(99), 95.0]  # the last return loses 5% (from 100)
    assert prices[-2] == 100.0
    ring = ring_from(prices, 60, 60)  # one return per horizon: no scaling
    assert ring.count == 100
    assert ring.cvar(1, 0.99) == pytest.approx(0.05, rel=1e-12)
    assert ring.cvar(-1, 0.99) == pytest.approx(0.01, rel=1e-12)  # a short loses on +1%


def test_cvar_weights_the_fractional_tail() -> None:
    # 150 returns: worst losses 5% and 3%; the tail holds 1.5 of them
    prices = [*zigzag(148), 97.0, 92.15]  # 100 -> 97 (-3%), 97 -> 92.15 (-5%)
    ring = ring_from(prices, 60, 60)
    assert ring.count == 150
    expected = (0.05 + 0.5 * 0.03) / 1.5
    assert ring.cvar(1, 0.99) == pytest.approx(expected, rel=1e-9)


def test_cvar_scales_by_square_root_of_time_and_skips_repeated_timestamps() -> None:
    ring = ring_from([100.0, 95.0], 15, 60)  # 15 s returns scaled to 60 s: x 2 in log
    assert ring.cvar(1, 0.99) == pytest.approx(1 - 0.95 ** 2, rel=1e-12)
    ring.add_mark(T0 + 15 * SECOND, 94.0, 60 * SECOND)  # same time: replaces, no return
    ring.add_mark(T0, 50.0, 60 * SECOND)  # older than the last mark: ignored
    assert ring.count == 1 and ring.last_price == 94.0


def test_cvar_matches_a_plain_python_estimate_on_irregular_marks() -> None:
    rng = np.random.default_rng(7)
    times = np.cumsum(rng.integers(1, 30, 400)) * SECOND + T0
    prices = 67_000 * np.exp(np.cumsum(rng.standard_t(3, 400) * 0.0008))
    ring = ReturnWindow.empty(300)
    for ts, price in zip(times, prices, strict=True):
        ring.add_mark(int(ts), float(price), NS_PER_DAY)
    scaled = [math.log(prices[i] / prices[i - 1])
              * math.sqrt(NS_PER_DAY / (times[i] - times[i - 1]))
              for i in range(100, 400)]  # the ring keeps the last 300 returns
    for side in (1, -1):
        losses = sorted((-side * math.expm1(value) for value in scaled), reverse=True)
        tail = 300 * 0.01  # 3 losses
        expected = (losses[0] + losses[1] + losses[2] + (tail - 3) * losses[3]) / tail
        assert ring.count == 300
        assert ring.cvar(side, 0.99) == pytest.approx(expected, rel=1e-9)


def test_cvar_window_is_bounded_and_forgets_old_returns() -> None:
    rule = CvarSizing(window=10, min_history=10, confidence=0.95, horizon_seconds=60)
    marks = [100.0, 90.0] + [100.0 + (index % 2) for index in range(10)]  # -10% then zigzag
    for index, price in enumerate(marks):
        rule.observe(MarkObserved("BTCUSDT", T0 + index * 60 * SECOND, price), snapshot())
    assert rule.history("BTCUSDT") == 10  # 11 returns seen, the crash fell out
    assert rule.estimate("BTCUSDT", 1) == pytest.approx(1 - 100 / 101, rel=1e-9)


# ------------------------------------------------------------------ cvar_sizing


def feature_intent(cvar: float, symbol: str = "BTCUSDT", price: float = 100.0,
                   stop: float = 99.95, quantity: float | None = None) -> OrderIntent:
    return intent(symbol, price, stop, quantity=quantity, features={"cvar_99": cvar})


def test_cvar_sizing_from_the_feature() -> None:
    rule = CvarSizing()
    outcome = rule.check(proposal(feature_intent(0.05)), snapshot())
    assert outcome.verdict == "cap" and outcome.quantity == pytest.approx(400.0)  # 2000 / 5
    assert "the cvar_99 feature" in outcome.reason


def test_cvar_sizing_from_history_needs_min_history() -> None:
    rule = CvarSizing(min_history=100, horizon_seconds=60)
    for index, price in enumerate([*zigzag(98), 95.0]):
        rule.observe(MarkObserved("BTCUSDT", T0 + index * 60 * SECOND, price), snapshot())
    refused = rule.check(proposal(intent()), snapshot())
    assert refused.verdict == "reject" and refused.reason.startswith("insufficient history")
    assert "99 of 100 returns" in refused.reason
    rule.observe(MarkObserved("BTCUSDT", T0 + 100 * 60 * SECOND, 95.5), snapshot())
    sized = rule.check(proposal(intent(price=95.5)), snapshot())
    # worst loss 1 - 95/100 = 5% (at 100 returns the tail is that one loss)
    assert sized.quantity == pytest.approx(2_000 / (0.05 * 95.5), rel=1e-9)


def test_cvar_sizing_floors_and_validates_the_estimate() -> None:
    rule = CvarSizing(min_cvar_pct=0.005)
    floored = rule.check(proposal(feature_intent(0.001)), snapshot())
    assert floored.quantity == pytest.approx(2_000 / (0.005 * 100))
    for bad in (0.0, -0.1, 1.0, 1.5):
        outcome = rule.check(proposal(feature_intent(bad)), snapshot())
        assert outcome.verdict == "reject" and "invalid cvar_99" in outcome.reason
    # a window that only went up: the long's historical CVaR is negative, the floor applies
    rising = CvarSizing(min_history=5, window=10, horizon_seconds=60)
    for index in range(6):
        rising.observe(MarkObserved("SOLUSDT", T0 + index * 60 * SECOND, 100.0 + index),
                       snapshot())
    assert rising.estimate("SOLUSDT", 1) == 0.005
    assert rising.estimate("SOLUSDT", -1) == pytest.approx(0.01, rel=1e-9)  # 100 -> 101


def test_cvar_sizing_counts_held_positions() -> None:
    rule = CvarSizing()
    rule.check(proposal(feature_intent(0.10, symbol="ETHUSDT")), snapshot())  # ETH: 10%
    held = (exposure("ETHUSDT", 10.0, 100.0),)  # 1,000 notional x 10% = 100
    outcome = rule.check(proposal(feature_intent(0.05)), snapshot(positions=held))
    assert outcome.quantity == pytest.approx((2_000 - 100) / (0.05 * 100))
    assert "held 100.00" in outcome.reason
    # the intent's own symbol counts at the intent's CVaR: 10,000 x 5% = 500
    same = (exposure("BTCUSDT", 100.0, 100.0),)
    assert rule.check(proposal(feature_intent(0.05)), snapshot(positions=same)).quantity == (
        pytest.approx(1_500 / 5))


def test_cvar_sizing_fails_closed_on_held_positions() -> None:
    rule = CvarSizing()
    unknown = (exposure("SOLUSDT", -50.0, 147.0),)
    outcome = rule.check(proposal(feature_intent(0.05)), snapshot(positions=unknown))
    assert outcome.verdict == "reject" and "held position SOLUSDT" in outcome.reason
    full = (exposure("BTCUSDT", 400.0, 100.0),)  # 40,000 x 5% = the whole 2,000 budget
    used = rule.check(proposal(feature_intent(0.05)), snapshot(positions=full))
    assert used.verdict == "reject" and "budget used up" in used.reason


def test_cvar_sizing_fixed_and_presized_quantities() -> None:
    rule = CvarSizing()
    assert rule.check(proposal(feature_intent(0.05, quantity=400.0)), snapshot()).verdict == (
        "approve")
    over = rule.check(proposal(feature_intent(0.05, quantity=401.0)), snapshot())
    assert over.verdict == "reject" and "fixed quantity 401" in over.reason
    presized = replace(proposal(feature_intent(0.05)), quantity=500.0, sized=True)
    capped = rule.check(presized, snapshot())
    assert capped.verdict == "cap" and capped.quantity == pytest.approx(400.0)


def test_cvar_sizing_pickles_mid_state() -> None:
    rule = CvarSizing(window=50, min_history=20, horizon_seconds=600)
    rng = np.random.default_rng(3)
    prices = 3_880 * np.exp(np.cumsum(rng.normal(0, 0.001, 30)))
    for index, price in enumerate(prices):
        rule.observe(MarkObserved("ETHUSDT", T0 + index * 10 * SECOND, float(price)), snapshot())
    rule.check(proposal(feature_intent(0.08, symbol="BTCUSDT")), snapshot())
    copy = pickle.loads(pickle.dumps(rule))
    assert copy.estimate("ETHUSDT", 1) == rule.estimate("ETHUSDT", 1)
    assert copy.supplied == {"BTCUSDT": 0.08}
    for target in (rule, copy):
        target.observe(MarkObserved("ETHUSDT", T0 + 400 * SECOND, 3_700.0), snapshot())
    assert copy.estimate("ETHUSDT", 1) == rule.estimate("ETHUSDT", 1)
    assert copy.history("ETHUSDT") == 30


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    held=st.lists(st.tuples(st.floats(0.5, 500.0), st.floats(1.0, 70_000.0),
                            st.floats(0.005, 0.3)), max_size=4),
    entry_cvar=st.floats(0.001, 0.5), price=st.floats(0.01, 100_000.0),
    equity=st.floats(1_000.0, 10_000_000.0),
)
def test_cvar_sized_entry_keeps_the_conservative_sum_within_budget(
    held: list[tuple[float, float, float]], entry_cvar: float, price: float, equity: float,
) -> None:
    rule = CvarSizing(budget_pct=0.02, min_cvar_pct=0.005)
    positions = []
    for index, (quantity, mark, cvar) in enumerate(held):
        rule.supplied[f"H{index}"] = cvar
        positions.append(exposure(f"H{index}", quantity, mark))
    order = feature_intent(entry_cvar, price=price, stop=price * 0.9995)
    outcome = rule.check(proposal(order), snapshot(equity, positions=tuple(positions)))
    held_cvar = sum(q * m * c for q, m, c in held)
    budget = 0.02 * equity
    if held_cvar >= budget:
        assert outcome.verdict == "reject"
        return
    assert outcome.verdict == "cap" and outcome.quantity is not None
    total = held_cvar + outcome.quantity * price * max(entry_cvar, 0.005)
    assert total == pytest.approx(budget, rel=1e-9)


def test_cvar_config_rejects_history_longer_than_the_window() -> None:
    with pytest.raises(ValueError, match="min_history"):
        CvarSizingConfig(window=50, min_history=60)
    with pytest.raises(ValueError, match="entry 0 \\(cvar_sizing\\): budget"):
        RiskProfile(name="t", rules=[{"rule": "cvar_sizing", "budget": 0.02}])


# ------------------------------------------------------------------ profile and scenario

PLAN_RULES = ("kill_switch", "stale_data", "net_flip", "drawdown_kill_switch",
              "max_stop_distance", "hold_time_exit", "cvar_sizing", "portfolio_heat",
              "max_leverage")


def test_bundled_profile_has_the_plan_numbers() -> None:
    profile = load_profile("perps_hft")
    assert profile.rule_names == PLAN_RULES
    configs = {config.rule: config for config in profile.rules}
    assert configs["cvar_sizing"].model_dump() == {
        "rule": "cvar_sizing", "budget_pct": 0.02, "confidence": 0.99,
        "horizon_seconds": 86_400.0, "window": 2_000, "min_history": 100,
        "min_cvar_pct": 0.005, "feature": "cvar_99"}
    assert configs["max_stop_distance"].model_dump()["max_pct"] == 0.001
    assert configs["hold_time_exit"].model_dump()["max_hold_seconds"] == 60
    assert configs["drawdown_kill_switch"].model_dump()["limit_pct"] == 0.05
    built = profile.build()
    assert [rule.stage for rule in built] == ["gate"] * 6 + ["size"] + ["limit"] * 2


def test_chain_with_the_bundled_profile_sizes_then_caps() -> None:
    rules = load_profile("perps_hft").build()
    # BTC 69,300 with a 60 stop (0.087%) and a 0.6% daily CVaR: CVaR allows 4.81 BTC,
    # heat (0.2% of 100,000 = 200) allows 200 / 60 = 3.333 BTC
    order = feature_intent(0.006, symbol="BTCUSDT", price=69_300.0, stop=69_240.0)
    decision = evaluate(rules, order, snapshot(), 0.001)
    assert decision.outcome.rule == "portfolio_heat"
    assert decision.outcome.quantity == pytest.approx(200 / 60)
    assert [note.split(":")[0] for note in decision.notes] == ["cvar_sizing", "portfolio_heat"]


def test_scenario_triggers_every_rule_and_journals_its_reason() -> None:
    result = run_scenario("perps_hft")
    assert result.ok, (result.mismatches, result.missing_rules)
    assert set(load_scenario("perps_hft")["expect_rules"]) == set(PLAN_RULES)
    reasons: dict[str, list[str]] = {}
    for row in result.journal["risk_decisions"]:
        reasons.setdefault(row["rule"], []).append(row["reason"])
        for note in filter(None, row["rules_applied"].split(" | ")):
            rule, _, reason = note.partition(": ")
            reasons.setdefault(rule, []).append(reason)
    for row in result.journal["risk_events"]:
        reasons.setdefault(row["rule"], []).append(row["reason"])
    for rule in PLAN_RULES:
        assert reasons.get(rule) and all(reason.strip() for reason in reasons[rule]), rule
    kinds = {(row["rule"], row["kind"]) for row in result.journal["risk_events"]}
    assert kinds == {("hold_time_exit", "flatten_symbol"), ("drawdown_kill_switch", "flatten_all"),
                     ("drawdown_kill_switch", "halt")}
    assert result.summary["late_updates"] == 0 and not result.summary["halted"]


def test_scenario_replays_identically() -> None:
    first, second = run_scenario("perps_hft"), run_scenario("perps_hft")
    assert repr(first.journal) == repr(second.journal)
    assert first.triggered == second.triggered
