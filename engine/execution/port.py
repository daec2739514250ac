"""What a symbol's order flow needs from live execution, the same in process and over Ray.

`ExecutionPort` is the narrow surface: place an order, hold a protective stop on the venue,
cancel, and refresh orders still working. Answers are `VenueReport`s (plain, picklable values),
never live objects, so the in-process `LocalExecutionPort` and the Ray `RayExecutionPort`
(`actors.execution_actor`) are interchangeable. Errors stay `ExecutionError`s: a blocked venue
(not reconciled, HALTED, an order of unknown outcome) raises, and the caller fails closed.

`WatchdogThread` polls `LiveExecution.check_watchdog` wherever the execution lives, so a hung or
dead strategy is flattened even when nobody calls in.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from engine.orders import ManagedOrder

if TYPE_CHECKING:
    from engine.execution.live import LiveExecution

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VenueReport:
    """One order as the venue last reported it: cumulative fill, average price, fees so far."""

    client_order_id: str
    order_id: str
    state: str
    quantity: float
    filled_quantity: float
    average_fill_price: float
    fees: float
    final: bool  # no more fills will come (filled, cancelled, rejected, expired)
    detail: str = ""  # the reason of the last state change


def report_of(order: ManagedOrder) -> VenueReport:
    """The report of a `ManagedOrder` in its current state."""
    detail = order.history[-1].reason if order.history else ""
    return VenueReport(order.client_order_id, order.order_id, order.state.value, order.quantity,
                       order.filled_quantity, order.average_fill_price, order.fees,
                       order.is_terminal, detail)


class ExecutionPort(Protocol):
    """The live execution a symbol's order flow sends approved orders to."""

    def place(self, symbol: str, side: int, quantity: float, reduce_only: bool, purpose: str,
              order_id: str, intent_id: str | None) -> VenueReport: ...

    def place_stop(self, symbol: str, side: int, quantity: float, stop_price: float,
                   order_id: str) -> VenueReport: ...

    def cancel(self, client_order_id: str) -> VenueReport: ...

    def refresh(self, client_order_ids: list[str]) -> list[VenueReport]: ...

    def position(self, symbol: str) -> float | None: ...


class LocalExecutionPort:
    """`ExecutionPort` over a `LiveExecution` in this process; also what the run's session and
    the operator's kill reach (`kill`, `reset_halt`)."""

    def __init__(self, execution: LiveExecution) -> None:
        self.execution = execution

    def place(self, symbol: str, side: int, quantity: float, reduce_only: bool, purpose: str,
              order_id: str, intent_id: str | None) -> VenueReport:
        return report_of(self.execution.place(symbol, side, quantity, "market", None,
                                              reduce_only, purpose, order_id, intent_id))

    def place_stop(self, symbol: str, side: int, quantity: float, stop_price: float,
                   order_id: str) -> VenueReport:
        return report_of(self.execution.place_stop(symbol, side, quantity, stop_price,
                                                   order_id=order_id))

    def cancel(self, client_order_id: str) -> VenueReport:
        return report_of(self.execution.cancel(client_order_id))

    def refresh(self, client_order_ids: list[str]) -> list[VenueReport]:
        return [report_of(order) for order in self.execution.refresh(client_order_ids)]

    def position(self, symbol: str) -> float | None:
        return self.execution.position(symbol)

    # the session's and the operator's side
    def reconcile(self) -> dict[str, Any]:
        return self.execution.reconcile()

    def heartbeat(self) -> None:
        self.execution.heartbeat()

    def kill(self, reason: str = "kill switch") -> dict[str, Any]:
        return self.execution.kill(reason)

    def reset_halt(self) -> None:
        self.execution.reset_halt()

    def status(self) -> dict[str, Any]:
        return self.execution.status()

    def drain_journal(self) -> dict[str, list[dict[str, Any]]]:
        return self.execution.drain_journal()


class WatchdogThread:
    """Calls `check_watchdog` every `poll_s` while trading is ready, until `stop()`."""

    def __init__(self, execution: LiveExecution, poll_s: float = 1.0) -> None:
        self._execution = execution
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ats-watchdog", daemon=True)

    def start(self) -> WatchdogThread:
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                if self._execution.ready:
                    self._execution.check_watchdog()
            except Exception as error:  # keep watching; the error is already redacted
                log.error("watchdog check failed: %s", error)

    def stop(self) -> None:
        self._stop.set()


__all__ = ["ExecutionPort", "LocalExecutionPort", "VenueReport", "WatchdogThread", "report_of"]
