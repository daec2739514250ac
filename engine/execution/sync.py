"""Bring a `ManagedOrder` in line with what the venue reports about it (a ccxt order dict).

Fills are derived from the venue's cumulative filled quantity and cost: each increase becomes one
`OrderFill` whose trade id is "<venue id>@<cumulative filled>", so the same venue snapshot seen
twice (create answer, query, reconciliation) never adds quantity. Fees per trade are not in the
order answer and are left at 0 here (the venue's balances are authoritative).
Status: "open" -> ACCEPTED / PARTIALLY_FILLED, "closed" -> FILLED (through the fills),
"canceled" -> CANCELED, "expired" -> EXPIRED, "rejected" -> REJECTED. A USD-M conditional (algo)
order that triggered ("FINISHED"/"TRIGGERED") is EXPIRED with reason "triggered": its execution is
a separate market order at the venue, and positions come from the venue.
"""

from __future__ import annotations

import math
from typing import Any

from engine.orders import ManagedOrder, OrderFill, OrderState

_TYPES = {"market": "market", "limit": "limit", "stop_market": "stop_market",
          "take_profit_market": "take_profit_market", "stop": "stop_limit",
          "take_profit": "take_profit_limit", "trailing_stop_market": "trailing_stop_market"}
_TERMINAL_STATUS = {"canceled": OrderState.CANCELED, "expired": OrderState.EXPIRED,
                    "rejected": OrderState.REJECTED, "finished": OrderState.EXPIRED,
                    "triggered": OrderState.EXPIRED}


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def apply_venue_order(order: ManagedOrder, venue: dict[str, Any], ts_event: int,
                      reason: str) -> None:
    """Move `order` to the venue's view; raises IllegalTransition if that view is impossible."""
    if venue.get("id") is not None:
        order.venue_order_id = str(venue["id"])
    filled = _number(venue.get("filled"))
    previous = order.filled_quantity
    if filled > previous * (1 + 1e-9) + 1e-12:
        delta = min(filled, order.quantity) - previous
        cost = _number(venue.get("cost"))
        previous_value = previous * order.average_fill_price if previous > 0 else 0.0
        price = (cost - previous_value) / delta if cost > 0 else _number(venue.get("average"))
        if not (math.isfinite(price) and price > 0):
            price = _number(venue.get("average")) or _number(venue.get("price"))
        if delta > 0 and price > 0:
            order.apply_fill(OrderFill(f"{order.venue_order_id}@{filled:.12g}", delta, price, 0.0,
                                       ts_event, "taker"))
    status = str(venue.get("status") or "").lower()
    algo_status = str((venue.get("info") or {}).get("algoStatus") or "").lower()
    if algo_status in ("finished", "triggered"):  # ccxt reports a triggered algo as "closed"
        status = algo_status
    if order.is_terminal:
        return
    target: OrderState | None = _TERMINAL_STATUS.get(status)
    if status == "open":
        target = OrderState.PARTIALLY_FILLED if order.filled_quantity > 0 else OrderState.ACCEPTED
    if target is not None and target is not order.state:
        why = f"{reason}: triggered" if status in ("finished", "triggered") else reason
        order.transition(target, ts_event, why)


def adopt_venue_order(venue: dict[str, Any], ts_event: int) -> ManagedOrder:
    """A `ManagedOrder` for an order found at the venue that this instance did not know."""
    info = venue.get("info") or {}
    raw_type = str(info.get("orderType") or info.get("type") or venue.get("type") or "limit")
    order_type = _TYPES.get(raw_type.lower(), "limit")
    trigger = venue.get("triggerPrice") or venue.get("stopPrice")
    order = ManagedOrder(
        client_order_id=str(venue.get("clientOrderId") or f"venue-{venue.get('id')}"),
        symbol=str(venue["symbol"]), side=1 if venue.get("side") == "buy" else -1,
        order_type=order_type, quantity=_number(venue.get("amount")),
        price=_number(venue.get("price")) or None if "limit" in order_type else None,
        stop_price=float(trigger) if trigger and order_type != "limit" else None,
        reduce_only=bool(venue.get("reduceOnly")), ts_created=ts_event,
    )
    order.transition(OrderState.SUBMITTED, ts_event, "found at venue")
    apply_venue_order(order, venue, ts_event, "found at venue")
    return order
