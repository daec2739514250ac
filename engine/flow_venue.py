"""The order flow's live half (`ats live --execute`, `engine.venue_orders`): approved orders to
the venue, its reports back into the position, risk and journal, the venue stop kept in step."""

from __future__ import annotations

import math

from engine.execution.errors import ExecutionError
from engine.flow_state import FlowState, QueuedIntent
from engine.types import OrderReleased
from engine.venue_orders import VenueUpdate


class VenueFlow(FlowState):
    """Mixed into `engine.order_flow.OrderFlow`."""

    def _send_to_venue(self, queued: QueuedIntent, quantity: float,
                       signal_id: str | None) -> None:
        """The approved intent's market order to the venue (`engine.venue_orders`)."""
        assert self.venue is not None
        intent = queued.intent
        if signal_id is not None:
            self.signals.await_fill(signal_id, intent.order_id, math.nan)
        try:
            updates = self.venue.submit(intent, quantity, queued.context, self.next_sequence)
        except ExecutionError as error:  # nothing was sent, or the venue refused: fail closed
            self.counters["venue_refusals"] += 1
            self.dead_letter("execution", "order_refused",
                             f"{intent.intent_kind} {intent.order_id}: {error}",
                             f"venue {self.venue.venue_symbol}", intent.ts_event)
            self._apply_venue([VenueUpdate(intent.order_id, queued.context, None, True, True,
                                           "venue refused", reserved=True)], intent.ts_event)
            return
        self.counters["orders"] += 1
        self._apply_venue(updates, intent.ts_event)

    def poll_venue(self, ts_event: int, last_price: float) -> None:
        """Fills and ends of working venue orders reported since the last poll, and the
        venue's position when it differs (`engine.venue_orders`)."""
        if self.venue is None:
            return
        try:
            updates = self.venue.poll(ts_event, self.tracker.signed_quantity, last_price,
                                      self.next_sequence)
        except ExecutionError as error:  # the orders stay working; the next poll asks again
            self.dead_letter("execution", "poll_failed", str(error),
                             f"venue {self.venue.venue_symbol}", ts_event)
            return
        self._apply_venue(updates, ts_event)

    def _apply_venue(self, updates: list[VenueUpdate], ts_event: int) -> None:
        for update in updates:
            if update.fill is not None:
                self._apply_fill(update.fill, update.context)
            if update.final and update.unfilled and update.reserved:
                self.updates.append(OrderReleased(self.symbol, ts_event, self.next_sequence(),
                                                  update.order_id, update.detail or "unfilled"))
                self._resolve_signal_of(update.order_id, "order_rejected")
        if updates and self.venue is not None:
            try:
                more = self.venue.sync_stop(self.tracker.signed_quantity, self.tracker.stop_price,
                                            ts_event, self.next_sequence)
            except ExecutionError as error:  # the engine's own stop still guards the position
                self.dead_letter("execution", "venue_stop_refused", str(error),
                                 f"venue {self.venue.venue_symbol}", ts_event)
                return
            self._apply_venue(more, ts_event)
