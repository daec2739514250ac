"""The rule framework: profiles load strictly, the chain runs stages in order and notes every
change, PortfolioRisk shows rules every event (round trips, days, API calls) and acts on their
actions, and the scenario runner journals what triggered."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from engine.cli import main
from engine.config import RiskConfig
from engine.risk import PortfolioRisk
from engine.rules.base import (
    ApiCallObserved,
    DayStarted,
    PortfolioSnapshot,
    Proposal,
    RiskAction,
    RiskEvent,
    RiskRule,
    RuleOutcome,
    Stage,
    TradeClosed,
)
from engine.rules.core import default_profile
from engine.rules.profile import RiskProfile, load_profile
from engine.rules.scenario import ScenarioError, run_scenario, write_journal
from engine.timeframes import NS_PER_DAY, NS_PER_HOUR
from engine.types import POSITION_CHECK, Fill, OrderIntent
from storage.journal import read_table

DAY0 = 20_000 * NS_PER_DAY

PROFILE = """
name: smoke
description: a small profile for tests
rules:
  - rule: kill_switch
  - rule: daily_loss_limit
    limit_pct: 0.03
  - rule: max_open_positions
    limit: 1
  - rule: fixed_fractional
    risk_pct: 0.01
  - rule: portfolio_heat
    limit_pct: 0.05
