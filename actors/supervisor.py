"""Supervisor: creates the run's actors, feeds them batches and orders cross-symbol decisions.

It lives in the driver process, next to the dataflow's sink. Each symbol's batches are stepped
through its SymbolActor one call per batch. Risk decisions are taken in (ts_event, symbol)
order as a stream processor aligns watermarks: a symbol may decide an intent at time t only when
every other symbol has processed all of its events before t (its watermark, or the time of the
intent it is paused at). The supervisor grants each step such a horizon; a step that reaches an
intent beyond it pauses and is resumed once the others have caught up. Single-symbol runs never
pause. Live mode decides in arrival order (DESIGN.md): every step gets an unbounded horizon.
Calls in flight are bounded: the sink blocks while too many batches are queued.

A dead symbol actor is brought back (`supervision` in the config). Every `checkpoint_every`
steps the supervisor takes the actor's checkpoint and forgets the calls before it. When a call
fails because the actor died, a new actor restores the checkpoint, replays the calls made since
(their results were already taken in; the risk actor answers an intent it has decided with the
same decision and the journal ignores rows it holds), and the failed call is sent again. The run
goes on as if nothing happened: its journal is the uninterrupted run's. Restarts are counted in
`actor_restarts`. A run that trades on a venue stops instead, and an error raised by the step
itself (not a death) is never retried.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray

from actors import live_trading
from actors.journal_actor import JournalActor
from actors.live_trading import LiveTrading
from actors.progress import (
    FINISH,
    FOREVER,
    SymbolProgress,
    count_dataflow_rows,
    count_features,
    count_step,
    horizon,
)
from actors.risk_actor import PortfolioRiskActor
from actors.symbol_actor import SymbolActor
from engine.batches import FeatureBatch
from engine.config import RunConfig
from engine.control.state import ControlState
from engine.feature_merge import merge_batches
from engine.latency import LatencyRecorder, receive_times
from engine.metrics import RunMetrics
from engine.rules.control import ControlEffect
from engine.symbol_engine import StepResult

__all__ = ["FOREVER", "Supervisor"]


@dataclass
class _SymbolState(SymbolProgress):
    actor: Any = None
    running: Any = None  # ObjectRef of the step in flight
    dispatched_at: float = 0.0
    in_flight_received: Any = None  # receive times of the batch in flight (latency probe)
    checkpoint: bytes | None = None  # the engine after the last checkpointed step (None: new)
    calls: list[tuple[Any, int]] = field(default_factory=list)  # (batch|None|FINISH, horizon)
    restarts: int = 0


class Supervisor:
    """Owns the JournalActor, the PortfolioRiskActor and one SymbolActor per symbol."""

    def __init__(
        self,
        config: RunConfig,
        symbols: Iterable[str],
        journal_path: str,
        run_id: str,
        metrics: RunMetrics | None = None,
        *,
        live: bool = False,
        latency: LatencyRecorder | None = None,
    ) -> None:
        self.config = config
        self.live = live  # live mode decides in arrival order: no horizon, no pauses
        self.latency = latency
        self.run_id = run_id
        self.metrics = metrics or RunMetrics()
        self.journal = JournalActor.options(name=f"journal-{run_id}").remote(journal_path, run_id)
        self.risk = PortfolioRiskActor.options(name=f"risk-{run_id}").remote(
            config.risk, config.initial_equity, self.journal
        )
        self._symbols: dict[str, _SymbolState] = {}
        for symbol in sorted(set(symbols)):
            actor = SymbolActor.options(name=f"symbol-{symbol}-{run_id}").remote(
                symbol, config, self.risk, self.journal
            )
            self._symbols[symbol] = _SymbolState(actor=actor)
        if not self._symbols:
            raise ValueError("a run needs at least one symbol")
        # `ats live --execute`: orders go to an ExecutionActor (a replay never reaches a venue)
        self.trading: LiveTrading | None = None
        if live and config.execution is not None:
            self.trading = live_trading.on_ray(config.execution)
        self._last_submit: Any = None
        self._closed = False
        self.step_calls = 0
        self.pauses = 0  # steps that stopped at the horizon and were resumed later
        # Live mode: the dataflow's thread only puts batches in `_inbox`; a dispatcher thread
        # owns the symbol states, sends steps and absorbs results as they complete, so the
        # dataflow never waits on Ray (only when `max_batches_in_flight` are waiting).
        self._inbox: deque[tuple[_SymbolState, Any, float]] = deque()
        self._room = threading.Condition()
        self._collector: threading.Thread | None = None
        self._collector_stop = threading.Event()
        self._work = threading.Event()  # set when a batch is handed over
        self._collector_error: BaseException | None = None
        if live:
            self._collector = threading.Thread(target=self._collect_forever,
                                               name="ats-supervisor-collector", daemon=True)
            self._collector.start()

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until every actor has started (live mode: before the feed opens)."""
        actors = [state.actor for state in self._symbols.values()] + [self.risk, self.journal]
        ray.get([actor.__ray_ready__.remote() for actor in actors], timeout=timeout_s)
        if self.trading is not None:
            settings, execution_actor = self.trading.settings, self.trading.port.actor
            ray.get([state.actor.attach_execution.remote(execution_actor, settings)
                     for state in self._symbols.values()], timeout=timeout_s)
            self.trading.session.start(self._symbols)

    @property
    def execution(self) -> Any:
        """What the operator's kill and reset-halt reach: the live execution, if trading."""
        return self.trading.port if self.trading is not None else None

    # ------------------------------------------------------------------ input from the dataflow

    def on_features(self, batch: FeatureBatch) -> None:
        state = self._symbols.get(batch.symbol)
        if state is None:
            raise KeyError(f"batch for symbol {batch.symbol!r}: not a symbol of this run")
        count_features(self.metrics, batch, self.live, self.latency)
        if self.live:
            self._enqueue_live(state, batch)
            return
        state.queue.append((batch, time.perf_counter()))
        self._pump(block_for_room=True)

    def on_journal_rows(self, rows_by_table: Mapping[str, list[dict[str, Any]]]) -> None:
        """Rows produced in the dataflow (dead letters, book events) go straight to the writer."""
        count_dataflow_rows(self.metrics, rows_by_table)
        if any(rows_by_table.values()):
            self.journal.append_many.remote(dict(rows_by_table))

    # ------------------------------------------------------------------ manual control

    def apply_control(self, state: ControlState, timeout_s: float = 30.0) -> ControlEffect:
        """The operator's state into the risk actor: one blocking call, which the actor runs
        between two decisions, so no decision sees half a state (`engine.control`)."""
        effect: ControlEffect = ray.get(self.risk.apply_control.remote(state), timeout=timeout_s)
        return effect

    def journal_control(self, rows: list[dict[str, Any]]) -> None:
        """`control_events` rows from the control channel's thread."""
        self.journal.append_many.remote({"control_events": rows})

    # ------------------------------------------------------------------ coordination

    def _horizon(self, symbol: str) -> int:
        return horizon(symbol, self._symbols, self.live)

    def _dependencies(self) -> tuple[Any, ...]:
        """Replay orders each step after the latest risk submit; live decides in arrival order
        and the risk actor applies what it has (approved orders are reserved before they fill),
        so a live step never waits for another actor's call."""
        if self.live or self._last_submit is None:
            return ()
        return (self._last_submit,)

    def _dispatch_ready(self) -> None:
        for symbol, state in self._symbols.items():
            if state.running is not None or state.finished:
                continue
            horizon = self._horizon(symbol)
            if state.paused:
                if state.pending_intent_ts < horizon:
                    state.running = self._call(state, None, horizon)
                    state.paused = False
                    self.step_calls += 1
                continue
            if not state.queue:
                continue
            item, queued_at = state.queue.popleft()
            state.dispatched_at = queued_at
            if self.latency is not None and isinstance(item, FeatureBatch):
                state.in_flight_received = receive_times(item)
            if item is FINISH:
                state.finishing = True
            state.running = self._call(state, item, horizon)
            self.step_calls += 1

    def _call(self, state: _SymbolState, item: Any, horizon: int) -> Any:
        """Send a step (a batch, or None to resume) or the finish, and log it for a restart."""
        state.calls.append((item, horizon))
        if item is FINISH:
            return state.actor.finish.remote(*self._dependencies())
        return state.actor.step.remote(item, horizon, *self._dependencies())

    # ------------------------------------------------------------------ live mode

    def _enqueue_live(self, state: _SymbolState, batch: FeatureBatch) -> None:
        """Hand the batch to the dispatcher; wait only while too many batches are waiting."""
        self._check_collector()
        self._inbox.append((state, batch, time.perf_counter()))
        self._work.set()
        limit = self.config.replay.max_batches_in_flight
        if len(self._inbox) + self._queued() >= limit:
            with self._room:
                while len(self._inbox) + self._queued() >= limit:
                    self._room.wait(0.05)
                    self._check_collector()

    def _take_inbox(self) -> None:
        """Move handed-over batches to their symbol; batches still waiting behind a busy
        symbol's step are merged into one (live batches are small and frequent)."""
        while self._inbox:
            state, batch, queued_at = self._inbox.popleft()
            if state.queue and state.running is not None:
                previous, first_queued_at = state.queue[-1]
                if isinstance(previous, FeatureBatch):
                    state.queue[-1] = (merge_batches([previous, batch]), first_queued_at)
                    continue
            state.queue.append((batch, queued_at))

    def _collect_forever(self) -> None:
        """The dispatcher: moves batches from the inbox to their symbol, sends each symbol's
        next step as soon as its previous one is done, absorbs results as they complete."""
        try:
            while not self._collector_stop.is_set():
                self._take_inbox()
                self._dispatch_ready()
                refs = [st.running for st in self._symbols.values() if st.running is not None]
                if not refs:
                    self._work.wait(0.05)
                    self._work.clear()
                    continue
                done, _ = ray.wait(refs, num_returns=1, timeout=0.002)
                if done:
                    self._absorb_refs(done)
                    with self._room:
                        self._room.notify_all()
        except BaseException as error:  # surfaced to the dataflow's thread, which stops the run
            self._collector_error = error
            with self._room:
                self._room.notify_all()

    def _check_collector(self) -> None:
        if self._collector_error is not None:
            raise RuntimeError("a symbol actor step failed") from self._collector_error

    def _stop_collector(self) -> None:
        if self._collector is not None:
            self._collector_stop.set()
            self._work.set()
            self._collector.join(30)
            self._collector = None

    # ------------------------------------------------------------------ results

    def _collect(self, timeout: float | None) -> bool:
        refs = [state.running for state in self._symbols.values() if state.running is not None]
        if not refs:
            return False
        done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        self._absorb_refs(done)
        return bool(done)

    def _absorb_refs(self, done: list[Any]) -> None:
        for ref in done:
            symbol, state = next((s, st) for s, st in self._symbols.items() if st.running == ref)
            try:
                result: StepResult = ray.get(ref)
            except ray.exceptions.RayActorError as error:
                state.running = self._restart(symbol, state, error)
                continue
            state.running = None
            self._absorb(symbol, state, result)
            self._checkpoint(symbol, state)

    # ------------------------------------------------------------------ supervision

    def _checkpoint(self, symbol: str, state: _SymbolState) -> None:
        """Every `checkpoint_every` calls, between batches: keep the engine, forget the calls."""
        if (state.paused or state.finished
                or len(state.calls) < self.config.supervision.checkpoint_every):
            return
        try:
            state.checkpoint = ray.get(state.actor.checkpoint.remote())
        except ray.exceptions.RayActorError as error:
            self._restart(symbol, state, error, in_flight=False)
            return
        state.calls.clear()

    def _restart(self, symbol: str, state: _SymbolState, error: Exception,
                 in_flight: bool = True) -> Any:
        """A new actor for `symbol` where the dead one was (module docs); returns the call in
        flight, sent again, or None."""
        limit = self.config.supervision.max_restarts
        if self.trading is not None or state.restarts >= limit:
            why = ("the run trades on a venue" if self.trading is not None
                   else f"it already restarted {state.restarts} times (max_restarts {limit})")
            raise RuntimeError(f"symbol actor {symbol} died and is not restarted: {why}"
                               ) from error
        state.restarts += 1
        self.metrics.add("actor_restarts", 1)
        actor = SymbolActor.options(name=f"symbol-{symbol}-{self.run_id}-r{state.restarts}"
                                    ).remote(symbol, self.config, self.risk, self.journal)
        if state.checkpoint is not None:
            ray.get(actor.restore.remote(state.checkpoint))
        state.actor = actor
        replayed = state.calls[:-1] if in_flight else state.calls
        for item, granted in replayed:  # already taken in: only the engine's state matters
            ray.get(actor.finish.remote() if item is FINISH else
                    actor.step.remote(item, granted))
        if not in_flight:
            return None
        item, granted = state.calls[-1]
        dependencies = self._dependencies()
        return (actor.finish.remote(*dependencies) if item is FINISH
                else actor.step.remote(item, granted, *dependencies))

    def _absorb(self, symbol: str, state: _SymbolState, result: StepResult) -> None:
        if result.updates:
            self._last_submit = self.risk.submit.remote(result.updates)
        count_step(self.metrics, result)
        if self.trading is not None:
            rows = self.trading.after_step(result.counters)
            if rows:
                self.journal.append_many.remote(rows)
        if result.paused:
            self.pauses += 1
        else:
            self.metrics.batch_latency.observe(time.perf_counter() - state.dispatched_at)
            if self.latency is not None and state.in_flight_received is not None:
                self.latency.decisions(state.in_flight_received)
                state.in_flight_received = None
        state.record(result)

    def _queued(self) -> int:
        return sum(len(state.queue) for state in self._symbols.values())

    def _pump(self, block_for_room: bool) -> None:
        limit = self.config.replay.max_batches_in_flight
        while True:
            self._dispatch_ready()
            collected = self._collect(timeout=0)
            if collected:
                continue
            if block_for_room and self._queued() >= limit and self._collect(timeout=None):
                continue
            return

    # ------------------------------------------------------------------ end of run

    def close(self) -> dict[str, Any]:
        """Drain every symbol, finish them, close risk and journal; return the run's summary."""
        if self._closed:
            raise RuntimeError("supervisor already closed")
        self._closed = True
        self._stop_collector()
        self._check_collector()
        self._take_inbox()
        for state in self._symbols.values():
            state.queue.append((FINISH, time.perf_counter()))
        while not all(state.finished for state in self._symbols.values()):
            self._dispatch_ready()
            if not self._collect(timeout=None):
                stuck = {s: (st.paused, st.pending_intent_ts) for s, st in self._symbols.items()}
                raise RuntimeError(f"replay cannot make progress; symbol states: {stuck}")
        if self._last_submit is not None:
            ray.get(self._last_submit)
        portfolio = ray.get(self.risk.finish.remote())
        if self.trading is not None:
            self.journal.append_many.remote(self.trading.journal_rows())
        rows_written = ray.get(self.journal.close.remote())
        self._stop_actors()  # a long-lived cluster must not keep a finished run's processes
        return {"portfolio": portfolio, "rows_written": rows_written}

    def abort(self, timeout_s: float = 30.0) -> None:
        """After a failure: keep what the journal already has (flush and close it), then stop
        every actor. Never raises, so the original error is what the caller sees."""
        self._closed = True
        self._stop_collector()
        try:
            ray.get(self.journal.close.remote(), timeout=timeout_s)
        except Exception:  # best effort on the failure path
            pass
        self._stop_actors()

    def _stop_actors(self) -> None:
        if self.trading is not None:
            try:
                self.trading.stop()
            except Exception:  # already gone
                pass
        for actor in [state.actor for state in self._symbols.values()] + [self.risk, self.journal]:
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass
