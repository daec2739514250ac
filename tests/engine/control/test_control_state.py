"""ControlState: pure transitions, atomic persistence, fail-closed loading, asset matching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.control.commands import ControlCommand, ResetHalt, parse_command
from engine.control.state import (
    ControlState,
    _state_from_json,
    apply_command,
    asset_matches,
    base_asset,
    load_control_state,
    save_control_state,
    settle,
)


def run(*lines: str, state: ControlState | None = None) -> ControlState:
    state = state or ControlState()
    for line in lines:
        state = apply_command(state, parse_command(line.split())).state
    return state


def test_pause_resume_and_the_halt_that_only_reset_halt_clears() -> None:
    state = run("pause")
    assert state.paused and not state.halted
    state = run("resume", state=state)
    assert not state.paused
    state = run("kill fat finger", state=state)
    assert state.halted and state.halt_reason == "fat finger"
    assert [(r.kind, r.target) for r in state.exits] == [("kill", "*")]
    for line in ("resume", "pause", "close-all", "unblacklist BTC", "set-max-risk off", "status"):
        state = run(line, state=state)
        assert state.halted, line
    applied = apply_command(state, parse_command(["resume"]))
    assert "still HALTED" in applied.message
    cleared = apply_command(state, ResetHalt())
    assert cleared.changed and not cleared.state.halted and cleared.state.resets == 1


def test_reset_halt_when_not_halted_is_unchanged_but_still_counted() -> None:
    applied = apply_command(ControlState(), ResetHalt())
    assert not applied.changed
    assert applied.state.resets == 1  # it also clears halts that risk rules set


def test_blacklist_force_exit_and_exit_requests() -> None:
    state = run("blacklist doge", "blacklist btc", "blacklist doge")
    assert state.blacklist == ("BTC", "DOGE")
    assert state.blacklisted("BTCUSDT") == "BTC" and state.blacklisted("ETHUSDT") is None
    again = apply_command(state, parse_command(["blacklist", "DOGE"]))
    assert not again.changed
    state = run("force-exit ETH", "close-position SOLUSDT", "close-all", state=state)
    assert state.blacklist == ("BTC", "DOGE", "ETH")
    assert [(r.request_id, r.kind, r.target) for r in state.exits] == [
        (1, "force_exit", "ETH"), (2, "close_position", "SOLUSDT"), (3, "close_all", "*")]
    state = settle(state, [1, 3])
    assert [r.request_id for r in state.exits] == [2]
    assert state.next_request_id == 4
    state = run("unblacklist eth", state=state)
    assert state.blacklist == ("BTC", "DOGE")
    assert not apply_command(state, parse_command(["unblacklist", "XRP"])).changed


def test_set_max_risk() -> None:
    state = run("set-max-risk 0.5")
    assert state.max_risk_fraction == pytest.approx(0.005)
    assert not apply_command(state, parse_command(["set-max-risk", "0.5%"])).changed
    assert run("set-max-risk off", state=state).max_risk_fraction is None


def test_assets_match_symbols_in_every_form() -> None:
    assert base_asset("BTCUSDT") == "BTC" and base_asset("BTC/USDT:USDT") == "BTC"
    assert base_asset("UNIUSD-SWAP") == "UNI" and base_asset("ETHBTC") == "ETH"
    assert base_asset("XYZ") is None
    assert asset_matches("BTC", "BTCFDUSD") and asset_matches("BTCUSDT", "BTC/USDT:USDT")
    assert not asset_matches("BTC", "ETHBTC") and not asset_matches("BT", "BTCUSDT")


def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "control" / "state.json"
    assert load_control_state(path) == ControlState()  # no file: nothing decided yet
    state = run("pause", "blacklist doge", "set-max-risk 0.25", "close-position BTCUSDT",
                "kill venue down")
    save_control_state(path, state)
    assert load_control_state(path) == state
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary left


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"format": 99}),
        json.dumps({**ControlState().to_json(), "max_risk_fraction": 0.5}),
        json.dumps({**ControlState().to_json(), "paused": "no"}),
        json.dumps({**ControlState().to_json(), "blacklist": ["bad name!"]}),
        json.dumps({k: v for k, v in ControlState().to_json().items() if k != "halted"}),
    ],
)
def test_an_unreadable_file_loads_halted(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    state = load_control_state(path)
    assert state.halted and "state.json unreadable" in state.halt_reason


COMMAND_LINES = st.sampled_from([
    "pause", "resume", "close-all", "close-position BTCUSDT", "set-max-risk 0.5",
    "set-max-risk 1.37", "set-max-risk off", "blacklist BTC", "unblacklist BTC",
    "blacklist ETHUSDT",
    "force-exit ETH", "kill oops", "reset-halt", "status",
])


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(COMMAND_LINES, max_size=25))
def test_any_sequence_round_trips_and_only_reset_halt_clears_a_halt(lines: list[str]) -> None:
    state = ControlState()
    for line in lines:
        command: ControlCommand = parse_command(line.split())
        after = apply_command(state, command).state
        if state.halted and not after.halted:
            assert isinstance(command, ResetHalt)
        if command.verb == "kill":
            assert after.halted
        ids = [request.request_id for request in after.exits]
        assert ids == sorted(set(ids)) and all(i < after.next_request_id for i in ids)
        assert list(after.blacklist) == sorted(set(after.blacklist))
        state = after
    assert _state_from_json(json.loads(json.dumps(state.to_json()))) == state