"""


def write_profile(tmp_path: Path, text: str = PROFILE) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def intent(symbol: str = "AAA", ts: int = DAY0 + NS_PER_HOUR, sequence: int = 1,
           side: int = 1, quantity: float | None = None, price: float = 100.0,
           stop: float | None = 98.0, reduce_only: bool = False) -> OrderIntent:
    return OrderIntent(f"{symbol}:i{sequence}", symbol, ts, sequence, side, "entry", reduce_only,
                       quantity, price, stop)


def fill(order_id: str, ts: int, sequence: int, side: int, quantity: float, price: float,
         fee: float = 0.0, stop: float | None = None, symbol: str = "AAA") -> Fill:
    return Fill(f"f{sequence}", order_id, symbol, ts, sequence, side, quantity, price, price, fee,
                "taker", 0.0, 0.0, stop)


# ------------------------------------------------------------------ profiles


def test_profile_loads_and_builds_in_stage_order(tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path)))
    assert profile.rule_names == ("kill_switch", "daily_loss_limit", "max_open_positions",
                                  "fixed_fractional", "portfolio_heat")
    stages = [rule.stage for rule in profile.build()]
    assert stages == ["gate", "gate", "gate", "size", "limit"]
    assert profile.build()[0] is not profile.build()[0]  # fresh state per PortfolioRisk


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("  - rule: no_such_rule\n", "entry 0: unknown rule 'no_such_rule'"),
        ("  - rule: daily_loss_limit\n    limit_pct: 2\n", "entry 0 (daily_loss_limit): limit_pct"),
        ("  - rule: kill_switch\n    typo: 1\n", "entry 0 (kill_switch): typo"),
        ("  - rule: kill_switch\n  - rule: kill_switch\n", "rules listed twice: kill_switch"),
        ("  - 7\n", "entry 0 must be a mapping with a `rule` key"),
    ],
)
def test_profile_errors_name_the_entry_and_key(tmp_path: Path, rules: str, message: str) -> None:
    path = write_profile(tmp_path, "name: broken\nrules:\n" + rules)
    with pytest.raises(ValueError, match="invalid risk profile") as error:
        load_profile(str(path))
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_missing_profile_lists_the_bundled_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read risk profile"):
        load_profile(str(tmp_path / "absent.yaml"))
    with pytest.raises(ValueError, match="top level must be a mapping"):
        load_profile(str(write_profile(tmp_path, "- 1\n")))


def test_run_config_takes_a_profile_by_path_or_inline(tmp_path: Path) -> None:
    path = write_profile(tmp_path)
    by_path = RiskConfig.model_validate({"profile": str(path)})
    assert by_path.profile is not None and by_path.profile.name == "smoke"
    inline = RiskConfig.model_validate(
        {"profile": {"name": "inline", "rules": [{"rule": "kill_switch"}]}})
    assert inline.profile is not None and inline.profile.rule_names == ("kill_switch",)
    assert PortfolioRisk(inline, 1000.0).profile.name == "inline"
    with pytest.raises(ValueError, match="unknown rule"):
        RiskConfig.model_validate({"profile": {"name": "x", "rules": [{"rule": "nope"}]}})


def test_default_profile_mirrors_the_flat_settings() -> None:
    config = RiskConfig(risk_per_trade=0.02, max_open_positions=3, max_portfolio_heat=0.04,
                        daily_loss_limit=0.05, max_leverage=2.0, default_stop_pct=0.01)
    profile = default_profile(config)
    assert profile.rule_names == ("kill_switch", "stale_data", "daily_loss_limit", "net_flip",
                                  "max_open_positions", "fixed_fractional", "portfolio_heat",
                                  "max_leverage")
    assert profile.default_stop_pct == 0.01
    assert "limit=3" in repr(profile.build()[4]) and "risk_pct=0.02" in repr(profile.build()[5])


# ------------------------------------------------------------------ the chain inside PortfolioRisk


@dataclass
class Halve(RiskRule):
    name: ClassVar[str] = "halve"
    stage: ClassVar[Stage] = "size"

    def check(self, proposal: Proposal, snapshot: PortfolioSnapshot) -> RuleOutcome:
        assert proposal.quantity is not None
        return self.sized(proposal.quantity / 2, "half size")


@dataclass
class Recorder(RiskRule):
    """Records every event; halts on the first failed API call; counts manual resets."""

    name: ClassVar[str] = "recorder"
    events: list[RiskEvent] = field(default_factory=list)
    resets: int = 0

    def observe(self, event: RiskEvent, snapshot: PortfolioSnapshot) -> Sequence[RiskAction]:
        self.events.append(event)
        if isinstance(event, ApiCallObserved) and not event.ok:
            return (RiskAction("halt", self.name, f"{event.what} failed"),
                    RiskAction("flatten_all", self.name, "close everything"))
        return ()

    def manual_reset(self) -> None:
        self.resets += 1


def test_size_modifiers_are_noted_and_limits_cap_after_them(tmp_path: Path) -> None:
    risk = PortfolioRisk(RiskConfig(profile=load_profile(str(write_profile(tmp_path)))), 100_000)
    rules = risk.rules
    after_sizer = [rule.name for rule in rules].index("fixed_fractional") + 1
    risk.rules = [*rules[:after_sizer], Halve(), *rules[after_sizer:]]
    decision = risk.decide(intent())
    # 1% of 100k over a 2.0 stop = 500, halved = 250; heat 250 x 2 = 500 < 5% of 100k
    assert decision.approved and decision.quantity == pytest.approx(250.0)
    assert decision.rule == "halve"
    row = risk.drain_journal()["risk_decisions"][0]
    assert row["rules_applied"].split(" | ") == [
        "fixed_fractional: 1.00% of equity 100000.00 over stop distance 2",
        "halve: half size",
    ]


def test_round_trips_days_and_api_calls_reach_rules() -> None:
    risk = PortfolioRisk(RiskConfig(), 10_000.0)
    recorder = Recorder()
    risk.rules.append(recorder)
    entry = intent(quantity=10.0, stop=98.0)
    assert risk.decide(entry).approved
    risk.submit([fill(entry.order_id, DAY0 + 2 * NS_PER_HOUR, 2, 1, 10.0, 100.0, fee=1.0,
                      stop=98.0),
                 fill("AAA:exit", DAY0 + NS_PER_DAY + NS_PER_HOUR, 3, -1, 10.0, 103.0, fee=1.0)])
    risk.apply_all()
    closed = [event for event in recorder.events if isinstance(event, TradeClosed)]
    assert len(closed) == 1
    # 10 x 3 = 30 gross, 2 of fees; initial risk 10 x 2 = 20
    assert closed[0].pnl == pytest.approx(28.0) and closed[0].fees == pytest.approx(2.0)
    assert closed[0].r_multiple == pytest.approx(1.4) and closed[0].won
    days = [event for event in recorder.events if isinstance(event, DayStarted)]
    assert [day.day for day in days] == [20_000, 20_001]
    assert days[1].previous_day_pnl == pytest.approx(-1.0)  # the entry fee
    risk.submit([fill("AAA:again", DAY0 + NS_PER_DAY + 90 * 60 * 10**9, 4, 1, 5.0, 103.0)])
    risk.apply_all()
    risk.observe_api_call(DAY0 + NS_PER_DAY + 2 * NS_PER_HOUR, ok=False, what="create_order")
    assert risk.halted and "create_order failed" in risk.halt_reason
    assert [action.kind for action in risk.drain_actions()] == ["halt", "flatten_all"]
    assert risk.drain_actions() == []
    events = risk.drain_journal()["risk_events"]
    assert [(row["rule"], row["kind"]) for row in events] == [
        ("recorder", "halt"), ("recorder", "flatten_all")]
    assert len({row["key"] for row in events}) == 2
    rejected = risk.decide(intent(ts=DAY0 + NS_PER_DAY + 3 * NS_PER_HOUR, sequence=9))
    assert not rejected.approved and rejected.rule == "kill_switch"
    exit_intent = intent(ts=DAY0 + NS_PER_DAY + 3 * NS_PER_HOUR, sequence=10, side=-1,
                         quantity=1.0, reduce_only=True)
    assert risk.decide(exit_intent).approved  # exits pass while halted
    risk.reset_halt()
    assert not risk.halted and recorder.resets == 1
    assert pickle.loads(pickle.dumps(risk)).summary() == risk.summary()


def test_a_flip_closes_one_round_trip_and_opens_the_next() -> None:
    risk = PortfolioRisk(RiskConfig(), 10_000.0)
    recorder = Recorder()
    risk.rules.append(recorder)
    risk.submit([fill("a", DAY0 + 1, 1, 1, 2.0, 100.0, stop=99.0),
                 fill("b", DAY0 + 2, 2, -1, 5.0, 98.0, stop=99.0),
                 fill("c", DAY0 + 3, 3, 1, 3.0, 97.0)])
    risk.apply_all()
    closed = [event for event in recorder.events if isinstance(event, TradeClosed)]
    assert [trade.pnl for trade in closed] == pytest.approx([-4.0, 3.0])
    assert [trade.initial_risk for trade in closed] == pytest.approx([2.0, 3.0])


# ------------------------------------------------------------------ scenarios

SCENARIO = """
name: smoke
profile: {profile}
initial_equity: 100000
start: "2024-03-01T00:00:00Z"
expect_rules: [daily_loss_limit, max_open_positions, fixed_fractional]
steps:
  - {{at: 0, mark: {{symbol: BTCUSDT, price: 60000}}}}
  - {{at: 60, intent: {{symbol: BTCUSDT, side: 1, price: 60000, stop: 59400,
                       expect: fixed_fractional}}}}
  - {{at: 61, fill: {{symbol: BTCUSDT, quantity: approved, price: 60000, fee: 3,
                     stop_price: 59400}}}}
  - {{at: 62, intent: {{symbol: ETHUSDT, side: 1, price: 3000, stop: 2900,
                       expect: max_open_positions}}}}
  - {{at: 120, fill: {{symbol: BTCUSDT, quantity: position, price: 56000}}}}
  - {{at: 130, intent: {{symbol: ETHUSDT, side: 1, price: 3000, stop: 2900,
                        expect: daily_loss_limit}}}}
