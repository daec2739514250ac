"""InProcessSupervisor: the Supervisor's contract with the engine objects in the driver process.

The Ray supervisor puts every symbol's `SymbolEngine`, the `PortfolioRisk` and the journal
writer in actors; this one holds the very same objects in the dataflow's process and steps them
synchronously, in the order the Ray supervisor would release them (`actors.progress`). A replay
journals exactly what the actor run journals (a test compares them). What it trades away is
what Ray gives: no dashboard, no actor isolation, one process. What it wins is latency: a live
batch is decided in the sink call that delivered it, with no actor round trips and no Ray workers
competing for the cores, which is what a small machine needs to stay within a few milliseconds
of the socket (`ats bench live` measures both). Choose it with `actors: in_process` in the run
config or `--in-process`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from actors import live_trading
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
from engine.batches import FeatureBatch
from engine.config import RunConfig
from engine.control.state import ControlState
from engine.feature_rows import add_feature_rows
from engine.latency import LatencyRecorder, receive_times
from engine.metrics import RunMetrics
from engine.risk import LocalGateway, PortfolioRisk
from engine.rules.control import ControlEffect
from engine.symbol_engine import StepResult, SymbolEngine
from storage.journal import JournalWriter

_RISK_ROWS_PER_FLUSH = 2_000


class InProcessSupervisor:
    """Owns one SymbolEngine per symbol, the PortfolioRisk and the JournalWriter of a run."""

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
        self.live = live
        self.latency = latency
        self.metrics = metrics or RunMetrics()
        self.writer = JournalWriter(journal_path, run_id)
        self.risk = PortfolioRisk(config.risk, config.initial_equity)
        self._gateway = LocalGateway(self.risk)
        self._engines = {symbol: SymbolEngine(symbol, config) for symbol in sorted(set(symbols))}
        if not self._engines:
            raise ValueError("a run needs at least one symbol")
        self._progress = {symbol: SymbolProgress() for symbol in self._engines}
        # `ats live --execute`: orders go to a venue (a replay never does)
        self.trading: LiveTrading | None = None
        if live and config.execution is not None:
            self.trading = live_trading.in_process(config.execution)
            for engine in self._engines.values():
                engine.attach_execution(self.trading.port, config.execution)
        self._feature_timeframe = (
            config.strategy.timeframe if config.replay.journal_features else None
        )
        self._decisions_since_flush = 0
        # the dataflow's thread steps the engines; the control channel's thread reaches risk and
        # the journal between two steps, never during one
        self._lock = threading.RLock()
        self._closed = False
        self.step_calls = 0
        self.pauses = 0

    @property
    def execution(self) -> Any:
        """What the operator's kill and reset-halt reach: the live execution, if trading."""
        return self.trading.port if self.trading is not None else None

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """The engines exist once constructed; a live-trading run reconciles with the venue
        and checks it may start (`LiveSession.start`) before the feed opens."""
        if self.trading is not None:
            self.trading.session.start(self._engines)

    # ------------------------------------------------------------------ input from the dataflow

    def on_features(self, batch: FeatureBatch) -> None:
        progress = self._progress.get(batch.symbol)
        if progress is None:
            raise KeyError(f"batch for symbol {batch.symbol!r}: not a symbol of this run")
        count_features(self.metrics, batch, self.live, self.latency)
        with self._lock:
            progress.queue.append(batch)
            self._run_ready()

    def on_journal_rows(self, rows_by_table: Mapping[str, list[dict[str, Any]]]) -> None:
        count_dataflow_rows(self.metrics, rows_by_table)
        if any(rows_by_table.values()):
            with self._lock:
                self.writer.append_many(rows_by_table)

    # ------------------------------------------------------------------ manual control

    def apply_control(self, state: ControlState) -> ControlEffect:
        """The operator's state into risk (`engine.control`), between two steps."""
        with self._lock:
            return self.risk.apply_control(state)

    def journal_control(self, rows: list[dict[str, Any]]) -> None:
        """`control_events` rows from the control channel's thread."""
        with self._lock:
            if not self._closed:
                self.writer.append_many({"control_events": rows})

    # ------------------------------------------------------------------ stepping

    def _run_ready(self) -> None:
        """Step every symbol that can go, until none can (all waiting for input or others)."""
        progressed = True
        while progressed:
            progressed = False
            for symbol, progress in self._progress.items():
                if not progress.finished and self._step(symbol, progress):
                    progressed = True

    def _step(self, symbol: str, progress: SymbolProgress) -> bool:
        limit = horizon(symbol, self._progress, self.live)
        engine = self._engines[symbol]
        if progress.paused:
            if progress.pending_intent_ts >= limit:
                return False
            progress.paused = False
            self._absorb(symbol, progress, engine.step(None, limit, self._gateway), None)
            return True
        if not progress.queue:
            return False
        item = progress.queue.popleft()
        started = time.perf_counter()
        if item is FINISH:
            progress.finishing = True
            result = engine.finish(self._gateway)
        else:
            result = engine.step(item, limit, self._gateway)
            add_feature_rows(result.journal, symbol, item, self._feature_timeframe)
        self._absorb(symbol, progress, result, started)
        if self.latency is not None and isinstance(item, FeatureBatch) and not result.paused:
            self.latency.decisions(receive_times(item))
        return True

    def _absorb(self, symbol: str, progress: SymbolProgress, result: StepResult,
                started: float | None) -> None:
        self.step_calls += 1
        if result.updates:
            self.risk.submit(result.updates)
        count_step(self.metrics, result)
        if any(result.journal.values()):
            self.writer.append_many(result.journal)
        if self.trading is not None:
            self.writer.append_many(self.trading.after_step(result.counters))
        if result.paused:
            self.pauses += 1
        elif started is not None:
            self.metrics.batch_latency.observe(time.perf_counter() - started)
        progress.record(result)
        self._decisions_since_flush += sum(
            result.counters.get(name, 0) for name in ("intents", "marks", "fills"))
        if self._decisions_since_flush >= _RISK_ROWS_PER_FLUSH:
            self._flush_risk()

    def _flush_risk(self) -> None:
        rows = self.risk.drain_journal()
        if any(rows.values()):
            self.writer.append_many(rows)
        self._decisions_since_flush = 0

    # ------------------------------------------------------------------ end of run

    def close(self) -> dict[str, Any]:
        """Finish every symbol, close risk and the journal; return the run's summary."""
        with self._lock:
            return self._close()

    def _close(self) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("supervisor already closed")
        self._closed = True
        for progress in self._progress.values():
            progress.queue.append(FINISH)
        self._run_ready()
        if not all(progress.finished for progress in self._progress.values()):
            stuck = {symbol: (progress.paused, progress.pending_intent_ts)
                     for symbol, progress in self._progress.items()}
            raise RuntimeError(f"replay cannot make progress; symbol states: {stuck}")
        self.risk.finish()
        self._flush_risk()
        if self.trading is not None:
            self.writer.append_many(self.trading.journal_rows())
            self.trading.stop()
        portfolio = self.risk.summary()
        self.writer.close()
        return {"portfolio": portfolio, "rows_written": dict(self.writer.rows_written)}

    def abort(self, timeout_s: float = 30.0) -> None:
        """After a failure: keep what the journal already has. Never raises."""
        self._closed = True
        try:
            if self.trading is not None:
                self.trading.stop()
        except Exception:  # best effort on the failure path
            pass
        try:
            with self._lock:
                self.writer.close()
        except Exception:  # best effort on the failure path
            pass


__all__ = ["FOREVER", "InProcessSupervisor"]
