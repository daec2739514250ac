"""spread_filter and volume_cap: they read the engine's market facts, refuse without them, and
size or refuse exactly at their boundaries."""

from __future__ import annotations

import pickle

import pytest
from test_rules_intraday import intent, proposal, snapshot

from engine.rules.core import FixedFractional
from engine.rules.execution_filters import SpreadFilter, VolumeCap

FACTS = {"spread_bps": 1.0, "spread_avg_bps": 1.0, "spread_samples": 50.0}


def test_spread_filter_judges_against_the_average_and_fails_closed() -> None:
    rule = SpreadFilter(max_multiple=2.0, min_samples=20)

    def verdict(**facts: float) -> tuple[str, str]:
        outcome = rule.check(proposal(intent(features={**FACTS, **facts})), snapshot())
        return outcome.verdict, outcome.reason

    assert verdict(spread_bps=2.0)[0] == "approve"  # at 2x: not over
    assert verdict(spread_bps=2.0001) == ("reject", "spread 2.00 bps > 2x its average 1.00 bps")
    assert "warming up: 19 of 20" in verdict(spread_samples=19)[1]
    missing = rule.check(proposal(intent(features={})), snapshot())
    assert missing.verdict == "reject" and "warming up: no of 20" in missing.reason
    no_quote = {key: value for key, value in FACTS.items() if key != "spread_bps"}
    refused = rule.check(proposal(intent(features=no_quote)), snapshot())
    assert refused.verdict == "reject" and "spread_bps is missing" in refused.reason
    assert verdict(spread_avg_bps=0.0)[0] == "reject"
    assert pickle.loads(pickle.dumps(rule)) == rule


def test_volume_cap_cuts_a_sized_entry_and_refuses_a_fixed_one() -> None:
    rule = VolumeCap(max_fraction=0.01)
    facts = {"quote_volume_24h": 5_000_000.0}  # cap: 50,000 USDT = 1 BTC at 50,000
    sized = FixedFractional(risk_pct=0.01).check(proposal(intent(features=facts)), snapshot())
    assert sized.quantity == pytest.approx(1.0)  # 1,000 at risk over a 1,000 stop
    assert rule.check(proposal(intent(features=facts), quantity=0.9), snapshot()).verdict == (
        "approve")
    capped = rule.check(proposal(intent(features=facts), quantity=3.0), snapshot())
    assert capped.verdict == "cap" and capped.quantity == pytest.approx(1.0)
    fixed = rule.check(proposal(intent(quantity=3.0, features=facts)), snapshot())
    assert fixed.verdict == "reject"
    none = rule.check(proposal(intent(features={}), quantity=0.1), snapshot())
    assert none.verdict == "reject" and "quote_volume_24h is missing" in none.reason
