"""The order flow's limit entries (`entry.order_type: limit`, `engine.limit_entries`): start an
approved entry as a limit, apply what the resting limits did, act on the tactics' deadlines."""

from __future__ import annotations

import math

from engine.batches import FeatureBatch
from engine.flow_state import FlowState, QueuedIntent
from engine.types import OrderReleased


class LimitEntryFlow(FlowState):
    """Mixed into `engine.order_flow.OrderFlow`."""

    def _start_limit_entry(self, queued: QueuedIntent, quantity: float,
                           signal_id: str | None, batch: FeatureBatch) -> None:
        """Work the approved entry as a limit; without a usable quote nothing is sent."""
        assert self.limit_entries is not None
        intent = queued.intent
        quote = self.limit_entries.quote_at(batch, intent.ts_event)
        why = "no quote at the decision" if quote is None else self.limit_entries.start(
            self.matcher, intent, quantity, queued.context, quote)
        if why:
            self.updates.append(OrderReleased(self.symbol, intent.ts_event, self.next_sequence(),
                                              intent.order_id, f"limit entry not sent: {why}"))
            if signal_id is not None:
                self.journal_signal(
                    self.signals.resolve(signal_id, False, f"limit_entry: {why}"))
            return
        self.counters["orders"] += 1
        self.journal["orders"].extend(self.matcher.drain_rows())
        if signal_id is not None:
            self.signals.await_fill(signal_id, intent.order_id, math.nan)

    def advance_limit_entries(self, batch: FeatureBatch, until: int) -> int | None:
        """Match the working limit entries up to `until` and apply what happened; returns the
        time of the last fill, if any."""
        assert self.limit_entries is not None
        events = self.limit_entries.match(self.matcher, batch, until, self.next_sequence)
        self.journal["orders"].extend(self.matcher.drain_rows())
        last_fill: int | None = None
        for event in events:
            self.settle_funding(event.ts_event)
            if event.fill is not None and event.context is not None:
                self._apply_fill(event.fill, event.context)
                last_fill = event.ts_event
            if event.released is None:
                continue
            self.updates.append(OrderReleased(
                self.symbol, event.ts_event, self.next_sequence(), event.released,
                f"limit entry: {event.outcome or 'market fallback'}", event.successor))
            if event.successor is not None and event.context is not None:
                self._contexts[event.successor] = event.context
                self.counters["orders"] += 1
                self.signals.rename_order(event.released, event.successor)
            elif not event.filled_any:
                self._resolve_signal_of(event.released, f"limit_entry: {event.outcome}")
        self.journal["orders"].extend(self.matcher.drain_rows())
        return last_fill

    def limit_entry_time(self, batch: FeatureBatch, ts_event: int) -> None:
        """A tactic's deadline: reprice to the quote of that time, or give up."""
        assert self.limit_entries is not None
        self.limit_entries.observe_quote(batch, ts_event)
        self.limit_entries.on_time(self.matcher, ts_event)
        self.journal["orders"].extend(self.matcher.drain_rows())
