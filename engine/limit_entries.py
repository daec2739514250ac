"""Approved entries worked as limit orders on the paper matcher (`entry.order_type: limit`).

Each approved entry gets a `LimitEntryTactic` (`engine.tactics.limit_entry`): a limit at the best
bid (buy) or ask (sell) of the last quote at the decision, one reprice after `reprice_after`,
a cancel after `give_up_after`, then, with `fallback: market`, a market order for what is left
once the cancel is confirmed. The tactic's commands go to the paper matcher: a reprice is a
venue amend (the order requeues at the new price when the amend arrives), a cancel and the
fallback travel with the same latencies as any order.

Event time drives it all. `deadline()` is the next time a tactic must act; the symbol engine
matches the resting orders up to the next trade boundary or that deadline, whichever is first,
then calls `on_time`. Fills come back in time order for the order flow to apply.

Risk: the entry's reservation stays under its order id while the limit works; the market
fallback takes it over (`OrderReleased` with a successor), and whatever ends unfilled is
released. An entry without a valid quote at the decision sends nothing (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.batches import FeatureBatch
from engine.config import LimitEntryConfig
from engine.matching import PaperMatcher
from engine.position_tracker import OrderContext
from engine.queue_model import RestingOrder
from engine.tactics.commands import (
    AmendOrder,
    CancelOrder,
    Command,
    OrderClosed,
    PlaceOrder,
    Quote,
    TacticFill,
)
from engine.tactics.limit_entry import ENTRY, LimitEntryTactic
from engine.types import Fill, OrderIntent


@dataclass
class _Entry:
    tactic: LimitEntryTactic
    intent: OrderIntent
    context: OrderContext
    abandoned: bool = False  # cancelled for a protective exit: no market fallback


@dataclass(frozen=True)
class EntryEvent:
    """Something the order flow must apply, in time order."""

    ts_event: int
    fill: Fill | None = None  # a fill of the resting limit
    context: OrderContext | None = None
    released: str | None = None  # the order id whose reservation ends here
    successor: str | None = None  # ... or moves to this market fallback
    outcome: str = ""  # how the tactic ended (journaled on the signal when nothing filled)
    filled_any: bool = False


@dataclass
class LimitEntries:
    """The working limit entries of one symbol (see module docs)."""

    config: LimitEntryConfig
    entries: dict[str, _Entry] = field(default_factory=dict)  # by the entry's order id
    carried_quote: Quote | None = None  # the last quote of the previous batch

    def __bool__(self) -> bool:
        return bool(self.entries)

    def quote_at(self, batch: FeatureBatch, ts_event: int) -> Quote | None:
        """The last quote at or before `ts_event`, from this batch or carried from earlier."""
        return last_quote(batch, ts_event) or self.carried_quote

    def end_batch(self, batch: FeatureBatch) -> None:
        self.carried_quote = last_quote(batch, batch.watermark) or self.carried_quote

    def start(self, matcher: PaperMatcher, intent: OrderIntent, quantity: float,
              context: OrderContext, quote: Quote) -> str:
        """Place the limit of an approved entry; returns "" or why nothing was sent."""
        tactic = LimitEntryTactic(self.config, intent.side, quantity)
        commands = tactic.start(quote)
        if not commands:
            return tactic.outcome
        self.entries[intent.order_id] = _Entry(tactic, intent, context)
        self._send(matcher, intent.order_id, commands, intent.ts_event)
        return ""

    def deadline(self) -> int | None:
        """The next event time a working tactic must act at (reprice or give up)."""
        times: list[int] = []
        for entry in self.entries.values():
            tactic = entry.tactic
            if tactic.state != "working" or tactic.started_at is None:
                continue
            times.append(tactic.started_at + self.config.give_up_after_ns)
            if tactic.reprices < self.config.max_reprices:
                times.append(tactic.started_at
                             + self.config.reprice_after_ns * (tactic.reprices + 1))
        return min(times) if times else None

    def resting_quantity(self, matcher: PaperMatcher) -> float:
        """Signed quantity the working limits may still fill."""
        return sum(order.side * (order.quantity - order.filled)
                   for order in matcher.resting.values() if order.order_id in self.entries)

    def on_time(self, matcher: PaperMatcher, ts_event: int) -> None:
        for order_id, entry in list(self.entries.items()):
            self._send(matcher, order_id, entry.tactic.on_time(ts_event), ts_event)

    def observe_quote(self, batch: FeatureBatch, ts_event: int) -> None:
        """The tactics reprice to the last quote at or before `ts_event`."""
        quote = self.quote_at(batch, ts_event)
        if quote is not None and quote.valid:
            for entry in self.entries.values():
                entry.tactic.last_quote = quote

    def cancel_all(self, matcher: PaperMatcher, ts_event: int) -> None:
        """Stop working every entry (a protective exit is on its way); no market fallback."""
        for order_id, entry in self.entries.items():
            if not entry.abandoned:
                entry.abandoned = True
                entry.tactic.state = "canceling"
                matcher.cancel(order_id, ts_event)

    def match(self, matcher: PaperMatcher, batch: FeatureBatch, until: int,
              next_sequence: Callable[[], int]) -> list[EntryEvent]:
        """Match the resting entries up to `until`; the fills and ends, in time order."""
        working: dict[str, RestingOrder] = {
            order_id: order for order_id, order in matcher.resting.items()
            if order_id in self.entries}
        if not working:
            return []
        fills = matcher.match_resting(batch.trades, next_sequence, until, batch.depth,
                                      batch.quotes)
        events: list[EntryEvent] = []
        for fill in fills:
            entry = self.entries[fill.order_id]
            entry.tactic.on_fill(TacticFill(ENTRY, fill.quantity, fill.price, fill.ts_event))
            events.append(EntryEvent(fill.ts_event, fill=fill, context=entry.context))
        for order_id, order in working.items():
            if order_id in matcher.resting:
                continue
            events.append(self._closed(matcher, order_id, order))
        events.sort(key=lambda event: (event.ts_event, event.fill is None))
        return events

    def _closed(self, matcher: PaperMatcher, order_id: str, order: RestingOrder) -> EntryEvent:
        """The limit left the book (filled or cancelled): fall back to market, or finish."""
        entry = self.entries[order_id]
        tactic = entry.tactic
        ts = order.managed.history[-1].ts_event
        filled_any = order.filled > 0
        released = order_id if order.filled < order.quantity * (1 - 1e-9) else None
        if entry.abandoned:
            del self.entries[order_id]
            return EntryEvent(ts, released=released,
                              outcome="cancelled for a protective exit", filled_any=filled_any)
        if order.managed.state.value != "filled":
            commands = tactic.on_order_closed(OrderClosed(ENTRY, order.managed.state.value, ts))
            market = [c for c in commands if isinstance(c, PlaceOrder)]
            if market:
                fallback_id = f"{order_id}m"
                matcher.submit(entry.intent, market[0].quantity, ts, order_id=fallback_id)
                del self.entries[order_id]
                return EntryEvent(ts, context=entry.context, released=order_id,
                                  successor=fallback_id, filled_any=filled_any)
        del self.entries[order_id]
        return EntryEvent(ts, released=released, outcome=tactic.outcome or "filled",
                          filled_any=filled_any)

    def _send(self, matcher: PaperMatcher, order_id: str, commands: list[Command],
              ts_event: int) -> None:
        entry = self.entries[order_id]
        for command in commands:
            if isinstance(command, PlaceOrder):
                assert command.price is not None
                matcher.submit_limit(entry.intent, command.quantity, command.price, ts_event)
            elif isinstance(command, AmendOrder):
                assert command.price is not None
                matcher.amend(order_id, command.price, ts_event, command.reason)  # else: the
                # order is gone or busy; the give-up still ends it
            elif isinstance(command, CancelOrder):
                matcher.cancel(order_id, ts_event)


def last_quote(batch: FeatureBatch, ts_event: int) -> Quote | None:
    """The best bid and ask at or before `ts_event`: the quotes, else the depth samples."""
    quotes = batch.quotes
    if quotes is not None and len(quotes):
        index = int(np.searchsorted(quotes.ts_event, ts_event, "right")) - 1
        if index >= 0:
            return Quote(int(quotes.ts_event[index]), float(quotes.bid_price[index]),
                         float(quotes.ask_price[index]))
    depth = batch.depth
    if depth is not None and len(depth):
        index = int(np.searchsorted(depth.ts_event, ts_event, "right")) - 1
        if index >= 0:
            return Quote(int(depth.ts_event[index]), float(depth.bid_price[index][0]),
                         float(depth.ask_price[index][0]))
    return None
