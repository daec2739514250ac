"""The autonomous composite plan's rules (engine/rules/composite.py, composite_protocols.py), its
bundled profile and its scenario: hand-computed sizes and caps, the exact boundary of each
threshold, promotion and demotion, pauses and their ends, manual reset, pickling."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import RiskConfig
from engine.risk import PortfolioRisk
from engine.rules.base import (
    ApiCallObserved,
    EquityObserved,
    PortfolioSnapshot,
    PositionExposure,
    Proposal,
    RiskRule,
    TradeClosed,
)
from engine.rules.chain import effective_stop
from engine.rules.composite import (
    CapitalTierConfig,
    CapitalTierLimits,
    CapitalTierLimitsConfig,
    CapitalTierSizer,
    TierLadder,
)
from engine.rules.composite_protocols import (
    AllocationCaps,
    AllocationCapsConfig,
    DrawdownProtocol,
    DrawdownProtocolConfig,
    LosingStreakPhases,
    LosingStreakPhasesConfig,
)
from engine.rules.profile import AssetInfo, RiskProfile, load_profile
from engine.rules.scenario import run_scenario
from engine.timeframes import NS_PER_DAY, NS_PER_HOUR
from engine.types import OrderIntent

T0 = 19_786 * NS_PER_DAY  # 2024-03-04 00:00 UTC
PLAN_RULES = ("kill_switch", "stale_data", "net_flip", "capital_tier", "drawdown_protocol",
              "losing_streak_phases", "capital_tier_limits", "allocation_caps")


def intent(symbol: str = "BTCUSDT", price: float = 100.0, stop: float | None = 98.0,
           quantity: float | None = None, score: float | None = None,
           ts: int = T0) -> OrderIntent:
    return OrderIntent(
        intent_id=f"{symbol}:i1", symbol=symbol, ts_event=ts, sequence=1, side=1,
        intent_kind="entry", reduce_only=False, quantity=quantity, reference_price=price,
        stop_price=stop, score=score, reason="test")


def proposal(order: OrderIntent, quantity: float | None = None) -> Proposal:
    """A proposal as the chain hands it on: risk-sized with `quantity` when the intent left
    sizing to risk, else the intent's fixed quantity."""
    sized = order.quantity is None
    return Proposal(order, quantity if sized else order.quantity,
                    effective_stop(order, 0.02), sized=sized)


def snapshot(equity: float = 1_000.0, peak: float | None = None, ts: int = T0,
             positions: tuple[PositionExposure, ...] = (),
             symbol_quantity: float = 0.0) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        ts_event=ts, equity=equity, peak_equity=equity if peak is None else peak,
        day_start_equity=equity, daily_pnl=0.0, halted=False, halt_reason="",
        open_positions=len(positions), heat=0.0,
        gross_notional=sum(p.notional for p in positions), symbol_quantity=symbol_quantity,
        positions=positions)


def exposure(symbol: str, notional: float, price: float = 100.0) -> PositionExposure:
    return PositionExposure(symbol, notional / price, price, 0.0, notional)


def closed(pnl: float, ts: int = T0, symbol: str = "ETHUSDT") -> TradeClosed:
    return TradeClosed(symbol, ts, pnl, 10.0, 0.0)


def ladder() -> TierLadder:
    return CapitalTierConfig().ladder()


def tier_name(tiers: TierLadder, equity: float) -> str | None:
    tier = tiers.effective(equity)
    return None if tier is None else tier.name


def equity_seen(rule: RiskRule, equity: float, peak: float | None = None,
                ts: int = T0) -> list[tuple[str, str]]:
    actions = rule.observe(EquityObserved(ts), snapshot(equity, peak, ts))
    return [(action.kind, action.reason) for action in actions]


# ------------------------------------------------------------------ capital tiers


