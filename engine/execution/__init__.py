"""Live execution through ccxt: venue client, error taxonomy, reconciliation, safety switches.

Ray-free; `actors.execution_actor.ExecutionActor` is its thin Ray shell. See `live` for the order
handling and safety rules, `errors` for the error taxonomy, `venue` for the ccxt client.
"""

from engine.execution.config import ExecutionConfig
from engine.execution.errors import (
           ExecutionError,
           TradingBlockedError,
           UnsafeApiKeyError,
           VenueError,
)
from engine.execution.live import LiveExecution
from engine.execution.venue import VenueClient

__all__ = ["ExecutionConfig", "ExecutionError", "LiveExecution", "TradingBlockedError",
           "UnsafeApiKeyError", "VenueClient", "VenueError"]
