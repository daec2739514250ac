"""Shared pieces of the live-execution tests: config, environment, the canary check."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import pytest

from engine.execution import ExecutionConfig
from tests.support.binance_trading_server import CANARY_SECRET, TEST_API_KEY, BinanceTradingServer

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"


def make_config(server: BinanceTradingServer, state_file: Path,
                **overrides: Any) -> ExecutionConfig:
    settings: dict[str, Any] = {
        "run_id": "live-test", "state_file": state_file, "symbols": (BTC, ETH),
        "urls": server.urls(), "timeout_ms": 400, "retry_backoff_s": 0.01,
        "countdown_cancel_ms": 0,
    }
    settings.update(overrides)
    return ExecutionConfig(**settings)


def use_canary_credentials(monkeypatch: pytest.MonkeyPatch, server: BinanceTradingServer) -> None:
    """The venue signs with the canary secret; the engine reads it from the environment."""
    server.api_key = TEST_API_KEY
    server.secret = CANARY_SECRET
    monkeypatch.setenv("ATS_BINANCE_KEY", TEST_API_KEY)
    monkeypatch.setenv("ATS_BINANCE_SECRET", CANARY_SECRET)


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        rendered = "".join(traceback.format_exception(text)) if isinstance(
            text, BaseException) else str(text)
        assert CANARY_SECRET not in rendered
        assert TEST_API_KEY not in rendered
