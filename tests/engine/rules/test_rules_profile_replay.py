"""A bundled risk profile on a real replay: the momentum-breakout sample under the intraday
breakout profile decides through the plan's rules, journals how each size came to be, and does
so identically run after run."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.rules.core import default_profile
from engine.rules.perps import HoldTimeExitConfig
from engine.rules.profile import RiskProfile, load_profile
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


def _replay_with_time_exit(journal: Path, in_process: bool = True) -> dict[str, list[tuple]]:
    base = load_config(SAMPLE_CONFIG)
    profile = RiskProfile(name="sample_with_time_exit", rules=(
        *default_profile(base.risk).rules, HoldTimeExitConfig(max_hold_seconds=5.0)))
    risk = base.risk.model_copy(update={"profile": profile})
    run_replay(None, base.model_copy(update={"risk": risk}), journal, in_process=in_process)
    return {table: read_table(journal, table, deterministic_only=True)
            for table in ("trades", "risk_events", "risk_decisions", "fills")}


def test_a_rule_that_flattens_closes_the_position_through_a_journaled_exit(
        tmp_path: Path) -> None:
    """hold_time_exit (5 s here, against the sample's 1-second bars) asks for flatten_symbol;
    the symbol engine's next position check gets it, in event-time order, and sends a
    reduce-only exit named after the rule."""
    first = _replay_with_time_exit(tmp_path / "a.duckdb")
    flattens = [row for row in first["risk_events"] if row[4] == "flatten_symbol"]
    assert flattens and all(row[3] == "hold_time_exit" for row in flattens)
    # trades columns: entry_ts 3, exit_ts 4, exit_reason 13
    by_rule = [row for row in first["trades"] if row[13] == "risk:hold_time_exit"]
    assert by_rule, "some round trips must end by the rule's flatten"
    for trade in by_rule:  # closed at the first 1-second check past 5 s, filled after latency
        assert 5 * 10**9 <= trade[4] - trade[3] <= 7 * 10**9, trade
    assert all(row[4] - row[3] < 7 * 10**9 for row in first["trades"])  # none outlives it
    assert _replay_with_time_exit(tmp_path / "b.duckdb") == first


@pytest.mark.usefixtures("ray_session")
def test_flattens_are_identical_with_ray_actors(tmp_path: Path) -> None:
    assert _replay_with_time_exit(tmp_path / "ray.duckdb", in_process=False) == \
        _replay_with_time_exit(tmp_path / "local.duckdb")
