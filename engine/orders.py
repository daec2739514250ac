"""Order lifecycle: a state machine that accepts only legal transitions, and fills by trade id.

One `ManagedOrder` per order sent (paper or live). Its state only ever moves along
`LEGAL_TRANSITIONS`; anything else raises `IllegalTransition` naming the order, the states and why,
so a venue message that does not fit is noticed instead of silently corrupting the book of orders.

States (see `OrderState`) and the only legal moves:

    NEW              -> SUBMITTED, CANCELED (dropped before sending), REJECTED (refused locally)
    SUBMITTED        -> ACCEPTED, PARTIALLY_FILLED, FILLED, CANCEL_REQUESTED, CANCELED, REJECTED,
                        EXPIRED, UNKNOWN (the create request timed out)
    ACCEPTED         -> PARTIALLY_FILLED, FILLED, CANCEL_REQUESTED, CANCELED, EXPIRED
    PARTIALLY_FILLED -> FILLED, CANCEL_REQUESTED, CANCELED, EXPIRED
    CANCEL_REQUESTED -> CANCELED, FILLED, PARTIALLY_FILLED / ACCEPTED (the cancel was refused and
                        the order still works), EXPIRED, UNKNOWN (the cancel request timed out)
    UNKNOWN          -> ACCEPTED, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED, EXPIRED (what a
                        query of the venue answered); never back to SUBMITTED: an unknown outcome
                        is resolved by querying, never by resubmitting
    FILLED, CANCELED, REJECTED, EXPIRED: terminal, no move out.

Besides the table, a move must agree with the filled quantity: ACCEPTED and REJECTED need nothing
filled, PARTIALLY_FILLED needs 0 < filled < quantity, FILLED needs the full quantity (so in
practice FILLED is reached through `apply_fill`). CANCELED and EXPIRED may carry a partial fill.

Fills. `apply_fill` is idempotent by trade id: a trade id already applied changes nothing and
returns False (venues re-deliver executions after reconnects and queries). A fill that would push
the filled quantity above the order quantity raises `OverFill` (fail closed: never clipped). Fills
are accepted in SUBMITTED, ACCEPTED, PARTIALLY_FILLED, CANCEL_REQUESTED and UNKNOWN (a fill proves
the order exists). A fill that completes the order moves it to FILLED; a partial fill moves
SUBMITTED / ACCEPTED to PARTIALLY_FILLED but leaves CANCEL_REQUESTED and UNKNOWN where they are,
since whether the rest still works is exactly what is not yet known.

Every change (state move, fill, amend of price / stop / quantity) is a `history` record;
`journal_rows()` turns them into rows of the journal's `orders` table keyed "{order_id}:{index}".

Client order ids: `engine.client_ids` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from engine.client_ids import (
    CLIENT_ORDER_ID_PATTERN,
    client_order_id,
    is_run_client_order_id,
    run_tag,
)

__all__ = [
    "CLIENT_ORDER_ID_PATTERN",
    "FILLABLE_STATES",
    "LEGAL_TRANSITIONS",
    "OPEN_STATES",
    "ORDER_TYPES",
    "QUANTITY_TOLERANCE",
    "TERMINAL_STATES",
    "IllegalTransition",
    "ManagedOrder",
    "OrderFill",
    "OrderRecord",
    "OrderState",
    "OverFill",
    "client_order_id",
    "is_run_client_order_id",
    "run_tag",
]


class OrderState(StrEnum):
    NEW = "new"  # created locally, not sent
    SUBMITTED = "submitted"  # sent, no answer yet
    ACCEPTED = "accepted"  # venue acknowledged, resting or working
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"  # terminal
    CANCEL_REQUESTED = "cancel_requested"
    CANCELED = "canceled"  # terminal (may carry a partial fill)
    REJECTED = "rejected"  # terminal
    EXPIRED = "expired"  # terminal
    UNKNOWN = "unknown"  # create/cancel timed out: outcome to be resolved by query


_S = OrderState

LEGAL_TRANSITIONS: Mapping[OrderState, frozenset[OrderState]] = MappingProxyType(
    {
        _S.NEW: frozenset({_S.SUBMITTED, _S.CANCELED, _S.REJECTED}),
        _S.SUBMITTED: frozenset(
            {
                _S.ACCEPTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCEL_REQUESTED, _S.CANCELED,
                _S.REJECTED, _S.EXPIRED, _S.UNKNOWN,
            }
        ),
        _S.ACCEPTED: frozenset(
            {_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCEL_REQUESTED, _S.CANCELED, _S.EXPIRED}
        ),
        _S.PARTIALLY_FILLED: frozenset(
            {_S.FILLED, _S.CANCEL_REQUESTED, _S.CANCELED, _S.EXPIRED}
        ),
        _S.CANCEL_REQUESTED: frozenset(
            {_S.CANCELED, _S.FILLED, _S.PARTIALLY_FILLED, _S.ACCEPTED, _S.EXPIRED, _S.UNKNOWN}
        ),
        _S.UNKNOWN: frozenset(
            {_S.ACCEPTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.REJECTED, _S.EXPIRED}
        ),
        _S.FILLED: frozenset(),
        _S.CANCELED: frozenset(),
        _S.REJECTED: frozenset(),
        _S.EXPIRED: frozenset(),
    }
)

TERMINAL_STATES: frozenset[OrderState] = frozenset(
    state for state, targets in LEGAL_TRANSITIONS.items() if not targets
)
# States in which the order may still execute at the venue (or might, for UNKNOWN).
OPEN_STATES: frozenset[OrderState] = frozenset(
    {_S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED, _S.CANCEL_REQUESTED, _S.UNKNOWN}
)
FILLABLE_STATES: frozenset[OrderState] = OPEN_STATES
ORDER_TYPES: frozenset[str] = frozenset(
    {"market", "limit", "stop_market", "stop_limit", "take_profit_market", "take_profit_limit",
     "trailing_stop_market"}
)
# Relative tolerance on quantities: venue sizes are decimals, floats are not (0.1 + 0.2 > 0.3).
QUANTITY_TOLERANCE = 1e-9


class IllegalTransition(ValueError):  # noqa: N818 (name fixed by the issue API)
    """A state move not in `LEGAL_TRANSITIONS` or that disagrees with the filled quantity."""

    def __init__(
        self, order_id: str, from_state: OrderState, to_state: OrderState, why: str = ""
    ) -> None:
        self.order_id = order_id
        self.from_state = from_state
        self.to_state = to_state
        detail = f": {why}" if why else ""
        super().__init__(
            f"order {order_id}: illegal transition {from_state.value} -> {to_state.value}{detail}"
        )


class OverFill(ValueError):  # noqa: N818 (name fixed by the issue API)
    """A fill that would take the filled quantity above the order quantity."""


@dataclass(frozen=True)
class OrderFill:
    """One execution of an order, identified by the venue's trade id."""

    trade_id: str
    quantity: float
    price: float
    fee: float
    ts_event: int
    liquidity: str  # "maker" or "taker"


