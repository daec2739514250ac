"""ExecutionActor: the thin Ray shell around `engine.execution.LiveExecution`.

Only reads (`status`, `refresh`, `resolve_unknown`) are retried by Ray
(`@ray.method(max_task_retries=3)`: their effect is the same however often they run); `place`,
`cancel`, `kill` and the rest are never retried: a lost reply must be resolved by querying the
venue, not by sending again. The actor runs a `WatchdogThread`, so a silent strategy is flattened
even if nobody calls in; `max_concurrency=2` lets that thread's work and a call interleave under
LiveExecution's lock. Credentials come from the worker's environment (the variables named in the
config).

`RayExecutionPort` is the `engine.execution.port.ExecutionPort` the symbol actors and the
supervisor use to reach it: one blocking call per order, which is rare next to market data.
"""

from __future__ import annotations

import os
from typing import Any

import ray

from engine.execution import ExecutionConfig, LiveExecution
from engine.execution.errors import ExecutionError
from engine.execution.port import LocalExecutionPort, VenueReport, WatchdogThread, report_of


class Credentials:
    """Environment variables for the actor's worker, handed over as a creation argument rather
    than a runtime_env (which the Ray dashboard displays); its repr never shows the values."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    def __repr__(self) -> str:
        return f"Credentials({sorted(self._values)}, values hidden)"

    def install(self) -> None:
        os.environ.update(self._values)


@ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)
class ExecutionActor:
    def __init__(self, config: ExecutionConfig, watchdog_poll_s: float = 1.0,
                 credentials: Credentials | None = None) -> None:
        if credentials is not None:
            credentials.install()
        self._execution = LiveExecution(config)
        self._port = LocalExecutionPort(self._execution)
        self._watchdog = WatchdogThread(self._execution, watchdog_poll_s).start()

    def reconcile(self) -> dict[str, Any]:
        return self._execution.reconcile()

    def place(self, symbol: str, side: int, quantity: float, order_type: str = "market",
              price: float | None = None, reduce_only: bool = False, purpose: str = "e",
              order_id: str = "", intent_id: str | None = None) -> VenueReport:
        return report_of(self._execution.place(symbol, side, quantity, order_type, price,
                                               reduce_only, purpose, order_id, intent_id))

    def place_stop(self, symbol: str, side: int, quantity: float, stop_price: float,
                   take_profit: bool = False, order_id: str = "") -> VenueReport:
        return report_of(self._execution.place_stop(symbol, side, quantity, stop_price,
                                                    take_profit, order_id=order_id))

    def cancel(self, client_order_id: str) -> VenueReport:
        return self._port.cancel(client_order_id)

    @ray.method(max_task_retries=3)
    def refresh(self, client_order_ids: list[str]) -> list[VenueReport]:
        return self._port.refresh(client_order_ids)

    @ray.method(max_task_retries=3)
    def position(self, symbol: str) -> float | None:
        return self._execution.position(symbol)

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
        self._watchdog.stop()


class RayExecutionPort:
    """`ExecutionPort` (and the session's and operator's calls) over an `ExecutionActor`.

    Errors arrive as the `ExecutionError` the actor raised; anything else that fails a call (the
    actor died, an unexpected error) becomes an `ExecutionError` too, so the order flow fails
    closed on it exactly as in process."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self._heartbeat: Any = None

    def _get(self, reference: Any) -> Any:
        try:
            return ray.get(reference)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, ExecutionError):
                raise cause from None
            raise ExecutionError(f"execution actor call failed: {type(cause).__name__}") from None
        except ray.exceptions.RayActorError:
            raise ExecutionError("the execution actor is gone") from None

    def place(self, symbol: str, side: int, quantity: float, reduce_only: bool, purpose: str,
              order_id: str, intent_id: str | None) -> VenueReport:
        report: VenueReport = self._get(self.actor.place.remote(
            symbol, side, quantity, "market", None, reduce_only, purpose, order_id, intent_id))
        return report

    def place_stop(self, symbol: str, side: int, quantity: float, stop_price: float,
                   order_id: str) -> VenueReport:
        report: VenueReport = self._get(self.actor.place_stop.remote(
            symbol, side, quantity, stop_price, False, order_id))
        return report

    def cancel(self, client_order_id: str) -> VenueReport:
        report: VenueReport = self._get(self.actor.cancel.remote(client_order_id))
        return report

    def refresh(self, client_order_ids: list[str]) -> list[VenueReport]:
        reports: list[VenueReport] = self._get(self.actor.refresh.remote(client_order_ids))
        return reports

    def position(self, symbol: str) -> float | None:
        size: float | None = self._get(self.actor.position.remote(symbol))
        return size

    def reconcile(self) -> dict[str, Any]:
        status: dict[str, Any] = ray.get(self.actor.reconcile.remote())
        return status

    def heartbeat(self) -> None:
        """Sent without waiting (the stepping path must not stall on the venue's countdown
        call); a failure of the previous heartbeat is raised here."""
        previous, self._heartbeat = self._heartbeat, self.actor.heartbeat.remote()
        if previous is not None:
            ready, _ = ray.wait([previous], timeout=0)
            if ready:
                ray.get(previous)

    def kill(self, reason: str = "kill switch") -> dict[str, Any]:
        status: dict[str, Any] = ray.get(self.actor.kill.remote(reason))
        return status

    def reset_halt(self) -> None:
        ray.get(self.actor.reset_halt.remote())

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = ray.get(self.actor.status.remote())
        return status

    def drain_journal(self) -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = ray.get(self.actor.drain_journal.remote())
        return rows

    def stop(self) -> None:
        ray.get(self.actor.stop.remote())