def test_tier_sizer_risks_the_tier_fraction_over_the_stop_distance() -> None:
    sizer = CapitalTierSizer(ladder=ladder())
    outcome = sizer.check(proposal(intent(price=100.0, stop=95.0)), snapshot(1_000.0))
    assert outcome.verdict == "cap" and outcome.quantity == pytest.approx(0.02 * 1_000 / 5)
    assert "tier 'micro'" in outcome.reason
    outcome = sizer.check(proposal(intent(price=100.0, stop=95.0)), snapshot(12_000.0))
    assert outcome.quantity == pytest.approx(0.01 * 12_000 / 5)  # starts in 'large'
    fixed = sizer.check(proposal(intent(quantity=3.0)), snapshot(1_000.0))
    assert fixed.verdict == "approve" and fixed.quantity == 3.0


def test_no_entries_below_the_lowest_tier_and_500_exactly_is_micro() -> None:
    sizer = CapitalTierSizer(ladder=ladder())
    below = sizer.check(proposal(intent()), snapshot(499.99))
    assert below.verdict == "reject"
    assert "equity 499.99 is below the lowest capital tier ('micro' from 500.00)" in below.reason
    assert sizer.check(proposal(intent(quantity=1.0)), snapshot(499.99)).verdict == "reject"
    assert sizer.check(proposal(intent()), snapshot(500.0)).quantity == pytest.approx(5.0)
    limits = CapitalTierLimits(ladder=ladder())
    assert limits.check(proposal(intent(), 1.0), snapshot(499.99)).verdict == "reject"


def record(tiers: TierLadder, wins: int, win_pnl: float, losses: int, loss_pnl: float) -> None:
    for _ in range(wins):
        tiers.record(closed(win_pnl))
    for _ in range(losses):
        tiers.record(closed(-loss_pnl))


def test_equity_alone_does_not_promote() -> None:
    tiers = ladder()
    assert tiers.update(1_900.0) == []
    assert tiers.update(2_500.0) == []
    assert tier_name(tiers, 2_500.0) == "micro"


def test_promotion_at_the_exact_thresholds_with_the_numbers_journaled() -> None:
    tiers = ladder()
    tiers.update(1_900.0)
    record(tiers, wins=9, win_pnl=13.0, losses=10, loss_pnl=9.0)  # 19 trades: one short
    assert tiers.update(2_000.0) == []
    tiers.record(closed(-0.0))  # zero P&L: a trade, neither won nor lost
    # 20 trades, win rate 9/20 = 45%, profit factor 117/90 = 1.3: exactly the minimums
    assert tiers.win_rate == 0.45 and tiers.profit_factor == pytest.approx(1.3)
    (text,) = tiers.update(2_000.0)
    assert text.startswith("promoted from 'micro' to 'small': 20 trades, win rate 45.0%, "
                           "profit factor 1.30, tier drawdown 0.0%")
    assert tier_name(tiers, 2_000.0) == "small"
    assert tiers.trades == 0  # the record restarts in the new tier
    assert tiers.update(6_000.0) == []  # one step at a time: 'medium' needs a new record


@pytest.mark.parametrize(("wins", "losses", "loss_pnl", "dip", "promoted"), [
    (8, 12, 5.0, 1_900.0, False),  # win rate 40% < 45%
    (10, 10, 10.01, 1_900.0, False),  # profit factor 100/100.1 < 1.3
    (12, 8, 5.0, 1_710.0, True),  # tier drawdown 1 - 1710/1900 = 10% exactly
    (12, 8, 5.0, 1_709.0, False),  # 10.05% > 10%
])
def test_promotion_needs_every_criterion(wins: int, losses: int, loss_pnl: float, dip: float,
                                         promoted: bool) -> None:
    tiers = ladder()
    tiers.update(1_900.0)
    tiers.update(dip)
    record(tiers, wins=wins, win_pnl=10.0, losses=losses, loss_pnl=loss_pnl)
    assert bool(tiers.update(2_100.0)) is promoted


def test_demotion_when_equity_falls_under_the_tier_floor() -> None:
    tiers = ladder()
    tiers.update(5_500.0)  # starts in 'medium'
    assert tiers.update(5_000.0) == []
    (text,) = tiers.update(4_999.99)
    assert text == ("demoted from 'medium' to 'small': equity 4999.99 fell below the tier floor "
                    "5000.00")
    (text,) = tiers.update(450.0)
    assert "to none (no entries)" in text and tiers.effective(450.0) is None
    (text,) = tiers.update(520.0)
    assert text == "equity 520.00 is back above 500.00: entries resume in 'micro'"