@dataclass(frozen=True)
class OrderRecord:
    """One entry of an order's history: a state move, a fill (`trade_id`) or a reprice."""

    ts_event: int
    from_state: OrderState | None  # None for the creation record
    to_state: OrderState
    reason: str
    filled_quantity: float
    price: float | None  # the order's limit price at that moment
    trade_id: str | None = None


@dataclass
class ManagedOrder:
    """One order and everything that happened to it.

    `order_id` is the engine's id (defaults to the client order id); `ts_created`, when given,
    records the NEW state so the journal shows when the order was decided.
    """

    client_order_id: str
    symbol: str
    side: int  # +1 buy, -1 sell
    order_type: str
    quantity: float
    price: float | None = None
    stop_price: float | None = None
    reduce_only: bool = False
    time_in_force: str = "GTC"
    order_id: str = ""
    intent_id: str | None = None
    ts_created: int | None = None
    venue_order_id: str | None = None
    state: OrderState = field(default=OrderState.NEW, init=False)
    filled_quantity: float = field(default=0.0, init=False)
    average_fill_price: float = field(default=math.nan, init=False)
    fees: float = field(default=0.0, init=False)
    history: list[OrderRecord] = field(default_factory=list, init=False)
    fills: dict[str, OrderFill] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not self.order_id:
            self.order_id = self.client_order_id
        if self.side not in (1, -1):
            raise ValueError(f"order {self.order_id}: side must be +1 or -1, got {self.side!r}")
        if self.order_type not in ORDER_TYPES:
            allowed = ", ".join(sorted(ORDER_TYPES))
            raise ValueError(
                f"order {self.order_id}: order_type {self.order_type!r} unknown; allowed: "
                f"{allowed}"
            )
        if not (math.isfinite(self.quantity) and self.quantity > 0):
            raise ValueError(f"order {self.order_id}: quantity must be > 0, got {self.quantity}")
        for name in ("price", "stop_price"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"order {self.order_id}: {name} must be > 0, got {value}")
        if "limit" in self.order_type and self.price is None:
            raise ValueError(f"order {self.order_id}: a {self.order_type} order needs a price")
        if self.order_type.startswith(("stop", "take_profit")) and self.stop_price is None:
            raise ValueError(f"order {self.order_id}: a {self.order_type} order needs stop_price")
        if self.ts_created is not None:
            self._record(self.ts_created, None, OrderState.NEW, "created")

    # ------------------------------------------------------------------ views

    @property
    def remaining(self) -> float:
        return max(0.0, self.quantity - self.filled_quantity)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def is_open(self) -> bool:
        """True while the order may still execute at the venue (UNKNOWN counts as open)."""
        return self.state in OPEN_STATES

    # ------------------------------------------------------------------ changes

    def transition(self, to: OrderState, ts_event: int, reason: str = "") -> None:
        """Move to `to`; raises IllegalTransition for a move the table or the fills forbid."""
        to = OrderState(to)
        current = self.state
        if to not in LEGAL_TRANSITIONS[current]:
            why = "terminal state" if current in TERMINAL_STATES else "not in LEGAL_TRANSITIONS"
            raise IllegalTransition(self.order_id, current, to, why)
        why = self._inconsistent(to)
        if why:
            raise IllegalTransition(self.order_id, current, to, why)
        self.state = to
        self._record(ts_event, current, to, reason)

    def apply_fill(self, fill: OrderFill) -> bool:
        """Apply one execution; False (nothing changes) for a trade id already applied.

        Raises OverFill when it would fill more than the quantity, IllegalTransition when the
        order is in a state that cannot fill (NEW or terminal), ValueError for a malformed fill.
        """
        known = self.fills.get(fill.trade_id)
        if known is not None:
            if (known.quantity, known.price) != (fill.quantity, fill.price):
                raise ValueError(
                    f"order {self.order_id}: trade {fill.trade_id} re-delivered with another "
                    f"quantity or price ({known} then {fill})"
                )
            return False
        if self.state not in FILLABLE_STATES:
            raise IllegalTransition(
                self.order_id, self.state, OrderState.FILLED,
                f"fill {fill.trade_id} in state {self.state.value}",
            )
        if not (math.isfinite(fill.quantity) and fill.quantity > 0):
            raise ValueError(f"order {self.order_id}: fill quantity must be > 0: {fill}")
        if not (math.isfinite(fill.price) and fill.price > 0 and math.isfinite(fill.fee)):
            raise ValueError(f"order {self.order_id}: fill price/fee must be finite: {fill}")
        total = self.filled_quantity + fill.quantity
        tolerance = QUANTITY_TOLERANCE * self.quantity
        if total > self.quantity + tolerance:
            raise OverFill(
                f"order {self.order_id}: fill {fill.trade_id} of {fill.quantity} would fill "
                f"{total} of {self.quantity}"
            )
        complete = total >= self.quantity - tolerance
        value = fill.price * fill.quantity
        previous_value = (
            0.0 if self.filled_quantity == 0 else self.average_fill_price * self.filled_quantity
        )
        self.fills[fill.trade_id] = fill
        self.average_fill_price = (previous_value + value) / total
        self.filled_quantity = self.quantity if complete else total
        self.fees += fill.fee
        current = self.state
        if complete:
            target = OrderState.FILLED
        elif current in (OrderState.SUBMITTED, OrderState.ACCEPTED):
            target = OrderState.PARTIALLY_FILLED
        else:
            target = current
        self.state = target
        self._record(fill.ts_event, current, target, f"fill {fill.trade_id}", fill.trade_id)
        return True

    def reprice(self, price: float, ts_event: int, reason: str = "reprice") -> None:
        """Record a new limit price of a working limit order (venue amend)."""
        self.amend(ts_event, price=price, reason=reason)

    def amend(
        self,
        ts_event: int,
        price: float | None = None,
        stop_price: float | None = None,
        quantity: float | None = None,
        reason: str = "amend",
    ) -> None:
        """Record a venue amend of a working order: limit price, stop price and/or quantity.

        The new quantity must stay above what already filled (to stop at the filled quantity,
        cancel instead). Raises IllegalTransition unless the order is ACCEPTED or
        PARTIALLY_FILLED, ValueError for a value the order cannot take; nothing changes then.
        """
        if self.state not in (OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED):
            raise IllegalTransition(
                self.order_id, self.state, self.state, f"{reason} of an order that is not working"
            )
        for name, value in (("price", price), ("stop_price", stop_price), ("quantity", quantity)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"order {self.order_id}: {name} must be > 0, got {value}")
        if price is not None and self.price is None:
            raise ValueError(f"order {self.order_id}: a {self.order_type} order has no price")
        if stop_price is not None and self.stop_price is None:
            raise ValueError(f"order {self.order_id}: a {self.order_type} order has no stop")
        if quantity is not None and quantity <= self.filled_quantity * (1 + QUANTITY_TOLERANCE):
            raise ValueError(
                f"order {self.order_id}: quantity {quantity} not above filled "
                f"{self.filled_quantity}; cancel instead"
            )
        if price is not None:
            self.price = price
        if stop_price is not None:
            self.stop_price = stop_price
        if quantity is not None:
            self.quantity = quantity
        self._record(ts_event, self.state, self.state, reason)

    # ------------------------------------------------------------------ journal

    def journal_rows(self, start: int = 0) -> list[dict[str, Any]]:
        """`orders` table rows of history records from index `start` on (run_id is added by the
        journal writer). `price` is the average fill price once something filled, else the limit
        price (or the stop price), else NaN."""
        return [self.transition_row(index) for index in range(start, len(self.history))]

    def transition_row(self, index: int) -> dict[str, Any]:
        record = self.history[index]
        if record.filled_quantity > 0:
            price = self._average_at(index)
        elif record.price is not None:
            price = record.price
        else:
            price = math.nan if self.stop_price is None else self.stop_price
        return {
            "key": f"{self.order_id}:{index}",
            "ts_event": record.ts_event,
            "symbol": self.symbol,
            "order_id": self.order_id,
            "client_order_id": self.client_order_id,
            "venue_order_id": self.venue_order_id,
            "intent_id": self.intent_id,
            "side": self.side,
            "order_type": self.order_type,
            "quantity": self.quantity,
            "price": price,
            "filled_qty": record.filled_quantity,
            "state": record.to_state.value,
            "reason": record.reason,
        }

    # ------------------------------------------------------------------ internals

    def _inconsistent(self, to: OrderState) -> str:
        filled = self.filled_quantity
        if to in (OrderState.ACCEPTED, OrderState.REJECTED) and filled > 0:
            return f"{filled} already filled"
        if to is OrderState.PARTIALLY_FILLED and not 0 < filled < self.quantity:
            return f"filled {filled} of {self.quantity} is not a partial fill"
        if to is OrderState.FILLED and filled < self.quantity:
            return f"filled {filled} of {self.quantity}; FILLED is reached by fills"
        return ""

    def _record(
        self,
        ts_event: int,
        from_state: OrderState | None,
        to_state: OrderState,
        reason: str,
        trade_id: str | None = None,
    ) -> None:
        self.history.append(
            OrderRecord(
                ts_event, from_state, to_state, reason, self.filled_quantity, self.price, trade_id
            )
        )

    def _average_at(self, index: int) -> float:
        """Average fill price over the fills recorded up to history `index`."""
        quantity = value = 0.0
        for record in self.history[: index + 1]:
            if record.trade_id is not None:
                fill = self.fills[record.trade_id]
                quantity += fill.quantity
                value += fill.quantity * fill.price
        return value / quantity if quantity > 0 else math.nan
