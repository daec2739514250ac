"""A bundled risk profile on a real replay: the momentum-breakout sample under the intraday
breakout profile decides through the plan's rules, journals how each size came to be, and does
so identically run after run."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config, parse_config
from engine.rules.core import default_profile
from engine.rules.perps import HoldTimeExitConfig
from engine.rules.profile import RiskProfile, load_profile
from engine.runtime import SAMPLE_CONFIG, run_replay
from storage.journal import read_table
from storage.schemas import JOURNAL_TABLES, NONDETERMINISTIC_COLUMNS
from tests.support.tapes import two_symbol_tape

pytestmark = pytest.mark.slow

# the column of `exit_reason` in rows read with deterministic_only=True
EXIT_REASON = [name for name in JOURNAL_TABLES["trades"].names
               if name not in NONDETERMINISTIC_COLUMNS].index("exit_reason")


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
    # trades columns: entry_ts 3, exit_ts 4, exit_reason 14
    by_rule = [row for row in first["trades"] if row[EXIT_REASON] == "risk:hold_time_exit"]
    assert by_rule, "some round trips must end by the rule's flatten"
    for trade in by_rule:  # closed at the first 1-second check past 5 s, filled after latency
        assert 5 * 10**9 <= trade[4] - trade[3] <= 7 * 10**9, trade
    assert all(row[4] - row[3] < 7 * 10**9 for row in first["trades"])  # none outlives it
    assert _replay_with_time_exit(tmp_path / "b.duckdb") == first


@pytest.mark.usefixtures("ray_session")
def test_flattens_are_identical_with_ray_actors(tmp_path: Path) -> None:
    assert _replay_with_time_exit(tmp_path / "ray.duckdb", in_process=False) == \
        _replay_with_time_exit(tmp_path / "local.duckdb")


def _ema_cross_with_time_exit(tape: Path, journal: Path,
                              check_timeframe: str | None) -> list[tuple[object, ...]]:
    config = parse_config({
        "name": "check_cadence", "timeframes": ["1m", "5m"],
        "strategy": {"kind": "ema_cross", "timeframe": "5m", "fast_period": 3,
                     "slow_period": 8, "quantity": 0.5},
        "replay": {"batch_rows": 40_000, "batch_duration": "30m"},
    })
    profile = RiskProfile(name="cadence", rules=(
        *default_profile(config.risk).rules, HoldTimeExitConfig(max_hold_seconds=120.0)))
    risk = config.risk.model_copy(update={"profile": profile, "check_timeframe": check_timeframe})
    run_replay([tape], config.model_copy(update={"risk": risk}), journal, in_process=True)
    return read_table(journal, "trades", deterministic_only=True)


def test_a_shorter_check_timeframe_makes_flattens_prompt(tmp_path: Path, klines_csv: Path) -> None:
    """Under 5-minute bars a 120 s time exit waits for the next 5-minute close (entries fill just
    after one, so about 5 minutes in); with `check_timeframe: 1m` it closes at the first 1-minute
    close past 120 s (about 3 minutes in)."""
    tape = two_symbol_tape(klines_csv, tmp_path / "tape", minutes=240)
    minute = 60 * 10**9
    for check, (low, high) in ((None, (4.9, 5.1)), ("1m", (2.9, 3.1))):
        trades = _ema_cross_with_time_exit(tape, tmp_path / f"{check}.duckdb", check)
        durations = [(int(row[4]) - int(row[3])) / minute  # exit_ts - entry_ts, in minutes
                     for row in trades if row[EXIT_REASON] == "risk:hold_time_exit"]
        assert len(durations) >= 5, (check, durations)
        assert all(low <= duration <= high for duration in durations), (check, durations)
    with pytest.raises(ValueError, match="check_timeframe '15m' is not computed"):
        parse_config({"timeframes": ["1m", "5m"], "risk": {"check_timeframe": "15m"},
                      "strategy": {"kind": "ema_cross", "timeframe": "5m"}})
