"""ExecutionActor: the thin Ray shell around `engine.execution.LiveExecution`.

Only reads (`status`, `resolve_unknown`) are retried by Ray (`@ray.method(max_task_retries=3)`:
their effect is the same however often they run); `place`, `cancel`, `kill` and the rest are
never retried: a lost reply must be resolved by querying the venue, not by sending again. The
actor runs a daemon thread that calls the local watchdog every `watchdog_poll_s` while trading is
ready, so a silent strategy is flattened even if nobody calls in; `max_concurrency=2` lets that
thread's work and a call interleave under LiveExecution's lock.
Credentials come from the worker's environment (the variables named in the config).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from engine.execution import ExecutionConfig, LiveExecution

log = logging.getLogger(__name__)


@ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)
class ExecutionActor:
    def __init__(self, config: ExecutionConfig, watchdog_poll_s: float = 1.0) -> None:
        self._execution = LiveExecution(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(watchdog_poll_s,), daemon=True)
        self._thread.start()

    def _watch(self, poll_s: float) -> None:
        while not self._stop.wait(poll_s):
            try:
                if self._execution.ready:
                    self._execution.check_watchdog()
            except Exception as error:  # keep watching; the error is already redacted
                log.error("watchdog check failed: %s", error)

    def reconcile(self) -> dict[str, Any]:
        return self._execution.reconcile()

    def place(self, symbol: str, side: int, quantity: float, order_type: str = "market",
              price: float | None = None, reduce_only: bool = False) -> dict[str, Any]:
        order = self._execution.place(symbol, side, quantity, order_type, price, reduce_only)
        return {"client_order_id": order.client_order_id, "state": order.state.value,
                "filled_quantity": order.filled_quantity}

    def place_stop(self, symbol: str, side: int, quantity: float, stop_price: float,
                   take_profit: bool = False) -> dict[str, Any]:
        order = self._execution.place_stop(symbol, side, quantity, stop_price, take_profit)
        return {"client_order_id": order.client_order_id, "state": order.state.value}

    def cancel(self, client_order_id: str) -> str:
        return self._execution.cancel(client_order_id).state.value

    def heartbeat(self) -> None:
        self._execution.heartbeat()

    def kill(self, reason: str = "kill switch") -> dict[str, Any]:
        return self._execution.kill(reason)

    def reset_halt(self) -> None:
        self._execution.reset_halt()

    @ray.method(max_task_retries=3)
    def status(self) -> dict[str, Any]:
        return self._execution.status()

    @ray.method(max_task_retries=3)
    def resolve_unknown(self) -> list[str]:
        return [order.client_order_id for order in self._execution.resolve_unknown()]

    def drain_journal(self) -> dict[str, list[dict[str, Any]]]:
        return self._execution.drain_journal()

    def stop(self) -> None:
        self._stop.set()
