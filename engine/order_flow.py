"""One symbol's order flow: intents, risk decisions, paper orders, fills and their journal rows.

`SymbolEngine` walks event time and tells the `OrderFlow` what happened (a strategy signal, a
protective trigger, a trade an order in flight can fill against, a bar close to mark); the flow
turns it into intents, asks risk through the gateway, sends approved orders to the paper matcher,
applies fills to the position tracker and keeps the rows for the journal.

Reverse (ema_cross "reverse to the target position"): two intents at the same time, a
reduce-only "reverse_close" of the projected position (filled plus in flight), then a
"reverse_open" for the target, which risk checks like an entry. The close always passes; if the
open is rejected the symbol ends flat. Orders travel in order, so the open never fills first.

One per-symbol counter numbers intents, fills, marks, signals and dead letters in the order they
are produced; ids and journal keys derive from it, so they are stable from run to run.

Two halves live in their own modules: limit entries (`engine.flow_limit_entries`, with
`entry.order_type: limit`) and the live venue (`engine.flow_venue`, `ats live --execute`), which
replaces the paper matcher for every order.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from engine.batches import FeatureBatch
from engine.config import EntryConfig, SimulationConfig
from engine.feed_health import FeedHealth
from engine.flow_limit_entries import LimitEntryFlow
from engine.flow_state import QueuedIntent
from engine.flow_venue import VenueFlow
from engine.funding import FundingSchedule, funding_payment, funding_row
from engine.limit_entries import LimitEntries
from engine.market_context import MarketContext
from engine.matching import PaperMatcher
from engine.position_tracker import OrderContext, PositionTracker
from engine.signal_rows import SignalLedger
from engine.strategies.base import Signal
from engine.types import (
    POSITION_CHECK,
    Fill,
    Mark,
    OrderIntent,
    OrderReleased,
    PortfolioUpdate,
    RiskDecision,
    intent_id_for,
)
from engine.venue_orders import VenueOrders

# Tables every drain has; "funding" appears only when a funding payment was journaled.
JOURNAL_TABLES_OUT: tuple[str, ...] = ("signals", "orders", "fills", "trades", "dead_letters")


class RiskGateway(Protocol):
    def decide(self, intent: OrderIntent, updates: Sequence[PortfolioUpdate]) -> RiskDecision: ...


class OrderFlow(LimitEntryFlow, VenueFlow):
    """Intents waiting for risk, orders in flight, the position, and the rows they produce."""

    def __init__(self, symbol: str, strategy_name: str, simulation: SimulationConfig,
                 entry: EntryConfig | None = None,
                 market: MarketContext | None = None) -> None:
        self.symbol = symbol
        self.market = market  # spread and volume facts for the rules that read them
        self.matcher = PaperMatcher(symbol, simulation)
        # `entry.order_type: limit`: entries are worked as limits (`engine.limit_entries`)
        self.limit_entries = (LimitEntries(entry.limit)
                              if entry is not None and entry.order_type == "limit" else None)
        self.tracker = PositionTracker(symbol)
        self.signals = SignalLedger(symbol, strategy_name)
        self.feed_health = FeedHealth()
        self.funding = FundingSchedule()
        self.queue: deque[QueuedIntent] = deque()
        self.updates: list[PortfolioUpdate] = []  # not yet handed to the gateway
        self.journal: dict[str, list[dict[str, Any]]] = {name: [] for name in JOURNAL_TABLES_OUT}
        self.counters: Counter[str] = Counter()
        self._contexts: dict[str, OrderContext] = {}
        self._sequence = 0
        self.venue: VenueOrders | None = None  # set for `ats live --execute`: orders go there

    def next_sequence(self) -> int:
        sequence = self._sequence
        self._sequence += 1
        return sequence

    @property
    def busy(self) -> bool:
        """An intent awaits risk or an order is in flight."""
        return bool(self.queue or self.matcher.pending or (self.venue and self.venue.busy))

    def pending_quantity(self) -> float:
        """Signed quantity ordered and not filled yet (paper, working limits, or venue)."""
        quantity = self.matcher.pending_quantity()
        if self.limit_entries:
            quantity += self.limit_entries.resting_quantity(self.matcher)
        return quantity + self.venue.pending_quantity() if self.venue is not None else quantity

    # ------------------------------------------------------------------ intents

    def _intent(
        self,
        ts_event: int,
        side: int,
        kind: str,
        quantity: float | None,
        reference_price: float,
        **fields: Any,
    ) -> OrderIntent:
        sequence = self.next_sequence()
        reduce_only = kind in ("exit", "reverse_close")
        stale = not reduce_only and self.feed_health.is_stale(ts_event)
        return OrderIntent(
            intent_id=intent_id_for(self.symbol, sequence),
            symbol=self.symbol,
            ts_event=ts_event,
            sequence=sequence,
            side=side,
            intent_kind=kind,
            reduce_only=reduce_only,
            quantity=quantity,
            reference_price=reference_price,
            data_stale=stale,
            **fields,
        )

    def queue_exit(
        self, ts_event: int, price: float, quantity: float, reason: str, take_profit: str | None
    ) -> None:
        """A reduce-only intent closing `quantity` of the position at market."""
        side = -1 if self.tracker.signed_quantity > 0 else 1
        if self.limit_entries:  # the position is being closed: stop adding to it
            self.limit_entries.cancel_all(self.matcher, ts_event)
            self.journal["orders"].extend(self.matcher.drain_rows())
        intent = self._intent(ts_event, side, "exit", quantity, price, reason=reason)
        self.queue.append(
            QueuedIntent(intent, OrderContext("exit", reason, take_profit=take_profit))
        )

    def queue_position_check(self, ts_event: int, price: float) -> None:
        """Ask risk, in event-time order like an intent, whether a rule wants the position
        closed (a flatten from a time exit, a flash crash, a drawdown kill, the operator)."""
        side = 1 if self.tracker.signed_quantity > 0 else -1
        intent = self._intent(ts_event, side, POSITION_CHECK, None, price, reason="check")
        self.queue.append(QueuedIntent(intent, OrderContext(POSITION_CHECK, "check")))

    def new_signal_id(self) -> str:
        return f"{self.symbol}:s{self.next_sequence()}"

    def on_signal(
        self, signal: Signal, timeframe: str, now: int, close: float, bar: dict[str, float],
        signal_id: str | None = None, regime: str | None = None,
    ) -> None:
        """Journal a signal and queue the intents it asks for (none if it cannot act)."""
        signal_id = signal_id or self.new_signal_id()
        self.signals.open(signal_id, signal, timeframe, now, close, bar, regime)
        self.counters["signals"] += 1
        direction = int(signal.direction)
        projected = self.tracker.signed_quantity + self.pending_quantity()
        blocked = ""
        if not signal.act:
            gated = bool((signal.details or {}).get("learner_gated"))
            blocked = "learner_gate" if gated else "strategy_not_acting"
        elif projected * direction > 0:
            blocked = "already_positioned"
        elif projected * direction < 0 and not signal.reverse:
            blocked = "position_open"
        if blocked:
            self.journal_signal(self.signals.resolve(signal_id, False, blocked))
            return
        exits = signal.exits
        stop_price = None
        if exits is not None and exits.stop_distance is not None:
            stop_price = close - direction * exits.stop_distance
        reversing = projected != 0
        if reversing:
            closing = self._intent(
                now,
                direction,
                "reverse_close",
                abs(projected),
                close,
                reason="reverse",
                signal_id=signal_id,
            )
            self.queue.append(QueuedIntent(closing, OrderContext("reverse_close", "reverse")))
        kind = "reverse_open" if reversing else "entry"
        opening = self._intent(
            now,
            direction,
            kind,
            signal.quantity,
            close,
            stop_price=stop_price,
            score=signal.score,
            reason=signal.reason,
            signal_id=signal_id,
            features=self._features(now, bar, signal.details),
        )
        context = OrderContext(kind, signal.reason, signal_id, signal.score, exits)
        self.queue.append(QueuedIntent(opening, context))

    def _features(self, now: int, bar: Mapping[str, float],
                  details: Mapping[str, object] | None) -> dict[str, float]:
        """What risk rules may read: `intent_features`, plus what the engine knows by then
        unless the strategy supplied its own: the announced `funding_rate` of a perpetual and,
        when a rule needs them, `spread_bps`, `spread_avg_bps`, `quote_volume_24h`
        (`engine.market_context`)."""
        features = intent_features(bar, details)
        known: dict[str, float | None] = {"funding_rate": self.funding.rate_at(now)}
        if self.market is not None:
            spread, average, samples = self.market.spread_at(now)
            known.update(spread_bps=spread, spread_avg_bps=average, spread_samples=samples)
            known["quote_volume_24h"] = self.market.quote_volume_at(now)
        for name, value in known.items():
            if value is not None and math.isfinite(value) and name not in features:
                features[name] = value
        return features

    # ------------------------------------------------------------------ decisions

    def decide_queued(self, horizon: int, gateway: RiskGateway, batch: FeatureBatch) -> bool:
        """Decide queued intents in order; True when stopped at one at or beyond `horizon`."""
        while self.queue:
            queued = self.queue[0]
            if queued.intent.ts_event >= horizon:
                return True
            self._decide(queued, gateway, batch)
            self.queue.popleft()
        return False

    def _decide(self, queued: QueuedIntent, gateway: RiskGateway, batch: FeatureBatch) -> None:
        intent = queued.intent
        self.settle_funding(intent.ts_event)
        decision = gateway.decide(intent, list(self.updates))
        self.updates = []
        if intent.intent_kind == POSITION_CHECK:
            self._on_position_check(intent, decision)
            return
        self.counters["intents"] += 1
        approved = (
            decision.approved
            and decision.intent_id == intent.intent_id
            and math.isfinite(decision.quantity)
            and decision.quantity > 0
        )
        signal_id = intent.signal_id if not intent.reduce_only else None
        if not approved:
            self.counters["rejected_intents"] += 1
            if signal_id is not None:
                self.journal_signal(
                    self.signals.resolve(signal_id, False, f"risk:{decision.rule}"))
            return
        self.counters["approved_intents"] += 1
        if self.venue is not None:
            self._send_to_venue(queued, decision.quantity, signal_id)
            return
        if self.limit_entries is not None and not intent.reduce_only:
            self._start_limit_entry(queued, decision.quantity, signal_id, batch)
            return
        order = self.matcher.submit(intent, decision.quantity, intent.ts_event)
        self._contexts[order.order_id] = queued.context
        self.counters["orders"] += 1
        self.journal["orders"].extend(self.matcher.drain_rows())
        if signal_id is not None:
            estimate = self.matcher.estimate_slippage_bps(
                intent.side,
                decision.quantity,
                intent.ts_event,
                batch.trades,
                batch.quotes,
                batch.depth,
            )
            self.signals.await_fill(signal_id, order.order_id, estimate)

    def _on_position_check(self, intent: OrderIntent, decision: RiskDecision) -> None:
        """Close the whole position at market when risk says so, unless an exit is already on
        its way (it closes the position anyway)."""
        self.counters["position_checks"] += 1
        quantity = abs(self.tracker.signed_quantity)
        exit_in_flight = (
            any(order.intent.reduce_only for order in self.matcher.pending)
            or any(queued.intent.reduce_only for queued in self.queue)
            or (self.venue is not None and self.venue.exit_working()))
        if not decision.directive or quantity == 0 or exit_in_flight:
            return
        self.counters["risk_flattens"] += 1
        rule = decision.directive.split(":", 1)[0]
        self.queue_exit(intent.ts_event, intent.reference_price, quantity, f"risk:{rule}", None)

    # ------------------------------------------------------------------ fills and marks

    def fill(self, batch: FeatureBatch, index: int) -> None:
        """Fill the first order in flight against trade `index` of the batch (wholly or in
        part: the order stays in flight until the matcher is done with it)."""
        self.settle_funding(int(batch.trades.ts_event[index]))
        order = self.matcher.pending[0]
        order_id = order.order_id
        fill = self.matcher.fill_next(
            batch.trades, index, self.next_sequence(), batch.quotes, batch.depth
        )
        self.journal["orders"].extend(self.matcher.drain_rows())
        if self.matcher.is_pending(order_id):
            context = self._contexts[order_id]
        else:
            context = self._contexts.pop(order_id)
            if order.filled < order.quantity * (1 - 1e-9):  # rejected or remainder cancelled
                self.updates.append(OrderReleased(
                    self.symbol, int(batch.trades.ts_event[index]), self.next_sequence(),
                    order_id, "rejected" if fill is None else "remainder cancelled"))
        if fill is None:  # rejected (no finite price: fail closed) or the rest was cancelled
            self._resolve_signal_of(order_id, "order_rejected")
            return
        self._apply_fill(fill, context)

    def _resolve_signal_of(self, order_id: str, note: str) -> None:
        """Journal the signal still waiting on `order_id` (none if a fill already did)."""
        self.journal_signal(self.signals.resolve_order(order_id, note))

    def journal_signal(self, row: dict[str, Any] | None) -> None:
        """Journal a finished signal row (None: it still waits for its outcome or label)."""
        if row is not None:
            self.journal["signals"].append(row)

    def _apply_fill(self, fill: Fill, context: OrderContext) -> None:
        """A fill (paper or venue) into the position, risk's updates, the journal, its signal."""
        trade_rows = self.tracker.apply_fill(fill, context)
        fill = replace(fill, stop_price=self.tracker.stop_price)
        self.updates.append(fill)
        self.counters["fills"] += 1
        self.journal["fills"].append(fill_row(fill))
        self.journal["trades"].extend(trade_rows)
        self.counters["round_trips"] += len(trade_rows)
        self.journal_signal(self.signals.on_fill(fill))

    # ------------------------------------------------------------------ marks

    def mark(self, ts_event: int, price: float) -> None:
        """Mark the position to market (with its current stop) for risk."""
        self.settle_funding(ts_event)
        self.updates.append(
            Mark(self.symbol, ts_event, self.next_sequence(), price, self.tracker.stop_price)
        )
        self.counters["marks"] += 1

    def settle_funding(self, until: int) -> None:
        """Pay or receive funding for every settlement before `until` (`engine.funding`)."""
        for settlement in self.funding.due(until):
            payment = funding_payment(
                self.symbol, settlement, self.tracker.signed_quantity, self.next_sequence()
            )
            if payment is not None:
                self.tracker.add_funding(payment.amount)
                self.updates.append(payment)
                self.journal.setdefault("funding", []).append(funding_row(payment))
                self.counters["funding_payments"] += 1

    def finish(self) -> None:
        """End of stream: signals still waiting for a fill are journaled as acted."""
        self.journal["signals"].extend(self.signals.close_all())

    # ------------------------------------------------------------------ journal

    def dead_letter(
        self, stage: str, reason: str, detail: str, source: str, ts_event: int, payload: str = ""
    ) -> None:
        self.counters["dead_letters"] += 1
        self.journal["dead_letters"].append(
            {
                "key": f"{self.symbol}:{stage}:{self.next_sequence()}",
                "stage": stage,
                "reason": reason,
                "detail": detail,
                "source": source,
                "symbol": self.symbol,
                "ts_event": ts_event,
                "ts_recv": None,
                "payload": payload[:2000],
            }
        )

    def drain(self) -> tuple[list[PortfolioUpdate], dict[str, list[dict[str, Any]]], Counter[str]]:
        """Updates, journal rows and counters since the last drain."""
        drained = (self.updates, self.journal, self.counters)
        self.updates = []
        self.journal = {name: [] for name in JOURNAL_TABLES_OUT}
        self.counters = Counter()
        return drained


def intent_features(
    bar: Mapping[str, float], details: Mapping[str, object] | None
) -> dict[str, float]:
    """The numbers risk rules may use: the bar's values and indicators, then the signal's numeric
    details (which win on a name clash). Non-finite values are left out."""
    features: dict[str, float] = {}
    for source in (bar, details or {}):
        for name, value in source.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                if math.isfinite(value):
                    features[name] = float(value)
    return features


def fill_row(fill: Fill) -> dict[str, Any]:
    """A `fills` journal row."""
    return {
        "key": fill.fill_id,
        "ts_event": fill.ts_event,
        "symbol": fill.symbol,
        "order_id": fill.order_id,
        "side": fill.side,
        "quantity": fill.quantity,
        "price": fill.price,
        "reference_price": fill.reference_price,
        "fee": fill.fee,
        "liquidity": fill.liquidity,
        "slippage_bps": fill.slippage_bps,
        "latency_ms": fill.latency_ms,
    }
