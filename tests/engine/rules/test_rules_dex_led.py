"""The DEX-led plan's risk checks: each at its boundary, failing closed without its feature, and
the bundled profile's scenario triggering every rule with a reason, identically twice."""

from __future__ import annotations

import pickle

import pytest
from test_rules_intraday import intent, proposal, snapshot

from engine.rules.base import FillObserved
from engine.rules.dex_led import (
    LatencyCompensation,
    ProfitAfterSlippage,
    SignalCooldown,
    VolatilityRegimeFilter,
)
from engine.rules.profile import load_profile
from engine.rules.scenario import load_scenario, run_scenario
from engine.timeframes import NS_PER_SECOND
from engine.types import Fill

PLAN_RULES = (
    "kill_switch", "stale_data", "daily_loss_limit", "net_flip", "max_open_positions",
    "signal_cooldown", "volatility_regime_filter", "latency_compensation",
    "profit_after_slippage", "fixed_fractional", "portfolio_heat", "max_leverage",
)


def _verdict(rule: object, **features: float) -> tuple[str, str]:
    outcome = rule.check(proposal(intent(features=features)), snapshot())  # type: ignore[attr-defined]
    return outcome.verdict, outcome.reason


def test_profit_after_slippage_needs_a_positive_edge() -> None:
    rule = ProfitAfterSlippage(min_edge=0.0)
    assert _verdict(rule, predicted_reward=0.004, estimated_slippage=0.004)[0] == "approve"
    verdict, reason = _verdict(rule, predicted_reward=0.004, estimated_slippage=0.0041)
    assert verdict == "reject" and "is below" in reason
    assert "estimated_slippage is missing" in _verdict(rule, predicted_reward=0.01)[1]
    assert "predicted_reward is missing" in _verdict(rule, estimated_slippage=0.0)[1]


def test_latency_raises_the_bar() -> None:
    rule = LatencyCompensation(base_threshold=0.005, free_latency_ms=200,
                               latency_scale_ms=1000)
    assert rule.required(150) == 0.005 and rule.required(1200) == pytest.approx(0.01)
    assert _verdict(rule, predicted_reward=0.01, data_latency_ms=1200)[0] == "approve"
    assert _verdict(rule, predicted_reward=0.0099, data_latency_ms=1200)[0] == "reject"
    assert "data_latency_ms is missing" in _verdict(rule, predicted_reward=0.02)[1]
    skewed = _verdict(rule, predicted_reward=0.02, data_latency_ms=-1183.0)
    assert skewed[0] == "reject" and "clock is behind" in skewed[1]


def test_volatility_filter_spares_the_majors_and_fails_closed() -> None:
    profile = load_profile("dex_led")
    rule = VolatilityRegimeFilter(max_volatility=0.01, exempt_sectors=("major",),
                                  profile=profile)
    calm, wild = {"major_volatility": 0.01}, {"major_volatility": 0.0101}
    alt = intent(symbol="UNIUSDT", price=6.6, stop=6.5)
    assert rule.check(proposal(intent(symbol="UNIUSDT", price=6.6, stop=6.5,
                                      features=calm)), snapshot()).verdict == "approve"
    assert rule.check(proposal(intent(symbol="UNIUSDT", price=6.6, stop=6.5,
                                      features=wild)), snapshot()).verdict == "reject"
    assert rule.check(proposal(alt), snapshot()).verdict == "reject"  # no feature
    major = intent(symbol="ETHUSDT", price=2270.0, stop=2247.0, features=wild)
    assert rule.check(proposal(major), snapshot()).verdict == "approve"


def test_cooldown_counts_from_the_last_fill_in_event_time() -> None:
    rule = SignalCooldown(cooldown_seconds=900)
    t0 = intent().ts_event
    fill = Fill("f1", "o1", "BTCUSDT", t0, 1, 1, 0.1, 50_000.0, 50_000.0, 0.0, "taker", 0.0,
                0.0)
    rule.observe(FillObserved(fill), snapshot())
    later = intent(ts=t0 + 899 * NS_PER_SECOND)
    assert rule.check(proposal(later), snapshot()).verdict == "reject"
    assert rule.check(proposal(intent(ts=t0 + 900 * NS_PER_SECOND)),
                      snapshot()).verdict == "approve"
    assert rule.check(proposal(intent(symbol="ETHUSDT", price=2270.0, stop=2247.0)),
                      snapshot()).verdict == "approve"
    assert pickle.loads(pickle.dumps(rule)) == rule


def test_scenario_triggers_every_rule_with_a_reason_identically_twice() -> None:
    result = run_scenario("dex_led")
    assert result.ok, (result.mismatches, result.missing_rules)
    assert load_profile("dex_led").rule_names == PLAN_RULES
    assert set(load_scenario("dex_led")["expect_rules"]) == set(PLAN_RULES)
    reasons: dict[str, list[str]] = {}
    for row in result.journal["risk_decisions"]:
        reasons.setdefault(row["rule"], []).append(row["reason"])
        for note in filter(None, row["rules_applied"].split(" | ")):
            rule, _, reason = note.partition(": ")
            reasons.setdefault(rule, []).append(reason)
    for rule in PLAN_RULES:
        assert reasons.get(rule) and all(reason.strip() for reason in reasons[rule]), rule
    assert repr(run_scenario("dex_led").journal) == repr(result.journal)


def test_volatility_filter_measures_the_majors_from_their_marks() -> None:
    from engine.rules.base import MarkObserved

    rule = VolatilityRegimeFilter(max_volatility=0.003, exempt_sectors=("major",),
                                  profile=load_profile("dex_led"), min_samples=10)
    alt = intent(symbol="UNIUSDT", price=6.6, stop=6.5)
    minute = 60_000_000_000
    start = alt.ts_event - 40 * minute
    price = 2_300.0
    for step in range(30):  # calm ETH: +-0.1% a minute; UNI's own marks do not count
        price *= 1.001 if step % 2 else 0.999
        rule.observe(MarkObserved("ETHUSDT", start + step * minute, price), snapshot())
        rule.observe(MarkObserved("UNIUSDT", start + step * minute, 5.0 + step), snapshot())
    measured = rule.measured(alt.ts_event)
    assert measured is not None and 0.00095 < measured < 0.00105  # std of +-0.1% moves
    assert rule.check(proposal(alt), snapshot()).verdict == "approve"
    for step in range(30, 40):  # then +-2% a minute
        price *= 1.02 if step % 2 else 0.98
        rule.observe(MarkObserved("ETHUSDT", start + step * minute, price), snapshot())
    outcome = rule.check(proposal(alt), snapshot())
    assert outcome.verdict == "reject" and "above" in outcome.reason


def test_volatility_filter_refuses_while_no_major_is_measured() -> None:
    rule = VolatilityRegimeFilter(max_volatility=0.003, profile=load_profile("dex_led"))
    outcome = rule.check(proposal(intent(symbol="UNIUSDT", price=6.6, stop=6.5)), snapshot())
    assert outcome.verdict == "reject" and "not known yet" in outcome.reason
