"""`ats control` end to end: the CLI (in-process `main`) against a running control server, over
a PortfolioRisk and, for the kill switch, a LiveExecution on the local Binance server."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.config import RiskConfig
from engine.control.channel import ControlServer
from engine.control.cli import default_url
from engine.control.controller import Controller
from engine.execution import LiveExecution
from engine.execution.state_file import load_state
from engine.risk import PortfolioRisk
from tests.engine.live_execution_helpers import (
    BTC,
    ETH,
    assert_no_secret,
    make_config,
    use_canary_credentials,
)
from tests.support.binance_trading_server import (
    BinanceTradingServer,
    FakeClock,
    binance_trading_server,
    reset_server,
)

TOKEN = "cli-canary-token-0a9b8c7d6e5f"


def _engine(state_file: Path, execution: Any = None) -> tuple[ControlServer, PortfolioRisk]:
    risk = PortfolioRisk(RiskConfig(), 100_000.0)
    controller = Controller(state_file, risk, execution)
    controller.start()
    return ControlServer(controller, "127.0.0.1", 0, refresh_s=0.05).start(), risk


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ATS_CONTROL_TOKEN", TOKEN)
    return TOKEN


def ats_control(url: str, *words: str, who: str = "alice") -> int:
    return main(["control", "--url", url, "--who", who, *words])


def test_cli_commands_change_the_running_engine(token: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    server, risk = _engine(tmp_path / "state.json")
    try:
        assert ats_control(server.url, "set-max-risk", "0.5") == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["result"] == "applied"
        assert answer["state"]["max_risk_fraction"] == pytest.approx(0.005)
        assert risk.control.state.max_risk_fraction == pytest.approx(0.005)
        assert ats_control(server.url, "pause") == 0
        assert json.loads(capsys.readouterr().out)["result"] == "applied"
        assert ats_control(server.url, "pause") == 0  # unchanged is not an error
        assert json.loads(capsys.readouterr().out)["result"] == "unchanged"
        assert risk.control.state.paused
        assert ats_control(server.url, "status") == 0
        assert json.loads(capsys.readouterr().out)["state"]["paused"] is True
    finally:
        server.stop()


def test_cli_errors_have_their_own_exit_status(token: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = _engine(tmp_path / "state.json")
    try:
        assert ats_control(server.url, "set-max-risk", "50") == 2
        assert "set-max-risk PCT '50'" in capsys.readouterr().err
        assert ats_control(server.url) == 2
        assert "no command given" in capsys.readouterr().err
        monkeypatch.setenv("ATS_CONTROL_TOKEN", TOKEN + "-wrong")
        assert ats_control(server.url, "pause") == 1
        captured = capsys.readouterr()
        assert "wrong token" in captured.err and TOKEN not in captured.out + captured.err
        monkeypatch.delenv("ATS_CONTROL_TOKEN")
        assert ats_control(server.url, "pause") == 2
        assert "ATS_CONTROL_TOKEN is not set" in capsys.readouterr().err
    finally:
        server.stop()
    monkeypatch.setenv("ATS_CONTROL_TOKEN", TOKEN)
    assert ats_control(server.url, "status") == 2
    assert "no engine control channel answering" in capsys.readouterr().err


def test_default_url_comes_from_the_config(tmp_path: Path) -> None:
    assert default_url(None) == "http://127.0.0.1:8787"
    config = tmp_path / "run.yaml"
    config.write_text("control:\n  port: 9911\n  host: localhost\n")
    assert default_url(str(config)) == "http://localhost:9911"
    config.write_text("control:\n  host: 10.0.0.5\n")
    with pytest.raises(ValueError, match=r"control\.host"):
        default_url(str(config))


@pytest.fixture(scope="module")
def binance() -> Iterator[BinanceTradingServer]:
    with binance_trading_server() as running:
        yield running


@pytest.mark.slow
def test_cli_kill_flattens_the_venue_and_halts_until_reset_halt(
        token: str, binance: BinanceTradingServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    reset_server(binance, clock)
    use_canary_credentials(monkeypatch, binance)
    caplog.set_level(logging.DEBUG)
    config = make_config(binance, tmp_path / "execution.json")
    execution = LiveExecution(config, clock=clock)
    execution.reconcile()
    execution.place(BTC, 1, 0.05)
    execution.place_stop(BTC, -1, 0.05, stop_price=55_000.0)
    execution.place(ETH, -1, 0.2, "limit", price=3_000.0)
    state_file = tmp_path / "control_state.json"
    server, risk = _engine(state_file, execution)
    try:
        assert ats_control(server.url, "kill", "operator", "test", who="bob") == 0
    finally:
        server.stop()
    assert binance.venue.open_orders(None, algo=False) == []
    assert binance.venue.open_orders(None, algo=True) == []
    assert all(position.amount == 0 for position in binance.venue.positions.values())
    assert load_state(tmp_path / "execution.json").halted
    assert risk.halted

    restarted = LiveExecution(config, clock=clock)  # a restart: HALTED from both files
    assert restarted.reconcile()["ready"] is False
    server, risk = _engine(state_file, restarted)
    try:
        assert risk.halted
        assert ats_control(server.url, "resume") == 0
        assert restarted.halted and risk.halted
        assert ats_control(server.url, "reset-halt") == 0
    finally:
        server.stop()
    assert not restarted.halted and not load_state(tmp_path / "execution.json").halted
    assert not risk.halted
    assert restarted.reconcile()["ready"] is True
    output = capsys.readouterr()
    assert_no_secret(caplog.text, output.out, output.err)
    assert TOKEN not in caplog.text + output.out + output.err


def test_live_with_control_refuses_to_start_without_a_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.config import ControlConfig, RunConfig
    from engine.runtime import run_live

    control = ControlConfig(enabled=True, state_file=tmp_path / "state.json")
    config = RunConfig(control=control)
    monkeypatch.delenv("ATS_CONTROL_TOKEN", raising=False)
    with pytest.raises(ValueError, match="ATS_CONTROL_TOKEN is not set"):
        run_live(["BTCUSDT"], config, tmp_path / "journal.duckdb")
    assert not (tmp_path / "journal.duckdb").exists()
