"""Live execution through ccxt: venue client, error taxonomy, reconciliation, safety switches.

Ray-free; `actors.execution_actor.ExecutionActor` is its thin Ray shell. See `live` for the order
handling and safety rules, `errors` for the error taxonomy, `venue` for the ccxt client, `port`
for what the engine's order flow talks to, `session` for a live run's start, heartbeat and end.
The names below load on first use, so reading a run config does not import ccxt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the type checker sees the real names
    from engine.execution.config import ExecutionConfig, LiveTradingConfig
    from engine.execution.errors import (
        ExecutionError,
        TradingBlockedError,
        UnsafeApiKeyError,
        VenueError,
    )
    from engine.execution.live import LiveExecution
    from engine.execution.venue import VenueClient

_HOMES = {
    "ExecutionConfig": "engine.execution.config",
    "LiveTradingConfig": "engine.execution.config",
    "ExecutionError": "engine.execution.errors",
    "TradingBlockedError": "engine.execution.errors",
    "UnsafeApiKeyError": "engine.execution.errors",
    "VenueError": "engine.execution.errors",
    "LiveExecution": "engine.execution.live",
    "VenueClient": "engine.execution.venue",
}

__all__ = ["ExecutionConfig", "ExecutionError", "LiveExecution", "LiveTradingConfig",
           "TradingBlockedError", "UnsafeApiKeyError", "VenueClient", "VenueError"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'engine.execution' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
