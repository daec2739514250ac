"""`LiveExecution`: orders on a real venue, failing closed.

- Nothing trades before `reconcile()` succeeded (`ready`); a HALTED state file keeps it blocked
  until `reset_halt()` and a new reconciliation. Reconciliation takes the venue's open orders,
  positions and balances as the truth, replaces the local view and journals every difference.
- `place` sends one order with a deterministic client order id (`engine.client_ids`; the sequence
  is persisted in the state file so ids never repeat across restarts). Errors follow
  `engine.execution.errors`: "rejected" -> REJECTED; "network"/"exchange" -> UNKNOWN, resolved by
  querying the client id (`resolve_unknown`), never by resubmitting. An order still absent
  `unknown_grace_s` after sending (longer than Binance's recvWindow) is REJECTED. While a symbol
  has an UNKNOWN order, new orders on it are refused.
- `place_stop` puts protective STOP_MARKET / TAKE_PROFIT_MARKET reduce-only orders on the venue.
- Dead-man switch: `heartbeat()` refreshes the venue's countdown cancel-all (USD-M) and the local
  watchdog; `check_watchdog()` (called periodically by the actor) cancels all and flattens once
  `watchdog_timeout_s` passed without a heartbeat, and blocks trading until a reconciliation.
- `kill()` persists HALTED first, then cancels all and closes every position reduce-only.
Time comes from an injected clock (seconds) so tests need no sleeping. Thread-safe (one lock).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.client_ids import client_order_id
from engine.execution.config import ExecutionConfig
from engine.execution.errors import (
    ExecutionError,
    TradingBlockedError,
    UnsafeApiKeyError,
    VenueError,
)
from engine.execution.state_file import ExecutionState, load_state, save_state
from engine.execution.sync import adopt_venue_order, apply_venue_order
from engine.execution.venue import VenueClient
from engine.orders import LEGAL_TRANSITIONS, ManagedOrder, OrderState

log = logging.getLogger(__name__)
_CCXT_TYPES = {"market": "market", "limit": "limit", "stop_market": "market",
               "take_profit_market": "market"}


class LiveExecution:
    """Live orders through one `VenueClient` (see module docs)."""

    def __init__(self, config: ExecutionConfig, client: VenueClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.client = client or VenueClient(config)
        self.clock = clock
        self._lock = threading.RLock()
        self._state = load_state(config.state_file)
        self.ready = False
        self.orders: dict[str, ManagedOrder] = {}
        self.positions: dict[str, float] = {}
        self.balances: dict[str, float] = {}
        self._sent_at: dict[str, float] = {}
        self._journaled: dict[str, int] = {}
        self._events: list[dict[str, Any]] = []
        self._event_count = 0
        self._instance = f"{time.time_ns():x}"  # event keys of two instances never collide
        self._last_heartbeat = clock()
        self._watchdog_fired = False

    def __repr__(self) -> str:
        return f"LiveExecution(run_id={self.config.run_id!r}, ready={self.ready})"

    @property
    def halted(self) -> bool:
        return self._state.halted

    def _now_ns(self) -> int:
        return int(self.clock() * 1e9)

    def _event(self, kind: str, symbol: str, detail: str) -> None:
        ts = self._now_ns()
        self._event_count += 1
        key = f"{kind}:{symbol}:{ts}:{self._instance}:{self._event_count}"
        self._events.append({"key": key,
                             "ts_event": ts, "symbol": symbol, "kind": kind, "detail": detail})
        log.info("execution %s %s: %s", kind, symbol, detail)

    # ---------------------------------------------------------------- start

    def reconcile(self) -> dict[str, Any]:
        """Refuse a withdraw-capable key, then replace the local view by the venue's."""
        with self._lock:
            self.ready = False
            if self.client.withdrawals_enabled():
                raise UnsafeApiKeyError(
                    "the API key has the permission enableWithdrawals: refusing to trade; use a "
                    "key without withdrawal rights")
            self.client.load_markets()
            ts = self._now_ns()
            seen: set[str] = set()
            for symbol in self.config.symbols:
                for venue in self.client.open_orders(symbol):
                    cid = str(venue.get("clientOrderId") or f"venue-{venue.get('id')}")
                    seen.add(cid)
                    local = self.orders.get(cid)
                    if local is None:
                        self.orders[cid] = adopt_venue_order(venue, ts)
                        self._event("reconcile_adopted", symbol, f"open order {cid} at venue")
                    else:
                        apply_venue_order(local, venue, ts, "reconciliation")
            for cid, order in list(self.orders.items()):
                if order.is_open and cid not in seen:
                    self._resolve(order, "reconciliation")
                    self._event("reconcile_closed", order.symbol,
                                f"{cid} not open at venue: {order.state.value}")
            positions = self.client.positions(list(self.config.symbols))
            for symbol in sorted(set(positions) | set(self.positions)):
                had, has = self.positions.get(symbol, 0.0), positions.get(symbol, 0.0)
                if not math.isclose(had, has, abs_tol=1e-12):
                    self._event("reconcile_position", symbol, f"local {had} venue {has}")
            self.positions = positions
            self.balances = self.client.balances()
            self._watchdog_fired = False
            self._last_heartbeat = self.clock()
            self.ready = not self._state.halted
            if self._state.halted:
                self._event("halted", "*", f"trading blocked: {self._state.halt_reason}")
            return self.status()

    def _check_tradable(self, symbol: str) -> None:
        if self._state.halted:
            raise TradingBlockedError(f"HALTED ({self._state.halt_reason}); reset_halt() then "
                                 "reconcile() to trade again")
        if not self.ready:
            raise TradingBlockedError("not reconciled with the venue: call reconcile() first")
        if symbol not in self.config.symbols:
            raise TradingBlockedError(f"{symbol} is not in the configured symbols")
        self.resolve_unknown()
        unknown = [o.client_order_id for o in self.orders.values()
                   if o.symbol == symbol and o.state is OrderState.UNKNOWN]
        if unknown:
            raise TradingBlockedError(f"{symbol} has orders of unknown outcome: {unknown}")

    # ---------------------------------------------------------------- orders

    def _next_client_id(self, symbol: str, purpose: str) -> str:
        sequence = self._state.next_sequence
        self._state = ExecutionState(self._state.halted, self._state.halt_reason, sequence + 1)
        save_state(self.config.state_file, self._state)
        return client_order_id(self.config.run_id, symbol, sequence, purpose)

    def place(self, symbol: str, side: int, quantity: float, order_type: str = "market",
              price: float | None = None, reduce_only: bool = False,
              purpose: str = "e", order_id: str = "", intent_id: str | None = None,
              ) -> ManagedOrder:
        """Send one market or limit order; returns it in its resulting state. `order_id` and
        `intent_id` name the engine's order and intent in the journal (default: the client id)."""
        with self._lock:
            self._check_tradable(symbol)
            return self._submit(symbol, side, quantity, order_type, price, None, reduce_only,
                                purpose, order_id, intent_id)

    def place_stop(self, symbol: str, side: int, quantity: float, stop_price: float,
                   take_profit: bool = False, purpose: str = "sl",
                   order_id: str = "") -> ManagedOrder:
        """A protective reduce-only STOP_MARKET (or TAKE_PROFIT_MARKET) held by the venue."""
        with self._lock:
            self._check_tradable(symbol)
            order_type = "take_profit_market" if take_profit else "stop_market"
            return self._submit(symbol, side, quantity, order_type, None, stop_price, True,
                                purpose, order_id)

    def _submit(self, symbol: str, side: int, quantity: float, order_type: str,
                price: float | None, stop_price: float | None, reduce_only: bool,
                purpose: str, order_id: str = "", intent_id: str | None = None,
                ) -> ManagedOrder:
        if order_type not in _CCXT_TYPES:
            raise ValueError(f"order_type {order_type!r}; allowed: {', '.join(_CCXT_TYPES)}")
        # a reduce-only close of a position that float arithmetic left a hair under a lot step
        # (0.000999999... for 0.001) must not truncate to nothing; the venue caps it anyway
        quantity, price = self.client.to_precision(
            symbol, quantity * (1 + 1e-9) if reduce_only else quantity, price)
        if stop_price is not None:
            stop_price = self.client.to_precision(symbol, quantity, stop_price)[1]
        ts = self._now_ns()
        cid = self._next_client_id(symbol, purpose)
        order = ManagedOrder(cid, symbol, side, order_type, quantity, price, stop_price,
                             reduce_only, order_id=order_id, intent_id=intent_id, ts_created=ts)
        self.orders[cid] = order
        params: dict[str, Any] = {"clientOrderId": cid}
        if reduce_only:
            params["reduceOnly"] = True
        if stop_price is not None:
            key = "takeProfitPrice" if order_type == "take_profit_market" else "stopLossPrice"
            params[key] = stop_price
        order.transition(OrderState.SUBMITTED, ts, "sent")
        self._sent_at[cid] = self.clock()
        try:
            venue = self.client.create(symbol, _CCXT_TYPES[order_type],
                                       "buy" if side > 0 else "sell", quantity, price, params)
        except VenueError as error:
            if error.category in ("rejected", "auth", "clock"):
                order.transition(OrderState.REJECTED, self._now_ns(), str(error))
            else:
                order.transition(OrderState.UNKNOWN, self._now_ns(), str(error))
                self._resolve(order, "create outcome unknown")
            return order
        apply_venue_order(order, venue, self._now_ns(), "create answered")
        return order

    def cancel(self, client_id: str) -> ManagedOrder:
        """Cancel one order; an unanswered cancel is resolved by querying, like a create."""
        with self._lock:
            order = self.orders[client_id]
            if not order.is_open:
                return order
            if order.state is OrderState.UNKNOWN:
                self._resolve(order, "before cancel")
                if not order.is_open or order.state is OrderState.UNKNOWN:
                    return order
            order.transition(OrderState.CANCEL_REQUESTED, self._now_ns(), "cancel sent")
            try:
                venue = self.client.cancel(order.symbol, client_id, self._is_trigger(order))
            except VenueError as error:
                if error.category not in ("not_found", "rejected"):
                    order.transition(OrderState.UNKNOWN, self._now_ns(), str(error))
                self._resolve(order, f"cancel failed: {error.category}")
                return order
            if venue.get("status") is None:  # algo cancel answers carry no order status
                venue = {**venue, "status": "canceled"}
            apply_venue_order(order, venue, self._now_ns(), "cancel answered")
            return order

    @staticmethod
    def _is_trigger(order: ManagedOrder) -> bool:
        return order.stop_price is not None

    def _resolve(self, order: ManagedOrder, reason: str) -> None:
        """Query the venue by client order id and take its answer as the order's truth."""
        try:
            venue = self.client.fetch_order(order.symbol, order.client_order_id,
                                            self._is_trigger(order))
        except VenueError as error:
            if error.category != "not_found":
                log.warning("order %s still unresolved: %s", order.client_order_id, error)
                return
            sent = self._sent_at.get(order.client_order_id, -math.inf)
            if order.state is OrderState.UNKNOWN and (
                    self.clock() - sent < self.config.unknown_grace_s):
                return  # may still arrive at the venue within its recvWindow
            never_seen = order.venue_order_id is None and order.filled_quantity == 0
            target = (OrderState.REJECTED if never_seen
                      and OrderState.REJECTED in LEGAL_TRANSITIONS[order.state]
                      else OrderState.CANCELED)
            order.transition(target, self._now_ns(), f"{reason}: absent at venue")
            return
        apply_venue_order(order, venue, self._now_ns(), reason)

    def refresh(self, client_ids: list[str]) -> list[ManagedOrder]:
        """Query the venue for each still-open order of `client_ids`; returns them all, in the
        given order, in their current state (unknown ids are an error: they were never ours)."""
        with self._lock:
            orders = [self.orders[cid] for cid in client_ids]
            for order in orders:
                if order.is_open:
                    self._resolve(order, "poll")
            return orders

    def position(self, symbol: str) -> float | None:
        """The venue's signed position in `symbol`, queried now (None on spot: no positions)."""
        with self._lock:
            if not self.client.is_futures:
                return None
            size = self.client.positions([symbol]).get(symbol, 0.0)
            self.positions[symbol] = size
            return size

    def resolve_unknown(self) -> list[ManagedOrder]:
        """Query every UNKNOWN order; returns those still unknown."""
        with self._lock:
            for order in list(self.orders.values()):
                if order.state is OrderState.UNKNOWN:
                    self._resolve(order, "query after unknown outcome")
            return [o for o in self.orders.values() if o.state is OrderState.UNKNOWN]

    # ---------------------------------------------------------------- safety

    def heartbeat(self) -> None:
        """The strategy is alive: reset the watchdog and refresh the venue's countdown."""
        with self._lock:
            self._last_heartbeat = self.clock()
            if self.client.is_futures and self.config.countdown_cancel_ms and self.ready:
                for symbol in self.config.symbols:
                    try:
                        self.client.countdown_cancel_all(symbol, self.config.countdown_cancel_ms)
                    except VenueError as error:
                        self._event("countdown_failed", symbol, str(error))

    def check_watchdog(self) -> bool:
        """Flatten when trading is on and no heartbeat came for `watchdog_timeout_s`; True if it
        fired now. Trading stays blocked until the next `reconcile()`."""
        with self._lock:
            silent = self.clock() - self._last_heartbeat
            if not self.ready or self._watchdog_fired or (
                    silent < self.config.watchdog_timeout_s):
                return False
            self._watchdog_fired = True
            self.ready = False
            self._event("watchdog", "*", f"no heartbeat for {silent:.1f} s: flatten")
            self._flatten("watchdog")
            return True

    def kill(self, reason: str = "kill switch") -> dict[str, Any]:
        """Persist HALTED, cancel every order, close every position; returns the status."""
        with self._lock:
            self._state = ExecutionState(True, reason, self._state.next_sequence)
            save_state(self.config.state_file, self._state)
            self.ready = False
            self._event("kill", "*", reason)
            self._flatten(reason)
            return self.status()

    def reset_halt(self) -> None:
        """Clear HALTED (explicit operator action); trading resumes after `reconcile()`."""
        with self._lock:
            self._state = ExecutionState(False, "", self._state.next_sequence)
            save_state(self.config.state_file, self._state)
            self._event("reset_halt", "*", "HALTED cleared; reconcile before trading")

    def _flatten(self, reason: str) -> None:
        """Cancel all orders (venue-wide per symbol) and close every position reduce-only.

        Every step is tried even if an earlier one failed; failures are journaled and raised
        together at the end (HALTED, when killing, is already persisted)."""
        failures: list[str] = []
        for symbol in self.config.symbols:
            try:
                self.client.cancel_all(symbol)
            except VenueError as error:
                failures.append(str(error))
        for order in self.orders.values():
            if order.is_open:
                self._resolve(order, reason)
        try:
            self.positions = self.client.positions(list(self.config.symbols))
            for symbol, size in self.positions.items():
                if size:
                    self._submit(symbol, -1 if size > 0 else 1, abs(size), "market", None, None,
                                 True, "x")
            self.positions = self.client.positions(list(self.config.symbols))
        except VenueError as error:
            failures.append(str(error))
        self._event("flatten", "*", f"{reason}: positions {self.positions}; failures {failures}")
        if failures:
            raise ExecutionError(f"flatten ({reason}) incomplete: {'; '.join(failures)}")

    # ---------------------------------------------------------------- views

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ready": self.ready, "halted": self._state.halted,
                "halt_reason": self._state.halt_reason,
                "open_orders": sorted(c for c, o in self.orders.items() if o.is_open),
                "unknown_orders": sorted(c for c, o in self.orders.items()
                                         if o.state is OrderState.UNKNOWN),
                "positions": dict(self.positions), "balances": dict(self.balances),
                "seconds_since_heartbeat": self.clock() - self._last_heartbeat,
            }

    def drain_journal(self) -> dict[str, list[dict[str, Any]]]:
        """New `orders` rows (every state move) and `execution_events` rows since last drain."""
        with self._lock:
            rows: list[dict[str, Any]] = []
            for cid, order in self.orders.items():
                start = self._journaled.get(cid, 0)
                rows.extend(order.journal_rows(start))
                self._journaled[cid] = len(order.history)
            events, self._events = self._events, []
            return {"orders": rows, "execution_events": events}

