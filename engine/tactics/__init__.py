"""Execution tactics: pure, event-time planners that turn market and order events into commands.

Every tactic is a small deterministic state machine with no wall clock, no I/O and no Ray. The
caller feeds it events (`Quote`, `Bar`, `TacticFill`, `OrderClosed`, and the event time through
`on_time`) and sends the `PlaceOrder` / `AmendOrder` / `CancelOrder` commands it returns to a
venue: the paper matcher or live execution. Orders are named by a short `purpose` ("e", "sl",
"tp1", ...) that is also the purpose part of `engine.orders.client_order_id`.

- `limit_entry`: limit at the best bid/ask, one reprice, then cancel or market fallback; the
  paper engine works entries with it under `entry.order_type: limit` (`engine.limit_entries`);
- `protection`: stop-loss and layered take-profits placed on the entry fill as OCO, resized by
  partial fills, breakeven after TP1, ATR trailing, time exit and max hold. This is the
  order-level form (resting orders at a venue); the engine enforces the same levels in event
  time with market exits (`engine.position_tracker`), and live it also holds the initial stop on
  the venue (`engine.venue_orders`).

The entry filters (spread over its average, an order's share of 24h volume) are risk rules
(`engine.rules.execution_filters`), fed columnar market facts (`engine.market_context`).
"""

from engine.tactics.commands import (
    AmendOrder,
    Bar,
    CancelOrder,
    Command,
    OrderClosed,
    PlaceOrder,
    Quote,
    TacticFill,
)

__all__ = [
    "AmendOrder",
    "Bar",
    "CancelOrder",
    "Command",
    "OrderClosed",
    "PlaceOrder",
    "Quote",
    "TacticFill",
]