def test_demotion_on_the_tier_drawdown_at_any_trade_count() -> None:
    tiers = ladder()
    tiers.update(3_000.0)  # 'small'
    assert tiers.update(2_560.0) == []  # 14.67%
    (text,) = tiers.update(2_550.0)  # 1 - 2550/3000 = 15% exactly
    assert text.startswith("demoted from 'small' to 'micro': tier drawdown 15.0% >= 15.0%")
    assert tier_name(tiers, 2_550.0) == "micro"  # though equity is in the small bracket
    assert tiers.update(2_000.0) == []  # the lowest tier has nowhere lower to go


def test_demotion_on_win_rate_or_profit_factor_after_min_trades() -> None:
    tiers = ladder()
    tiers.update(3_000.0)
    record(tiers, wins=2, win_pnl=50.0, losses=7, loss_pnl=5.0)  # 9 trades, win rate 22%
    assert tiers.update(3_000.0) == []
    tiers.record(closed(-5.0))  # 10 trades: 20% < 30%
    (text,) = tiers.update(3_000.0)
    assert "win rate 20.0% < 30.0%" in text and "profit factor" not in text.split("(")[0]
    tiers = ladder()
    tiers.update(3_000.0)
    record(tiers, wins=5, win_pnl=8.0, losses=5, loss_pnl=10.0)  # PF 0.8: exactly the floor
    assert tiers.update(3_000.0) == []
    tiers.record(closed(-0.01))
    (text,) = tiers.update(3_000.0)
    assert "profit factor 0.80 < 0.80" in text  # 40/50.01


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.one_of(
    st.tuples(st.just("equity"), st.floats(300.0, 15_000.0)),
    st.tuples(st.just("trade"), st.floats(-60.0, 60.0))), min_size=1, max_size=120))
def test_active_tier_never_outruns_equity_or_its_record(
        events: list[tuple[str, float]]) -> None:
    tiers = ladder()
    tiers.update(1_000.0)
    for kind, value in events:
        if kind == "trade":
            tiers.record(closed(value))
            continue
        before, trades_before = tiers.active, tiers.trades
        tiers.update(value)
        by_equity = tiers.equity_tier(value)
        tier = tiers.effective(value)
        assert (tier is None) == (value < 500.0)
        if tier is not None and by_equity is not None:
            assert tiers.tiers.index(tier) <= by_equity
        if before is not None and tiers.active is not None and tiers.active > before:
            assert tiers.active == before + 1 and trades_before >= tiers.promotion.min_trades


def test_tier_limits_count_positions_single_position_and_leverage() -> None:
    limits = CapitalTierLimits(ladder=ladder())
    two = (exposure("ETHUSDT", 300.0), exposure("SOLUSDT", 300.0))
    full = limits.check(proposal(intent(), 1.0), snapshot(1_000.0, positions=two))
    assert full.verdict == "reject" and full.reason == "tier 'micro': 2 positions open, limit 2"
    # single position: 75% of 1,000 = 750 notional, 250 of it held -> room 5 at 100
    held = (exposure("BTCUSDT", 250.0),)
    adding = snapshot(1_000.0, positions=held, symbol_quantity=2.5)
    capped = limits.check(proposal(intent(), 8.0), adding)
    assert capped.verdict == "cap" and capped.quantity == pytest.approx(5.0)
    assert "single position 75% of equity" in capped.reason
    assert limits.check(proposal(intent(quantity=5.0)), adding).verdict == "approve"
    assert limits.check(proposal(intent(quantity=5.01)), adding).verdict == "reject"
    # leverage: 1.5 x 1,000 - 1,000 gross elsewhere = room 5 at 100 (single would allow 7.5)
    other = (exposure("ETHUSDT", 1_000.0),)
    levered = limits.check(proposal(intent(), 8.0), snapshot(1_000.0, positions=other))
    assert levered.quantity == pytest.approx(5.0) and "leverage 1.5x" in levered.reason


