"""One symbol's orders on a live venue, as the order flow sees them (`ats live --execute`).

The paper matcher fills orders against the tape; here the venue does. An approved intent becomes
one market order through the `ExecutionPort`, with the engine's order id, so risk matches its
fills exactly as in paper. Whatever the venue reports (at once for a market order, or on a later
`poll`) becomes `Fill`s of the quantity filled since the previous report: the flow applies them
to the position tracker, risk and the journal like paper fills. Fees are the venue's when it
reports them, else estimated at the configured taker rate (Binance reports commissions per trade,
not per order).

Protective stop: with `venue_stops`, an entry's initial stop is also held on the venue as a
reduce-only STOP_MARKET (it protects the position if this process dies); it is cancelled once the
position is flat. The engine keeps its own exits (trailing, take-profits, time) as market orders.

The venue's position is the truth. A triggered stop executes as a separate venue order, and the
watchdog, a kill or a person at the venue can close a position too; so every poll interval (and
at once after a stop triggered or a reduce-only exit was refused) the venue's position is read,
and a difference from the engine's becomes a fill with reason `venue_position` at the stop's
trigger price, or else at the last price: the journal's position and equity follow the venue's,
with the price approximated (the venue's trade history has the exact one).

Failure policy (fail closed): a refused order (venue blocked, HALTED, not reconciled, an order
of unknown outcome on the symbol, network) sends nothing further and is reported as unfilled so
risk releases its reservation; the flow journals it as a dead letter. After a refused or rejected
order the symbol holds off new orders for `retry_after_ns` of event time, so a protective exit is
retried at that pace rather than on every trade. An order of unknown outcome stays working until
a poll resolves it, and meanwhile the symbol is busy (no new intents), which is the venue-side
rule too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.execution.errors import ExecutionError
from engine.execution.port import ExecutionPort, VenueReport
from engine.position_tracker import OrderContext
from engine.types import Fill, OrderIntent


@dataclass(frozen=True)
class VenueUpdate:
    """What one venue report means for the flow: a new fill, and whether the order is done."""

    order_id: str
    context: OrderContext
    fill: Fill | None
    final: bool
    unfilled: bool  # final with less than ordered: risk releases the rest
    detail: str
    reserved: bool = True  # risk holds a reservation for it (not the venue's own stop)


@dataclass
class _WorkingOrder:
    client_order_id: str
    order_id: str
    side: int
    quantity: float
    reference_price: float
    ts_sent: int
    context: OrderContext
    reduce_only: bool
    requested: float  # what risk approved; the venue may round `quantity` down to its step
    reserved: bool = True  # risk reserved it (not the venue stop, not a position settlement)
    filled: float = 0.0
    value: float = 0.0  # filled quantity times average price so far
    fees: float = 0.0
    fill_count: int = 0


@dataclass
class VenueOrders:
    """Working venue orders of one symbol and the protective stop (see module docs)."""

    symbol: str
    venue_symbol: str
    taker_fee_bps: float
    venue_stops: bool = True
    poll_interval_ns: int = 5_000_000_000
    retry_after_ns: int = 1_000_000_000
    port: ExecutionPort | None = None
    working: dict[str, _WorkingOrder] = field(default_factory=dict)  # by client order id
    stop: _WorkingOrder | None = None
    _last_poll: int = -(2**63)
    _poll_stop_now: bool = False
    _stop_refused: bool = False
    _triggered_at: float | None = None  # trigger price of a stop that fired, until settled
    _clock: int = -(2**63)  # latest event time seen
    _hold_until: int = -(2**63)  # no new order before this event time (after a refusal)
    _settlements: int = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["port"] = None  # a checkpoint never carries a live connection; attach again
        return state

    def _port(self) -> ExecutionPort:
        if self.port is None:
            raise ExecutionError(f"{self.symbol}: no live execution attached")
        return self.port

    @property
    def busy(self) -> bool:
        """An entry or exit is still working (the protective stop does not count), or orders
        are held off after a refusal."""
        return bool(self.working) or self._clock < self._hold_until

    def pending_quantity(self) -> float:
        """Signed quantity ordered and not yet filled, over entries and exits."""
        return sum(order.side * (order.quantity - order.filled)
                   for order in self.working.values())

    def exit_working(self) -> bool:
        return any(order.reduce_only for order in self.working.values()) or (
            self._clock < self._hold_until)

    # ---------------------------------------------------------------- sending

    def submit(self, intent: OrderIntent, quantity: float, context: OrderContext,
               next_sequence: Callable[[], int]) -> list[VenueUpdate]:
        """Send the market order of an approved intent; raises `ExecutionError` when refused."""
        purpose = "x" if intent.reduce_only else "e"
        self._clock = max(self._clock, intent.ts_event)
        started = time.perf_counter()
        try:
            report = self._port().place(self.venue_symbol, intent.side, quantity,
                                        intent.reduce_only, purpose, intent.order_id,
                                        intent.intent_id)
        except ExecutionError:
            self._hold_until = self._clock + self.retry_after_ns
            raise
        latency_ms = (time.perf_counter() - started) * 1e3
        order = _WorkingOrder(report.client_order_id, intent.order_id, intent.side,
                              report.quantity, intent.reference_price, intent.ts_event, context,
                              intent.reduce_only, quantity)
        self.working[order.client_order_id] = order
        return self._absorb(order, report, intent.ts_event, latency_ms, next_sequence)

    def sync_stop(self, position: float, stop_price: float | None, ts_event: int,
                  next_sequence: Callable[[], int]) -> list[VenueUpdate]:
        """Hold the venue stop while a position is open (placed once, at its initial level);
        cancel it once flat. Returns the updates of a stop that filled meanwhile."""
        if not self.venue_stops:
            return []
        if position == 0:
            self._stop_refused = False
            if self.stop is not None and not self.working:
                report = self._port().cancel(self.stop.client_order_id)
                return self._absorb(self.stop, report, ts_event, math.nan, next_sequence)
            return []
        if self.stop is None and stop_price is not None and not self.working and (
                not self._stop_refused):
            side = -1 if position > 0 else 1
            order_id = f"{self.symbol}:sl{next_sequence()}"
            try:
                report = self._port().place_stop(self.venue_symbol, side, abs(position),
                                                 stop_price, order_id)
            except ExecutionError:
                self._stop_refused = True  # not again for this position
                raise
            context = OrderContext("exit", "venue_stop")
            self.stop = _WorkingOrder(report.client_order_id, order_id, side, report.quantity,
                                      stop_price, ts_event, context, True, abs(position),
                                      reserved=False)
            return self._absorb(self.stop, report, ts_event, math.nan, next_sequence)
        return []

    # ---------------------------------------------------------------- reports

    def poll(self, ts_event: int, position: float, last_price: float,
             next_sequence: Callable[[], int]) -> list[VenueUpdate]:
        """Ask the venue about working orders (every call); every poll interval, or at once
        after a stop fired or an exit was refused, also about the stop and the position."""
        self._clock = max(self._clock, ts_event)
        orders = list(self.working.values())
        due = (ts_event - self._last_poll >= self.poll_interval_ns) or self._poll_stop_now
        if due:
            self._last_poll = ts_event
            self._poll_stop_now = False
            if self.stop is not None:
                orders.append(self.stop)
        updates: list[VenueUpdate] = []
        if orders:
            reports = self._port().refresh([order.client_order_id for order in orders])
            for order, report in zip(orders, reports, strict=True):
                updates.extend(self._absorb(order, report, ts_event, math.nan, next_sequence))
        if (due or self._triggered_at is not None) and not self.working:
            filled = sum(u.fill.side * u.fill.quantity for u in updates if u.fill is not None)
            updates.extend(self._settle_position(position + filled, last_price, ts_event,
                                                 next_sequence))
        return updates

    def _settle_position(self, position: float, last_price: float, ts_event: int,
                         next_sequence: Callable[[], int]) -> list[VenueUpdate]:
        """A fill that brings the engine's position to the venue's (module docs)."""
        venue_position = self._port().position(self.venue_symbol)
        price = self._triggered_at if self._triggered_at is not None else last_price
        self._triggered_at = None
        if venue_position is None:
            return []
        difference = venue_position - position
        if abs(difference) <= 1e-9 * max(1.0, abs(position)) or not (
                math.isfinite(price) and price > 0):
            return []
        self._settlements += 1
        order = _WorkingOrder(f"venue-position-{self._settlements}",
                              f"{self.symbol}:vp{next_sequence()}", 1 if difference > 0 else -1,
                              abs(difference), price, ts_event,
                              OrderContext("exit", "venue_position"), False, abs(difference),
                              reserved=False)
        report = VenueReport(order.client_order_id, order.order_id, "filled", order.quantity,
                             order.quantity, price, 0.0, True, "venue position")
        return self._absorb(order, report, ts_event, math.nan, next_sequence)

    def _absorb(self, order: _WorkingOrder, report: VenueReport, ts_event: int,
                latency_ms: float, next_sequence: Callable[[], int]) -> list[VenueUpdate]:
        fill = self._fill_since_last(order, report, ts_event, latency_ms, next_sequence)
        reserved = order.reserved
        if order is self.stop and report.final and order.filled == 0 and (
                "triggered" in report.detail):
            self._triggered_at = order.reference_price  # it became a venue market order
        if not report.final:
            return [VenueUpdate(order.order_id, order.context, fill, False, False, report.detail,
                                reserved)]
        if order is self.stop:
            self.stop = None
        else:
            self.working.pop(order.client_order_id, None)
            if order.filled == 0 and reserved:  # rejected: hold off, then look at the venue
                self._hold_until = self._clock + self.retry_after_ns
                self._poll_stop_now = True
        unfilled = order.filled < order.requested * (1 - 1e-9)
        return [VenueUpdate(order.order_id, order.context, fill, True, unfilled, report.detail,
                            reserved)]

    def _fill_since_last(self, order: _WorkingOrder, report: VenueReport, ts_event: int,
                         latency_ms: float, next_sequence: Callable[[], int]) -> Fill | None:
        delta = min(report.filled_quantity, order.quantity) - order.filled
        if delta <= order.quantity * 1e-12:
            return None
        average = report.average_fill_price
        value = average * report.filled_quantity if math.isfinite(average) else math.nan
        price = (value - order.value) / delta
        if not (math.isfinite(price) and price > 0):
            price = average
        if not (math.isfinite(price) and price > 0):
            raise ExecutionError(
                f"{self.symbol}: venue reported {delta} filled on {order.client_order_id} "
                f"without a usable price ({average!r})")
        fee = report.fees - order.fees
        if not fee > 0:
            fee = price * delta * self.taker_fee_bps / 1e4
        order.filled += delta
        order.value += price * delta
        order.fees += fee
        order.fill_count += 1
        sequence = next_sequence()
        reference = order.reference_price
        slippage = order.side * (price - reference) / reference * 1e4 if reference > 0 else 0.0
        return Fill(
            fill_id=f"{self.symbol}:f{sequence}", order_id=order.order_id, symbol=self.symbol,
            ts_event=ts_event, sequence=sequence, side=order.side, quantity=delta, price=price,
            reference_price=reference, fee=fee, liquidity="taker", slippage_bps=slippage,
            latency_ms=latency_ms)
