"""`ats live --paper` with the control channel: the persisted operator state holds from the first
frame, and `ats control` commands reach the running engine's risk (actor or in process) and
its journal."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from dataflows.live.replay_server import ReplayServer
from engine.cli import main
from engine.config import ControlConfig, LiveConfig, load_config
from engine.control.channel import ControlChannelError, send_command
from engine.control.state import ControlState, load_control_state, save_control_state
from engine.runtime import SAMPLE_CONFIG, run_live
from storage.journal import read_table

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]
TOKEN = "live-control-canary-7e6d5c4b3a29"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _operator(url: str, stop: threading.Event, answers: list[object]) -> None:
    """Wait for the channel, then pause and kill the engine through the CLI; stop the run."""
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                answers.append(send_command(url, ["status"], "ops", TOKEN, timeout_s=5)[1])
                break
            except ControlChannelError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        answers.append(main(["control", "--url", url, "--who", "ops", "pause"]))
        time.sleep(2.0)
        answers.append(main(["control", "--url", url, "--who", "ops", "kill", "test", "over"]))
    except BaseException as error:
        answers.append(error)
    finally:
        stop.set()


@pytest.mark.parametrize("actors", ["ray", "in_process"])
def test_live_paper_obeys_the_persisted_state_and_the_operator(
        actors: str, tmp_path: Path, spot_captures: list[Path],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATS_CONTROL_TOKEN", TOKEN)
    state_file = tmp_path / "control_state.json"
    save_control_state(state_file, ControlState(blacklist=("BTC",)))  # as a previous run left it
    port = _free_port()
    journal = tmp_path / "live.duckdb"
    with ReplayServer(spot_captures[:1], speed=50.0).running() as server:
        server.start()
        config = load_config(SAMPLE_CONFIG).model_copy(update={
            "live": LiveConfig(ws_url=server.ws_url, rest_url=server.rest_url,
                               stale_after_s=60.0),
            "control": ControlConfig(enabled=True, port=port, state_file=state_file),
            "actors": actors})
        stop = threading.Event()
        answers: list[object] = []
        operator = threading.Thread(target=_operator,
                                    args=(f"http://127.0.0.1:{port}", stop, answers))
        operator.start()
        result = run_live(["BTCUSDT"], config, journal, stop=stop)
        operator.join(30)
    assert not any(isinstance(answer, BaseException) for answer in answers), answers
    status = answers[0]
    assert isinstance(status, dict) and status["state"]["blacklist"] == ["BTC"]
    assert answers[1:] == [0, 0]
    assert result.timings["control_port"] == port
    rows = read_table(journal, "control_events")
    assert [(row[4], row[5], row[7]) for row in rows if row[4] != "engine"] == [
        ("ops", "status", "applied"), ("ops", "pause", "applied"), ("ops", "kill", "applied")]
    assert any(row[4] == "engine" and row[5] == "start" for row in rows)
    events = {(row[4], row[5]) for row in read_table(journal, "risk_events")}
    assert {("manual_control", "halt"), ("manual_control", "flatten_all")} <= events
    for decision in read_table(journal, "risk_decisions"):
        approved, reduce_only, rule = decision[11], decision[8], decision[12]
        assert reduce_only or not approved, decision
        assert reduce_only or rule in ("manual_control", "kill_switch", "stale_data"), decision
    persisted = load_control_state(state_file)
    assert persisted.halted and persisted.paused and persisted.blacklist == ("BTC",)
    assert TOKEN not in capsys.readouterr().out