def test_tier_limits_need_the_capital_tier_table() -> None:
    profile = RiskProfile(name="bare", rules=(CapitalTierLimitsConfig(),))
    with pytest.raises(ValueError, match="capital_tier_limits needs a capital_tier rule"):
        profile.build()


def test_tier_config_rejects_unordered_tiers(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("""name: bad
rules:
  - rule: capital_tier
    tiers:
      - {name: a, min_equity: 2000, risk_per_trade: 0.01, max_positions: 2,
         max_position_pct: 0.5, max_leverage: 1}
      - {name: b, min_equity: 500, risk_per_trade: 0.01, max_positions: 2,
         max_position_pct: 0.5, max_leverage: 1}
""")
    with pytest.raises(ValueError, match=r"capital_tier.*tiers.*min_equity must increase"):
        load_profile(str(path))


# ------------------------------------------------------------------ drawdown protocol


def test_drawdown_sizes_at_the_exact_levels() -> None:
    rule = DrawdownProtocol(symbol_tags={"DOGEUSDT": ("meme",)})
    sized = proposal(intent(), 10.0)
    assert rule.check(sized, snapshot(901.0, peak=1_000.0)).verdict == "approve"  # 9.9%
    cut = rule.check(sized, snapshot(900.0, peak=1_000.0))  # 10% exactly
    assert cut.verdict == "cap" and cut.quantity == pytest.approx(7.0)
    assert rule.check(sized, snapshot(851.0, peak=1_000.0)).quantity == pytest.approx(7.0)
    assert rule.check(sized, snapshot(850.0, peak=1_000.0)).quantity == pytest.approx(5.0)
    meme = rule.check(proposal(intent("DOGEUSDT", 0.16, 0.15), 1_000.0),
                      snapshot(850.0, peak=1_000.0))
    assert meme.verdict == "reject" and "no meme coins (DOGEUSDT)" in meme.reason
    meme_ok = rule.check(proposal(intent("DOGEUSDT", 0.16, 0.15), 1_000.0),
                         snapshot(860.0, peak=1_000.0))
    assert meme_ok.quantity == pytest.approx(700.0)


def test_cuts_refuse_what_they_cannot_scale_and_unknown_drawdown() -> None:
    rule = DrawdownProtocol()
    fixed = rule.check(proposal(intent(quantity=2.0)), snapshot(880.0, peak=1_000.0))
    assert fixed.verdict == "reject" and "fixed quantity 2 is never resized" in fixed.reason
    unsized = rule.check(Proposal(intent(), None, 98.0, sized=True),
                         snapshot(880.0, peak=1_000.0))
    assert unsized.verdict == "reject" and "profile order" in unsized.reason
    assert rule.check(proposal(intent(quantity=2.0)), snapshot(950.0, peak=1_000.0)).verdict \
        == "approve"
    assert rule.check(proposal(intent(), 1.0), snapshot(math.nan, peak=1_000.0)).verdict \
        == "reject"


def test_drawdown_alerts_once_per_level_then_preserves_capital_48h() -> None:
    rule = DrawdownProtocol()
    assert equity_seen(rule, 960.0, 1_000.0) == []
    assert equity_seen(rule, 950.0, 1_000.0) == [
        ("alert", "drawdown 5.00% from peak 1000.00: alert only")]
    assert equity_seen(rule, 940.0, 1_000.0) == []
    assert [kind for kind, _ in equity_seen(rule, 880.0, 1_000.0)] == ["alert"]
    assert "no meme coins" in equity_seen(rule, 840.0, 1_000.0)[0][1]
    ts = T0 + NS_PER_HOUR
    actions = equity_seen(rule, 800.0, 1_000.0, ts)  # 20% exactly
    assert [kind for kind, _ in actions] == ["block_entries", "flatten_all"]
    assert "no entries for 48 h until 2024-03-06T01:00:00Z" in actions[0][1]
    until = ts + 48 * NS_PER_HOUR
    late = proposal(intent(ts=until - 1), 1.0)
    assert rule.check(late, snapshot(800.0, 1_000.0, until - 1)).verdict == "reject"
    rule.manual_reset()  # a timed cool-off: reset-halt does not shorten it
    assert rule.check(late, snapshot(800.0, 1_000.0, until - 1)).verdict == "reject"
    on_time = rule.check(proposal(intent(ts=until), 1.0), snapshot(800.0, 1_000.0, until))
    assert on_time.quantity == pytest.approx(0.5)  # resumes at the drawdown's size
    ended = rule.observe(ApiCallObserved(until, True), snapshot(800.0, 1_000.0, until))
    assert [action.kind for action in ended] == ["alert"] and "entries resume" in ended[0].reason
    assert equity_seen(rule, 760.0, 1_000.0, until + 1) == []  # 24% < 20% + 5% re-arm step
    again = equity_seen(rule, 750.0, 1_000.0, until + 2)
    assert [kind for kind, _ in again] == ["block_entries", "flatten_all"]


def test_drawdown_recovery_rearms_the_protocol() -> None:
    rule = DrawdownProtocol(flatten_on_preservation=False)
    equity_seen(rule, 800.0, 1_000.0)
    assert rule.preservation_until is not None
    ended = rule.preservation_until
    rule.observe(EquityObserved(ended), snapshot(800.0, 1_000.0, ended))
    assert equity_seen(rule, 960.0, 1_000.0, ended + 1) == [
        ("alert", "drawdown 4.00% is back under 5%: protocol re-armed")]
    assert [kind for kind, _ in equity_seen(rule, 800.0, 1_000.0, ended + 2)] == \
        ["alert", "block_entries"]  # level alert, then preservation at 20% again, no flatten


def test_drawdown_config_needs_ordered_levels() -> None:
    with pytest.raises(ValueError, match="alert_at < cut_at"):
        DrawdownProtocolConfig(cut_at=0.16, defensive_at=0.15)


# ------------------------------------------------------------------ losing streak


def streak_after(rule: LosingStreakPhases, pnls: list[float],
                 ts: int = T0) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for pnl in pnls:
        for action in rule.observe(closed(pnl, ts), snapshot(ts=ts)):
            seen.append((action.kind, action.reason))
    return seen


def test_streak_halves_at_five_and_a_win_resets() -> None:
    rule = LosingStreakPhases()
    assert streak_after(rule, [-10.0] * 4 + [0.0]) == []  # a scratch leaves the streak at 4
    assert rule.check(proposal(intent(), 8.0), snapshot()).verdict == "approve"
    assert streak_after(rule, [-10.0]) == [
        ("alert", "5 consecutive losses (last ETHUSDT -10.00): size x0.5")]
    assert rule.check(proposal(intent(), 8.0), snapshot()).quantity == pytest.approx(4.0)
    fixed = rule.check(proposal(intent(quantity=8.0)), snapshot())
    assert fixed.verdict == "reject"
    (won,) = streak_after(rule, [3.0])
    assert "ending a streak of 5 losses" in won[1] and rule.losses == 0
    assert rule.check(proposal(intent(), 8.0), snapshot()).verdict == "approve"


def test_streak_from_eight_takes_only_top_scores_at_a_quarter() -> None:
    rule = LosingStreakPhases()
    streak_after(rule, [-1.0] * 7)
    assert rule.check(proposal(intent(score=1.0), 8.0), snapshot()).quantity == \
        pytest.approx(4.0)
    assert "only signals scored >= 5" in streak_after(rule, [-1.0])[0][1]
    missing = rule.check(proposal(intent(), 8.0), snapshot())
    assert missing.verdict == "reject" and "the intent has no score" in missing.reason
    low = rule.check(proposal(intent(score=4.99), 8.0), snapshot())
    assert low.verdict == "reject" and "this one scored 4.99" in low.reason
    assert rule.check(proposal(intent(score=5.0), 8.0), snapshot()).quantity == \
        pytest.approx(2.0)


def test_streak_pauses_at_ten_for_24h_and_each_further_loss_renews() -> None:
    rule = LosingStreakPhases()
    streak_after(rule, [-1.0] * 9)
    (paused,) = streak_after(rule, [-1.0], T0)
    assert paused == ("block_entries", "10 consecutive losses (last ETHUSDT -1.00): entries "
                      "paused for 24 h until 2024-03-05T00:00:00Z")
    until = T0 + 24 * NS_PER_HOUR
    top = intent(score=5.0, ts=until - 1)
    assert rule.check(proposal(top, 8.0), snapshot(ts=until - 1)).verdict == "reject"
    assert rule.check(proposal(replace(top, ts_event=until), 8.0),
                      snapshot(ts=until)).quantity == pytest.approx(2.0)
    resumed = rule.observe(ApiCallObserved(until, False), snapshot(ts=until))
    assert "pause ended" in resumed[0].reason and rule.paused_until is None
    streak_after(rule, [-1.0], until + 5)
    assert rule.losses == 11 and rule.paused_until == until + 5 + 24 * NS_PER_HOUR


def test_streak_pause_until_manual_reset() -> None:
    rule = LosingStreakPhasesConfig(pause_hours=None).build(RiskProfile(
        name="p", rules=(LosingStreakPhasesConfig(pause_hours=None),)))
    assert isinstance(rule, LosingStreakPhases)
    streak_after(rule, [-1.0] * 10)
    far = T0 + 30 * NS_PER_DAY
    outcome = rule.check(proposal(intent(score=5.0, ts=far), 8.0), snapshot(ts=far))
    assert outcome.verdict == "reject" and "until a manual reset" in outcome.reason
    rule.manual_reset()
    assert rule.check(proposal(intent(score=5.0), 8.0), snapshot()).quantity == \
        pytest.approx(2.0)
    assert rule.losses == 10  # the reset lifts the pause, not the streak


def test_streak_config_needs_ordered_phases() -> None:
    with pytest.raises(ValueError, match="reduce_at < selective_at < pause_at"):
        LosingStreakPhasesConfig(selective_at=10, pause_at=10)


# ------------------------------------------------------------------ allocation caps


def caps_rule() -> AllocationCaps:
    profile = RiskProfile(
        name="caps", default_asset=AssetInfo(asset_class="crypto", sector="other"),
        assets={"ETHUSDT": AssetInfo(sector="smart_contract"),
                "SOLUSDT": AssetInfo(sector="smart_contract"),
                "EURUSD": AssetInfo(asset_class="forex", sector="fiat")},
        rules=(AllocationCapsConfig(asset_class_caps={"crypto": 1.0},
                                    sector_caps={"smart_contract": 0.75},
                                    default_sector_cap=0.5),))
    (rule,) = profile.build()
    assert isinstance(rule, AllocationCaps)
    return rule


def test_allocation_caps_per_sector_and_class() -> None:
    rule = caps_rule()
    eth = (exposure("ETHUSDT", 300.0),)
    # smart_contract: 750 - 300 = 450 -> 4.5 SOL at 100; crypto: 1,000 - 300 -> 7
    capped = rule.check(proposal(intent("SOLUSDT"), 6.0), snapshot(1_000.0, positions=eth))
    assert capped.quantity == pytest.approx(4.5)
    assert "sector 'smart_contract' cap 75% of equity (in use 300.00 of 750.00)" in capped.reason
    assert rule.check(proposal(intent("SOLUSDT", quantity=4.5)),
                      snapshot(1_000.0, positions=eth)).verdict == "approve"
    assert rule.check(proposal(intent("SOLUSDT", quantity=4.6)),
                      snapshot(1_000.0, positions=eth)).verdict == "reject"
    # BTC is unlisted: default sector 'other' capped at 50%; the crypto class holds 700 of 1,000
    crowded = (exposure("ETHUSDT", 400.0), exposure("SOLUSDT", 300.0))
    by_class = rule.check(proposal(intent("BTCUSDT"), 5.0),
                          snapshot(1_000.0, positions=crowded))
    assert by_class.quantity == pytest.approx(3.0) and "asset class 'crypto'" in by_class.reason
    # forex has no class cap and 'fiat' takes the default sector cap
    forex = rule.check(proposal(intent("EURUSD", 1.08, 1.07), 1_000.0),
                       snapshot(1_000.0, positions=crowded))
    assert forex.quantity == pytest.approx(500.0 / 1.08)


def test_allocation_caps_config_needs_a_cap() -> None:
    with pytest.raises(ValueError, match="set at least one cap"):
        AllocationCapsConfig()


# ------------------------------------------------------------------ pickling mid-state


def test_every_rule_pickles_mid_state() -> None:
    sizer = CapitalTierSizer(ladder=ladder())
    sizer.observe(EquityObserved(T0), snapshot(1_900.0))
    sizer.observe(closed(12.0), snapshot(1_900.0))
    limits = CapitalTierLimits(ladder=ladder())
    limits.observe(EquityObserved(T0), snapshot(5_500.0))
    drawdown = DrawdownProtocol(symbol_tags={"DOGEUSDT": ("meme",)})
    equity_seen(drawdown, 800.0, 1_000.0)
    streak = LosingStreakPhases()
    streak_after(streak, [-1.0] * 10)
    rules = [sizer, limits, drawdown, streak, caps_rule()]
    for rule in rules:
        copy = pickle.loads(pickle.dumps(rule))
        assert copy == rule and copy is not rule
    later = T0 + 49 * NS_PER_HOUR
    for rule in (drawdown, streak):
        copy = pickle.loads(pickle.dumps(rule))
        here = snapshot(800.0, 1_000.0, later)
        assert rule.observe(EquityObserved(later), here) == copy.observe(EquityObserved(later),
                                                                         here)
        order = proposal(intent(score=5.0, ts=later), 8.0)
        assert rule.check(order, here) == copy.check(order, here)


# ------------------------------------------------------------------ profile and scenario


def test_bundled_profile_has_the_plan_numbers() -> None:
    profile = load_profile("autonomous_composite")
    assert profile.rule_names == PLAN_RULES
    by_name = {config.rule: config for config in profile.rules}
    tiers = by_name["capital_tier"]
    assert isinstance(tiers, CapitalTierConfig)
    assert [tier.min_equity for tier in tiers.tiers] == [500, 2_000, 5_000, 10_000]
    drawdown = by_name["drawdown_protocol"]
    assert isinstance(drawdown, DrawdownProtocolConfig)
    assert (drawdown.alert_at, drawdown.cut_at, drawdown.cut_multiplier, drawdown.defensive_at,
            drawdown.defensive_multiplier, drawdown.preservation_at) == \
        (0.05, 0.10, 0.7, 0.15, 0.5, 0.20)
    assert 48 <= drawdown.preservation_hours <= 72 and drawdown.banned_tags == ("meme",)
    streak = by_name["losing_streak_phases"]
    assert isinstance(streak, LosingStreakPhasesConfig)
    assert (streak.reduce_at, streak.selective_at, streak.pause_at) == (5, 8, 10)
    assert "meme" in profile.asset("DOGEUSDT").tags
    risk = PortfolioRisk(RiskConfig(profile=profile), 1_900.0)
    assert set(PLAN_RULES) <= {rule.name for rule in risk.rules}


def test_scenario_triggers_every_rule_with_reasons() -> None:
    result = run_scenario("autonomous_composite")
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
    texts = [row["reason"] for row in events]
    assert any(text.startswith("promoted from 'micro' to 'small'") for text in texts)
    assert any(text.startswith("demoted from 'small' to 'micro'") for text in texts)
    assert any("capital preservation ended" in text for text in texts)
    kinds = {(row["rule"], row["kind"]) for row in events}
    assert {("drawdown_protocol", "flatten_all"), ("losing_streak_phases", "block_entries")} \
        <= kinds
    assert result.summary["drawdown"] > 0.20


def test_scenario_journal_is_deterministic() -> None:
    first, second = run_scenario("autonomous_composite"), run_scenario("autonomous_composite")
    assert first.journal == second.journal
    assert first.triggered == second.triggered
