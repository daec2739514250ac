"""The manual_control rule through PortfolioRisk and the Controller: pause, blacklist, max risk,
exit requests, kill and reset-halt, and all of it again after a restart from the state file."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from engine.config import RiskConfig
from engine.control.commands import parse_command
from engine.control.controller import Controller
from engine.risk import PortfolioRisk
from engine.rules.control import ManualControl, ManualRiskCap
from engine.rules.profile import RiskProfile
from engine.timeframes import NS_PER_DAY, NS_PER_HOUR
from engine.types import Fill, OrderIntent, intent_id_for, order_id_for

DAY0 = 20_000 * NS_PER_DAY
EQUITY = 100_000.0
_sequence = iter(range(1_000, 10**9))


def intent(symbol: str = "BTCUSDT", side: int = 1, quantity: float | None = None,
           price: float = 100.0, stop: float | None = 98.0,
           reduce_only: bool = False) -> OrderIntent:
    sequence = next(_sequence)
    return OrderIntent(
        intent_id=intent_id_for(symbol, sequence), symbol=symbol,
        ts_event=DAY0 + NS_PER_HOUR + sequence, sequence=sequence, side=side,
        intent_kind="exit" if reduce_only else "entry", reduce_only=reduce_only,
        quantity=quantity, reference_price=price, stop_price=stop, reason="test")


def fill(symbol: str, side: int, quantity: float, price: float = 100.0) -> Fill:
    sequence = next(_sequence)
    return Fill(
        fill_id=f"{symbol}:f{sequence}", order_id=order_id_for(symbol, sequence), symbol=symbol,
        ts_event=DAY0 + NS_PER_HOUR + sequence, sequence=sequence, side=side, quantity=quantity,
        price=price, reference_price=price, fee=0.0, liquidity="taker", slippage_bps=0.0,
        latency_ms=0.0, stop_price=price * (1 - 0.02 * side))


class Engine:
    """A PortfolioRisk behind a Controller, restartable from the same state file."""

    def __init__(self, state_file: Path, execution: Any = None,
                 config: RiskConfig | None = None) -> None:
        self.risk = PortfolioRisk(config or RiskConfig(), EQUITY)
        self.rows: list[dict[str, Any]] = []
        self.controller = Controller(state_file, self.risk, execution, self.rows.extend)
        self.controller.start()

    def command(self, line: str, who: str = "alice") -> dict[str, Any]:
        return self.controller.execute(parse_command(line.split()), who)

    def decide(self, order: OrderIntent) -> tuple[bool, float, str, str]:
        decision = self.risk.decide(order)
        return decision.approved, decision.quantity, decision.rule, decision.reason

    def hold(self, symbol: str, side: int, quantity: float) -> None:
        self.risk.submit([fill(symbol, side, quantity)])
        self.risk.apply_all()


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "control_state.json"


def test_pause_blocks_entries_while_exits_pass(state_file: Path) -> None:
    engine = Engine(state_file)
    engine.hold("BTCUSDT", 1, 10.0)
    assert engine.command("pause")["result"] == "applied"
    approved, _, rule, reason = engine.decide(intent())
    assert not approved and rule == "manual_control" and "paused by the operator" in reason
    approved, quantity, rule, _ = engine.decide(intent(side=-1, quantity=10.0, reduce_only=True))
    assert approved and quantity == 10.0 and rule == "reduce_only"
    assert engine.command("pause")["result"] == "unchanged"
    engine.command("resume")
    assert engine.decide(intent("ETHUSDT"))[0]


def test_blacklist_refuses_the_asset_in_any_symbol_form(state_file: Path) -> None:
    engine = Engine(state_file)
    engine.command("blacklist btc")
    approved, _, rule, reason = engine.decide(intent("BTCUSDT"))
    assert not approved and rule == "manual_control" and "blacklisted" in reason
    assert not engine.decide(intent("BTCFDUSD"))[0]
    assert engine.decide(intent("ETHUSDT"))[0]
    engine.command("unblacklist BTC")
    assert engine.decide(intent("BTCUSDT"))[0]


def test_set_max_risk_caps_risk_sized_entries_and_refuses_larger_fixed_ones(
        state_file: Path) -> None:
    engine = Engine(state_file)
    approved, quantity, _, _ = engine.decide(intent(symbol="AAAUSDT"))
    assert approved and quantity == pytest.approx(500.0)  # 1% of 100k over a stop of 2
    engine.command("set-max-risk 0.5")
    approved, quantity, rule, reason = engine.decide(intent(symbol="BBBUSDT"))
    assert approved and rule == "manual_control" and "capped" in reason
    assert quantity * 2.0 <= 0.005 * EQUITY * (1 + 1e-9)
    assert quantity == pytest.approx(250.0)
    approved, _, rule, reason = engine.decide(intent(symbol="CCCUSDT", quantity=400.0))
    assert not approved and rule == "manual_control" and "fixed quantity" in reason
    assert engine.decide(intent(symbol="DDDUSDT", quantity=100.0))[0]
    engine.command("set-max-risk off")
    assert engine.decide(intent(symbol="EEEUSDT"))[1] == pytest.approx(500.0)


def test_close_requests_become_flatten_actions_and_settle_when_flat(state_file: Path) -> None:
    engine = Engine(state_file)
    engine.hold("BTCUSDT", 1, 5.0)
    engine.hold("ETHUSDT", -1, 7.0)
    engine.risk.drain_actions()
    answer = engine.command("force-exit eth")
    actions = engine.risk.drain_actions()
    assert [(a.kind, a.symbol, a.rule) for a in actions] == [
        ("flatten_symbol", "ETHUSDT", "manual_control")]
    assert [r["target"] for r in answer["state"]["exits"]] == ["ETH"]
    assert not engine.decide(intent("ETHUSDT"))[0]  # force-exit also blacklists
    engine.command("close-position BTCUSDT")
    assert [(a.kind, a.symbol) for a in engine.risk.drain_actions()] == [
        ("flatten_symbol", "BTCUSDT")]
    engine.controller.refresh()
    assert engine.risk.drain_actions() == []  # issued once, not on every refresh
    assert len(engine.controller.state.exits) == 2
    engine.hold("ETHUSDT", 1, 7.0)  # the engine closed it
    engine.controller.refresh()
    assert [r.target for r in engine.controller.state.exits] == ["BTCUSDT"]
    engine.command("close-all")
    assert [a.kind for a in engine.risk.drain_actions()] == ["flatten_all"]
    events = engine.risk.drain_journal()["risk_events"]
    assert {(row["rule"], row["kind"]) for row in events} == {
        ("manual_control", "flatten_symbol"), ("manual_control", "flatten_all")}


class RecordingExecution:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def kill(self, reason: str = "kill switch") -> dict[str, Any]:
        self.calls.append(f"kill:{reason}")
        if self.fail:
            raise RuntimeError("venue unreachable")
        return {}

    def reset_halt(self) -> None:
        self.calls.append("reset_halt")


def test_kill_halts_survives_a_restart_and_only_reset_halt_clears_it(state_file: Path) -> None:
    execution = RecordingExecution()
    engine = Engine(state_file, execution)
    engine.hold("BTCUSDT", 1, 3.0)
    answer = engine.command("kill fat finger", who="bob")
    assert answer["result"] == "applied" and answer["state"]["halted"]
    assert execution.calls == ["kill:fat finger"]
    assert engine.risk.halted and "fat finger" in engine.risk.halt_reason
    assert [a.kind for a in engine.risk.drain_actions()] == ["halt", "flatten_all"]
    assert not engine.decide(intent("ETHUSDT"))[0]
    assert engine.decide(intent(side=-1, quantity=3.0, reduce_only=True))[0]

    restarted = Engine(state_file, RecordingExecution())  # a fresh engine, same file
    assert restarted.risk.halted
    approved, _, rule, reason = restarted.decide(intent("ETHUSDT"))
    assert not approved and rule == "manual_control" and "only `ats control reset-halt`" in reason
    restarted.risk.reset_halt()  # a rule-level reset (e.g. the actor's resume) is not enough
    assert not restarted.decide(intent("ETHUSDT"))[0]
    for line in ("resume", "pause", "close-all"):
        restarted.command(line)
    restarted.command("resume")
    assert not restarted.decide(intent("ETHUSDT"))[0]
    assert restarted.controller.execution is not None

    answer = restarted.command("reset-halt")
    assert answer["result"] == "applied" and not answer["state"]["halted"]
    assert not restarted.risk.halted and restarted.decide(intent("ETHUSDT"))[0]
    assert restarted.controller.execution.calls == ["kill:fat finger", "reset_halt"]  # type: ignore[attr-defined]
    assert not Engine(state_file).risk.halted


def test_reset_halt_also_clears_a_halt_that_a_risk_rule_set(state_file: Path) -> None:
    engine = Engine(state_file)
    engine.risk.halt("drawdown kill switch")
    assert not engine.decide(intent())[0]
    assert engine.command("reset-halt")["result"] == "unchanged"
    assert engine.decide(intent())[0]


def test_a_failed_execution_kill_is_reported_and_the_halt_still_persisted(
        state_file: Path) -> None:
    engine = Engine(state_file, RecordingExecution(fail=True))
    answer = engine.command("kill")
    assert answer["result"] == "failed" and "venue unreachable" in answer["message"]
    assert Engine(state_file).risk.halted
    assert engine.rows[-1]["result"] == "failed" and engine.rows[-1]["command"] == "kill"


def test_journal_rows_name_who_when_and_what(state_file: Path) -> None:
    engine = Engine(state_file)
    engine.hold("BTCUSDT", 1, 1.0)
    engine.command("set-max-risk 0.5", who="carol")
    start, row = engine.rows[0], engine.rows[-1]
    assert start["who"] == "engine" and start["command"] == "start"
    assert row["who"] == "carol" and row["command"] == "set-max-risk"
    assert row["argument"] == "0.5%" and row["result"] == "applied"
    assert row["ts_wall"] > 0 and row["ts_event"] > DAY0
    assert len({r["key"] for r in engine.rows}) == len(engine.rows)


def test_every_profile_runs_exactly_one_control_pair_and_pickles(state_file: Path) -> None:
    profile = RiskProfile.model_validate({"name": "p", "rules": [
        {"rule": "fixed_fractional"}, {"rule": "manual_control"}]})
    risk = PortfolioRisk(RiskConfig(profile=profile), EQUITY)
    kinds = [type(rule) for rule in risk.rules]
    assert kinds.count(ManualControl) == 1 and kinds.count(ManualRiskCap) == 1
    assert kinds[0] is ManualControl and kinds[-1] is ManualRiskCap
    engine = Engine(state_file)
    engine.command("set-max-risk 0.5")
    copy = pickle.loads(pickle.dumps(engine.risk))
    assert copy.control.limit.control is copy.control
    assert copy.decide(intent("ZZZUSDT")).quantity == pytest.approx(250.0)


def test_without_a_writable_state_file_only_tightening_commands_apply(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    engine = Engine(tmp_path / "state.json")
    engine.command("blacklist doge")
    engine.controller.state_file = blocker / "state.json"
    answer = engine.command("pause")
    assert answer["result"] == "failed" and "in force only until the engine stops" in \
        answer["message"]
    assert engine.risk.control.state.paused and not engine.decide(intent())[0]
    with pytest.raises(OSError):
        engine.command("unblacklist DOGE")
    assert engine.risk.control.state.blacklist == ("DOGE",)
    assert engine.rows[-1]["result"] == "failed"
    assert "not applied" in engine.rows[-1]["detail"]


def test_a_halt_a_risk_rule_took_is_persisted_until_reset_halt(tmp_path: Path) -> None:
    """A rule's kill switch (here the drawdown kill of perps_hft, simulated by its halt) must hold
    after a restart like an operator kill: the controller's refresh persists it."""
    state_file = tmp_path / "control.json"
    rows: list[dict[str, Any]] = []
    risk = PortfolioRisk(RiskConfig(), EQUITY)
    controller = Controller(state_file, risk, journal=rows.extend)
    controller.start()
    controller.refresh()
    assert not controller.state.halted  # nothing to persist yet
    risk.halt("drawdown_kill_switch: drawdown 5.10% reached the 5.00% kill level")
    controller.refresh()
    assert controller.state.halted and "drawdown_kill_switch" in controller.state.halt_reason
    assert any(row["who"] == "engine" and row["command"] == "halt" for row in rows)

    restarted = PortfolioRisk(RiskConfig(), EQUITY)  # a new process: only the file remains
    again = Controller(state_file, restarted)
    again.start()
    assert restarted.halted
    assert not restarted.decide(intent()).approved
    assert again.execute(parse_command(["reset-halt"]), "ops")["result"] == "applied"
    assert not restarted.halted and not again.state.halted
    assert restarted.decide(intent()).approved
