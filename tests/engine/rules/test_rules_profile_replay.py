"""A bundled risk profile on a real replay: the momentum-breakout sample under the intraday
breakout profile decides through the plan's rules, journals how each size came to be, and does
so identically run after run."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.rules.profile import load_profile
from engine.runtime import SAMPLE_CONFIG, run_replay
from storage.journal import read_table

pytestmark = pytest.mark.slow


def _replay(journal: Path) -> dict[str, list[tuple[object, ...]]]:
    base = load_config(SAMPLE_CONFIG)
    risk = base.risk.model_copy(update={"profile": load_profile("intraday_breakout")})
    result = run_replay(None, base.model_copy(update={"risk": risk}), journal, in_process=True)
    assert result.summary["portfolio"]["profile"] == "intraday_breakout"
    return {table: read_table(journal, table, deterministic_only=True)
            for table in ("risk_decisions", "risk_events", "fills")}


def test_the_sample_replays_under_the_intraday_breakout_profile(tmp_path: Path) -> None:
    first = _replay(tmp_path / "a.duckdb")
    decisions = first["risk_decisions"]
    entries = [row for row in decisions if not row[7]]  # reduce_only is column 7
    approved = [row for row in entries if row[10]]
    assert approved, "some breakout entries must pass the plan's rules"
    for row in approved:
        applied = str(row[18])
        # sized by the plan: 1% fixed-fractional, then scaled by ATR baseline / ATR
        assert applied.startswith("fixed_fractional: 1.00% of equity"), row
        assert "atr_volatility_scale: ATR baseline" in applied, row
    profile_rules = set(load_profile("intraday_breakout").rule_names)
    assert {row[11] for row in entries} <= profile_rules
    assert {row[3] for row in first["risk_events"]} <= profile_rules
    assert first["risk_events"], "the sample's losses must raise the plan's alerts and blocks"
    assert _replay(tmp_path / "b.duckdb") == first
