"""Live execution for a run's supervisor (`ats live --execute`), in process or as a Ray actor.

`LiveTrading` bundles what a supervisor holds while trading live: the execution port (for the
symbol engines, the operator's kill and reset-halt), the `LiveSession` (start checks,
heartbeat, journal rows) and how to stop it. `in_process` runs `LiveExecution` in the driver
with its own watchdog thread; `on_ray` starts an `ExecutionActor` whose watchdog runs in its
worker, so it still flattens if the driver dies. Neither exists in a replay: a replay never
reaches a venue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.execution.config import LiveTradingConfig
from engine.execution.session import LiveSession

_TRADING_COUNTERS = ("orders", "fills", "venue_refusals", "dead_letters")


@dataclass
class LiveTrading:
    settings: LiveTradingConfig
    port: Any  # LocalExecutionPort | RayExecutionPort: ExecutionPort plus kill and reset_halt
    session: LiveSession
    stop: Callable[[], None]

    def after_step(self, counters: Mapping[str, int]) -> dict[str, list[dict[str, Any]]]:
        """Heartbeat if due; the execution's new journal rows when the step traded (or a
        heartbeat went out), else nothing, which spares a call per market-data step."""
        beat = self.session.tick()
        if beat or any(counters.get(name) for name in _TRADING_COUNTERS):
            return self.journal_rows()
        return {}

    def journal_rows(self) -> dict[str, list[dict[str, Any]]]:
        """New `orders` and `execution_events` rows (only non-empty tables)."""
        return {name: rows for name, rows in self.session.drain_journal().items() if rows}


def in_process(settings: LiveTradingConfig) -> LiveTrading:
    """LiveExecution in this process, watched by a thread of this process."""
    from engine.execution.live import LiveExecution
    from engine.execution.port import LocalExecutionPort, WatchdogThread

    execution = LiveExecution(settings.venue)
    port = LocalExecutionPort(execution)
    watchdog = WatchdogThread(execution).start()
    return LiveTrading(settings, port, LiveSession(settings, port), watchdog.stop)


def on_ray(settings: LiveTradingConfig) -> LiveTrading:
    """An ExecutionActor; credentials come from the driver's environment variables named in
    the config, handed to the actor's worker only (not as a runtime_env, which the dashboard
    shows; never logged, never in the config)."""
    import os

    import ray

    from actors.execution_actor import Credentials, ExecutionActor, RayExecutionPort

    names = (settings.venue.api_key_env, settings.venue.api_secret_env)
    credentials = Credentials({name: os.environ[name] for name in names if name in os.environ})
    actor = ExecutionActor.remote(settings.venue, 1.0, credentials)  # type: ignore[attr-defined]
    port = RayExecutionPort(actor)

    def stop() -> None:
        try:
            port.stop()
        finally:
            ray.kill(actor)

    return LiveTrading(settings, port, LiveSession(settings, port), stop)