"""


def write_scenario(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO.format(profile=write_profile(tmp_path)) + extra)
    return path


def test_scenario_triggers_and_journals_every_expected_rule(tmp_path: Path) -> None:
    scenario = str(write_scenario(tmp_path))
    result = run_scenario(scenario)
    assert result.ok, (result.mismatches, result.missing_rules)
    assert result.triggered == {"daily_loss_limit": 2, "fixed_fractional": 1,
                                "max_open_positions": 1}
    journal = tmp_path / "journal.duckdb"
    write_journal(result, journal)
    decisions = read_table(journal, "risk_decisions", deterministic_only=True)
    assert [row[11] for row in decisions] == ["fixed_fractional", "max_open_positions",
                                              "daily_loss_limit"]
    events = read_table(journal, "risk_events", deterministic_only=True)
    assert [(row[3], row[4]) for row in events] == [("daily_loss_limit", "block_entries")]
    assert "3.00% limit" in events[0][5]
    again = run_scenario(scenario)
    assert again.journal == result.journal


def test_scenario_reports_what_did_not_happen(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "  - {at: 140, intent: {symbol: SOLUSDT, side: 1, price: 150,"
                                    " stop: 140, expect: approve}}\n")
    text = path.read_text().replace("fixed_fractional]", "fixed_fractional, portfolio_heat]")
    path.write_text(text)
    result = run_scenario(str(path))
    assert not result.ok
    assert result.missing_rules == ["portfolio_heat"]
    assert len(result.mismatches) == 1 and "expected approve, got rejected by daily_loss_limit" \
        in result.mismatches[0]
    assert main(["risk", "scenario", str(path)]) == 1


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("  - {at: 500, fill: {symbol: SOLUSDT, quantity: approved, price: 1}}\n",
         "no approved entry on SOLUSDT"),
        ("  - {at: 300}\n", "needs exactly one of"),
        ("  - {at: 200, mark: {symbol: BTCUSDT, price: .nan}}\n", "'price' must be a finite"),
    ],
)
def test_bad_scenarios_name_the_step(tmp_path: Path, step: str, message: str) -> None:
    path = write_scenario(tmp_path, step)
    with pytest.raises(ScenarioError, match=message):
        run_scenario(str(path))
    lines = path.read_text().splitlines()
    lines.insert(lines.index("steps:") + 2, "  - {at: -10, mark: {symbol: X, price: 1}}")
    path.write_text("\n".join(lines))
    with pytest.raises(ScenarioError, match="step 1: `at` goes back in time"):
        run_scenario(str(path))


def test_cli_shows_a_profile_and_runs_a_scenario(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["risk", "show", str(write_profile(tmp_path))]) == 0
    shown = capsys.readouterr().out
    assert "[size ] FixedFractional(risk_pct=0.01, cap_given_quantity=False)" in shown
    journal = tmp_path / "out.duckdb"
    assert main(["risk", "scenario", str(write_scenario(tmp_path)), "--journal", str(journal)]) == 0
    out = capsys.readouterr().out
    assert "max_open_positions" in out and "FAIL" not in out
    assert len(read_table(journal, "risk_decisions")) == 3


def test_profile_object_round_trips_through_its_dump(tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path)))
    assert RiskProfile.model_validate(profile.model_dump()) == profile


def test_position_checks_hand_each_flatten_to_its_symbol_once() -> None:
    risk = PortfolioRisk(RiskConfig(), 100_000.0)
    recorder = Recorder()
    risk.rules.append(recorder)
    risk.submit([fill("a", DAY0 + 1, 1, 1, 10.0, 100.0, stop=98.0),
                 fill("b", DAY0 + 2, 2, -1, 5.0, 50.0, stop=51.0, symbol="BBB"),
                 fill("c", DAY0 + 3, 3, 1, 5.0, 20.0, stop=19.0, symbol="CCC")])
    risk.apply_all()
    risk.submit([fill("c2", DAY0 + 4, 4, -1, 5.0, 20.0, symbol="CCC")])  # CCC goes flat later

    def check(symbol: str, sequence: int) -> str:
        probe = OrderIntent(f"{symbol}:i{sequence}", symbol, DAY0 + 10 + sequence, sequence, 1,
                            POSITION_CHECK, False, None, 100.0, None)
        decision = risk.decide(probe)
        assert not decision.approved and decision.rule == POSITION_CHECK
        return decision.directive

    assert check("AAA", 1) == ""  # nothing asked yet
    risk.observe_api_call(DAY0 + 5, ok=False, what="create_order")  # the recorder: flatten_all
    assert check("AAA", 2).startswith("recorder: close everything")
    assert check("AAA", 3) == ""  # handed over once
    assert check("BBB", 4).startswith("recorder: close everything")
    assert check("CCC", 5) == ""  # flat by then: nothing to close
    assert risk.drain_journal()["risk_decisions"] == []  # checks are not decisions
