"""What both supervisors (Ray actors, in-process) share: where each symbol of a run stands, how
far it may decide, and the metrics they count on what the dataflow hands them.

Risk decisions are taken in (ts_event, symbol) order as a stream processor aligns watermarks: a
symbol may decide an intent at time t only when every other symbol has processed all of its
events before t (its watermark, or the time of the intent it is paused at). Ties in time go to the
smaller symbol. Live mode decides in arrival order: the horizon is unbounded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.batches import FeatureBatch
from engine.latency import LatencyRecorder, receive_times
from engine.metrics import RunMetrics
from engine.symbol_engine import StepResult

FOREVER = 2**63 - 1
FINISH = object()  # queued after a symbol's last batch: finish it


@dataclass
class SymbolProgress:
    """A symbol's queue of batches and how far its engine has got."""

    queue: deque[Any] = field(default_factory=deque)
    paused: bool = False
    pending_intent_ts: int = 0
    watermark: int = -FOREVER
    finishing: bool = False
    finished: bool = False

    def bound(self) -> int:
        """No event of this symbol below this time is still to come (FOREVER once finished)."""
        if self.finished:
            return FOREVER
        return self.pending_intent_ts if self.paused else self.watermark

    def record(self, result: StepResult) -> None:
        """Take in a step's result: paused at an intent, or done with its batch."""
        if result.paused:
            self.paused = True
            pending = result.pending_intent_ts
            self.pending_intent_ts = int(result.watermark if pending is None else pending)
        self.watermark = max(self.watermark, result.watermark)
        if self.finishing and not result.paused:
            self.finished = True


def horizon(symbol: str, states: Mapping[str, SymbolProgress], live: bool) -> int:
    """The time below which `symbol` may decide intents now."""
    if live:
        return FOREVER
    limit = FOREVER
    for other, state in states.items():
        if other == symbol:
            continue
        bound = state.bound()
        if bound != FOREVER and symbol < other:
            bound += 1  # ties in time go to the smaller symbol
        limit = min(limit, bound)
    return limit


def count_features(metrics: RunMetrics, batch: FeatureBatch, live: bool,
                   latency: LatencyRecorder | None) -> None:
    """Bars in, and (live) each frame's receive-to-feature latency."""
    metrics.add("bars", sum(len(bars) for bars in batch.bars.values()))
    if not live:
        return
    received = receive_times(batch)
    if len(received):
        now = time.time_ns()
        for seconds in ((now - received) / 1e9).tolist():
            metrics.receive_to_feature.observe(seconds)
    if latency is not None:
        latency.features(received)


def count_dataflow_rows(metrics: RunMetrics, rows_by_table: Mapping[str, list[Any]]) -> None:
    """Dead letters, resyncs, feed events and stale alarms the dataflow journals."""
    metrics.add("dead_letters", len(rows_by_table.get("dead_letters", ())))
    resyncs = [row for row in rows_by_table.get("book_events", ())
               if row.get("kind") == "resync_requested"]
    metrics.add("book_resyncs", len(resyncs))
    feed_events = rows_by_table.get("feed_events", ())
    metrics.add("feed_events", len(feed_events))
    metrics.add("stale_alarms", sum(row.get("kind") == "stale" for row in feed_events))


def count_step(metrics: RunMetrics, result: StepResult) -> None:
    """The counters a symbol step reports (signals, intents, fills...)."""
    for name, amount in result.counters.items():
        if name in metrics.totals:
            metrics.add(name, amount)
