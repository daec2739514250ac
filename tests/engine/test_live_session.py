"""LiveSession: a live run starts only flat, reconciled and not HALTED, with every symbol mapped;
heartbeats are paced; LiveTradingConfig is strict about its symbol mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.execution.config import LiveTradingConfig
from engine.execution.errors import ExecutionError, TradingBlockedError
from engine.execution.session import LiveSession


class FakeTarget:
    def __init__(self, **status: Any) -> None:
        self.status = {"ready": True, "halted": False, "positions": {}, "open_orders": [],
                       **status}
        self.heartbeats = 0

    def reconcile(self) -> dict[str, Any]:
        return self.status

    def heartbeat(self) -> None:
        self.heartbeats += 1

    def drain_journal(self) -> dict[str, list[dict[str, Any]]]:
        return {"orders": [], "execution_events": []}


def _settings(tmp_path: Path) -> LiveTradingConfig:
    return LiveTradingConfig.model_validate({
        "symbols": {"BTCUSDT": "BTC/USDT:USDT"},
        "venue": {"run_id": "acct", "state_file": str(tmp_path / "state.json")},
        "heartbeat_interval_s": 10.0})


def test_start_refuses_halted_held_or_unmapped(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(TradingBlockedError, match="reset-halt"):
        LiveSession(settings, FakeTarget(halted=True, halt_reason="kill")).start(["BTCUSDT"])
    held = FakeTarget(positions={"BTC/USDT:USDT": 0.5})
    with pytest.raises(ExecutionError, match="starts flat"):
        LiveSession(settings, held).start(["BTCUSDT"])
    with pytest.raises(ExecutionError, match="open orders"):
        LiveSession(settings, FakeTarget(open_orders=["abc"])).start(["BTCUSDT"])
    with pytest.raises(ValueError, match="ETHUSDT has no venue symbol"):
        LiveSession(settings, FakeTarget()).start(["BTCUSDT", "ETHUSDT"])
    assert held.heartbeats == 0


def test_heartbeats_are_paced(tmp_path: Path) -> None:
    now = [0.0]
    target = FakeTarget()
    session = LiveSession(_settings(tmp_path), target, clock=lambda: now[0])
    session.start(["BTCUSDT"])
    assert target.heartbeats == 1
    now[0] = 9.0
    assert not session.tick() and target.heartbeats == 1
    now[0] = 10.5
    assert session.tick() and target.heartbeats == 2


def test_config_maps_symbols_strictly(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.venue.symbols == ("BTC/USDT:USDT",)  # filled from the mapping
    with pytest.raises(ValidationError, match="must be the symbols"):
        LiveTradingConfig.model_validate({
            "symbols": {"BTCUSDT": "BTC/USDT:USDT"},
            "venue": {"run_id": "a", "state_file": "s.json", "symbols": ["ETH/USDT:USDT"]}})
    with pytest.raises(ValidationError, match="two engine symbols"):
        LiveTradingConfig.model_validate({
            "symbols": {"BTCUSDT": "BTC/USDT:USDT", "XBTUSDT": "BTC/USDT:USDT"},
            "venue": {"run_id": "a", "state_file": "s.json"}})
