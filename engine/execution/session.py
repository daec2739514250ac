"""`LiveSession`: a live-trading run's hold on the venue, the same for both supervisors.

- `start` refuses to trade unless every run symbol maps to a venue symbol, reconciliation
  succeeded, the venue is not HALTED, and the venue holds no position and no open order on those
  symbols: the engine starts flat and knows every order it owns. What the venue holds is named
  in the error so the operator can close it (`ats control` has no view of orders it did not
  place).
- `tick` tells the dead-man switch the run is alive, at most every `heartbeat_interval_s`; it is
  called from the stepping path, so a hung pipeline stops the heartbeats and the watchdog
  flattens.
- `drain_journal` returns the execution's `orders` and `execution_events` rows for the journal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from engine.execution.config import LiveTradingConfig
from engine.execution.errors import ExecutionError, TradingBlockedError


class SessionTarget(Protocol):
    """The execution calls a session makes (`LocalExecutionPort`, `RayExecutionPort`)."""

    def reconcile(self) -> dict[str, Any]: ...

    def heartbeat(self) -> None: ...

    def drain_journal(self) -> dict[str, list[dict[str, Any]]]: ...


class LiveSession:
    """Start checks, heartbeat pacing and journal draining of one live run (module docs)."""

    def __init__(self, settings: LiveTradingConfig, target: SessionTarget,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.target = target
        self.clock = clock
        self._last_heartbeat = -math.inf

    def start(self, symbols: Iterable[str]) -> dict[str, Any]:
        """Reconcile and check the venue is ready for a flat start; returns its status."""
        venue_symbols = {self.settings.venue_symbol(symbol) for symbol in symbols}
        status = self.target.reconcile()
        if status.get("halted"):
            raise TradingBlockedError(
                f"live execution is HALTED ({status.get('halt_reason')}); clear it with "
                "`ats control reset-halt` after checking the venue")
        held = {symbol: size for symbol, size in (status.get("positions") or {}).items()
                if symbol in venue_symbols and size}
        orders = list(status.get("open_orders") or [])
        if held or orders:
            raise ExecutionError(
                f"the venue holds positions {held} and open orders {orders} on the run's "
                "symbols; the engine starts flat: close them at the venue, then start again")
        if not status.get("ready"):
            raise TradingBlockedError("reconciliation did not make trading ready")
        self.tick(force=True)
        return status

    def tick(self, force: bool = False) -> bool:
        """Heartbeat if one is due (or `force`); True when one went out."""
        now = self.clock()
        if not force and now - self._last_heartbeat < self.settings.heartbeat_interval_s:
            return False
        self._last_heartbeat = now
        self.target.heartbeat()
        return True

    def drain_journal(self) -> dict[str, list[dict[str, Any]]]:
        return self.target.drain_journal()
