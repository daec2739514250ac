"""The trading state behind the local Binance USD-M server: orders, algo orders, positions, cash.

A deliberately small venue, enough to test order handling against Binance's REST shapes:
- one-way mode (positionSide BOTH), cross margin, one quote asset (USDT);
- a market order fills at once, in full, at the symbol's mark price (set with `set_mark`);
- a limit order that crosses the mark fills at once at the mark (taker), otherwise it rests
  until `fill` (out of band, e.g. a partial fill) or a cancel;
- conditional (algo) orders, i.e. STOP_MARKET / TAKE_PROFIT_MARKET, rest until `set_mark`
  crosses their trigger; they then place a reduce-only market order;
- reduce-only orders never increase a position (rejected with -2022 when nothing to reduce);
- margin check: initial margin of positions and resting orders at `leverage` must fit the
  wallet, else -2019 "Margin is insufficient.";
- `countdownCancelAll` timers fire on the venue's clock (injectable) at the next request.
Errors are raised as `VenueRejectError(http_status, code, msg)`; the HTTP layer turns them into
Binance's `{"code": ..., "msg": ...}` bodies.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FEE_RATE = 0.0004
SYMBOLS = ("BTCUSDT", "ETHUSDT")


class VenueRejectError(Exception):
    """A request the venue refuses; becomes an HTTP error with a Binance error body."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg


def _fmt(value: float) -> str:
    return f"{value:.8f}".rstrip("0").rstrip(".") if value else "0"


@dataclass
class VenueOrder:
    """A regular order (`/fapi/v1/order`) or an algo order (`/fapi/v1/algoOrder`)."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    quantity: float
    price: float
    trigger_price: float
    reduce_only: bool
    time_ms: int
    algo: bool = False
    status: str = "NEW"
    executed_qty: float = 0.0
    cum_quote: float = 0.0
    update_ms: int = 0

    @property
    def open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def as_json(self) -> dict[str, Any]:
        if self.algo:
            return {
                "algoId": self.order_id, "clientAlgoId": self.client_order_id,
                "algoType": "CONDITIONAL", "orderType": self.order_type, "symbol": self.symbol,
                "side": self.side, "positionSide": "BOTH", "timeInForce": "GTC",
                "quantity": _fmt(self.quantity), "algoStatus": self.status,
                "triggerPrice": _fmt(self.trigger_price), "price": _fmt(self.price),
                "workingType": "CONTRACT_PRICE", "priceMatch": "NONE", "closePosition": False,
                "priceProtect": False, "reduceOnly": self.reduce_only,
                "createTime": self.time_ms, "updateTime": self.update_ms or self.time_ms,
                "triggerTime": 0, "goodTillDate": 0,
            }
        average = self.cum_quote / self.executed_qty if self.executed_qty else 0.0
        return {
            "orderId": self.order_id, "symbol": self.symbol, "status": self.status,
            "clientOrderId": self.client_order_id, "price": _fmt(self.price),
            "avgPrice": _fmt(average), "origQty": _fmt(self.quantity),
            "executedQty": _fmt(self.executed_qty), "cumQty": _fmt(self.executed_qty),
            "cumQuote": _fmt(self.cum_quote), "timeInForce": "GTC", "type": self.order_type,
            "reduceOnly": self.reduce_only, "closePosition": False, "side": self.side,
            "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
            "priceProtect": False, "origType": self.order_type, "time": self.time_ms,
            "updateTime": self.update_ms or self.time_ms,
        }


@dataclass
class Position:
    amount: float = 0.0  # signed, base units
    entry_price: float = 0.0


@dataclass
class TradingVenue:
    """All venue state; every public method takes the lock (the HTTP server is threaded)."""

    wallet: float = 10_000.0
    leverage: int = 5
    marks: dict[str, float] = field(
        default_factory=lambda: {"BTCUSDT": 60_000.0, "ETHUSDT": 2_500.0}
    )
    clock: Callable[[], float] = time.monotonic  # seconds; drives countdownCancelAll
    withdrawals_enabled: bool = False
    orders: dict[int, VenueOrder] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    countdowns: dict[str, float] = field(default_factory=dict)  # symbol -> deadline (clock s)
    countdown_fired: list[str] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    # ---------------------------------------------------------------- lookups

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)

    def find(self, symbol: str, order_id: str | None, client_id: str | None,
             algo: bool) -> VenueOrder:
        with self.lock:
            for order in self.orders.values():
                if order.symbol != symbol or order.algo != algo:
                    continue
                if (order_id is not None and str(order.order_id) == order_id) or (
                    client_id is not None and order.client_order_id == client_id
                ):
                    return order
        raise VenueRejectError(400, -2013, "Order does not exist.")

    def by_client_id(self, client_id: str) -> VenueOrder:
        with self.lock:
            matches = [o for o in self.orders.values() if o.client_order_id == client_id]
        if not matches:
            raise KeyError(client_id)
        return matches[-1]

    def open_orders(self, symbol: str | None, algo: bool) -> list[VenueOrder]:
        with self.lock:
            return [o for o in self.orders.values() if o.open and o.algo == algo
                    and (symbol is None or o.symbol == symbol)]

    def position(self, symbol: str) -> Position:
        return self.positions.setdefault(symbol, Position())

    # ---------------------------------------------------------------- orders

    def place(self, params: dict[str, str], algo: bool) -> VenueOrder:
        """Validate and apply a new order (regular or algo) from its request parameters."""
        with self.lock:
            symbol = params.get("symbol", "")
            if symbol not in self.marks:
                raise VenueRejectError(400, -1121, "Invalid symbol.")
            client_id = params.get("clientAlgoId" if algo else "newClientOrderId") or (
                f"venue-{next(self._ids)}")
            if any(o.client_order_id == client_id and o.open for o in self.orders.values()):
                raise VenueRejectError(400, -4015, "Client order id is not valid.")
            order_type = params.get("type", "")
            side = params.get("side", "")
            quantity = float(params.get("quantity", "0") or 0)
            if side not in ("BUY", "SELL") or quantity <= 0:
                raise VenueRejectError(400, -1102, "Mandatory parameter was not sent or malformed.")
            allowed = ("STOP_MARKET", "TAKE_PROFIT_MARKET") if algo else ("LIMIT", "MARKET")
            if order_type not in allowed:
                raise VenueRejectError(400, -1116, "Invalid orderType.")
            order = VenueOrder(
                order_id=next(self._ids), client_order_id=client_id, symbol=symbol, side=side,
                order_type=order_type, quantity=quantity,
                price=float(params.get("price", "0") or 0),
                trigger_price=float(params.get("triggerPrice", "0") or 0),
                reduce_only=params.get("reduceOnly", "false").lower() == "true",
                time_ms=self.now_ms(), algo=algo,
            )
            if order.reduce_only and not algo:
                self._check_reduce(order)
            if not order.reduce_only:
                self._check_margin(order)
            self.orders[order.order_id] = order
            if not algo:
                mark = self.marks[symbol]
                crosses = (order.order_type == "MARKET"
                           or (side == "BUY" and order.price >= mark)
                           or (side == "SELL" and order.price <= mark))
                if crosses:
                    self._execute(order, order.quantity - order.executed_qty, mark)
            return order

    def _check_reduce(self, order: VenueOrder) -> None:
        amount = self.position(order.symbol).amount
        reducing = (amount > 0 and order.side == "SELL") or (amount < 0 and order.side == "BUY")
        if not reducing:
            raise VenueRejectError(400, -2022, "ReduceOnly Order is rejected.")
        order.quantity = min(order.quantity, abs(amount))

    def _check_margin(self, order: VenueOrder) -> None:
        used = sum(abs(p.amount) * self.marks[s] for s, p in self.positions.items())
        used += sum((o.quantity - o.executed_qty) * (o.price or self.marks[o.symbol])
                    for o in self.orders.values() if o.open and not o.algo and not o.reduce_only)
        new = order.quantity * (order.price or self.marks[order.symbol])
        if (used + new) / self.leverage > self.wallet:
            raise VenueRejectError(400, -2019, "Margin is insufficient.")

    def _execute(self, order: VenueOrder, quantity: float, price: float) -> None:
        """Fill `quantity` of `order` at `price`: position, realised P&L, fee, trade record."""
        position = self.position(order.symbol)
        signed = quantity if order.side == "BUY" else -quantity
        realized = 0.0
        if position.amount and (position.amount > 0) != (signed > 0):
            closed = min(abs(signed), abs(position.amount))
            direction = 1.0 if position.amount > 0 else -1.0
            realized = closed * (price - position.entry_price) * direction
        new_amount = position.amount + signed
        if abs(new_amount) < 1e-12:
            position.amount, position.entry_price = 0.0, 0.0
        elif position.amount == 0 or (position.amount > 0) != (new_amount > 0):
            position.amount, position.entry_price = new_amount, price
        elif abs(new_amount) > abs(position.amount):
            total = abs(position.amount) * position.entry_price + abs(signed) * price
            position.amount, position.entry_price = new_amount, total / abs(new_amount)
        else:
            position.amount = new_amount
        fee = quantity * price * FEE_RATE
        self.wallet += realized - fee
        order.executed_qty += quantity
        order.cum_quote += quantity * price
        order.status = "FILLED" if order.executed_qty >= order.quantity - 1e-12 else (
            "PARTIALLY_FILLED")
        order.update_ms = self.now_ms()
        self.trades.append({
            "buyer": order.side == "BUY", "commission": _fmt(fee), "commissionAsset": "USDT",
            "id": next(self._ids), "maker": order.order_type == "LIMIT", "orderId": order.order_id,
            "price": _fmt(price), "qty": _fmt(quantity), "quoteQty": _fmt(quantity * price),
            "realizedPnl": _fmt(realized), "side": order.side, "positionSide": "BOTH",
            "symbol": order.symbol, "time": order.update_ms,
        })

    def fill(self, client_id: str, quantity: float | None = None,
             price: float | None = None) -> VenueOrder:
        """Out of band: fill a resting order (by default all that remains, at its limit)."""
        with self.lock:
            order = self.by_client_id(client_id)
            if not order.open or order.algo:
                raise ValueError(f"{client_id} is not a resting regular order")
            remaining = order.quantity - order.executed_qty
            self._execute(order, min(quantity or remaining, remaining), price or order.price)
            return order

    def cancel(self, order: VenueOrder) -> VenueOrder:
        with self.lock:
            if not order.open:
                raise VenueRejectError(400, -2011, "Unknown order sent.")
            order.status = "CANCELED"
            order.update_ms = self.now_ms()
            return order

    def cancel_all(self, symbol: str, algo: bool) -> int:
        with self.lock:
            orders = self.open_orders(symbol, algo)
            for order in orders:
                self.cancel(order)
            return len(orders)

    # ---------------------------------------------------------------- market moves

    def set_mark(self, symbol: str, price: float) -> None:
        """Move the mark; algo orders whose trigger it crosses place a reduce-only market order."""
        with self.lock:
            self.marks[symbol] = price
            for order in self.open_orders(symbol, algo=True):
                up = order.side == "BUY"
                stop = order.order_type == "STOP_MARKET"
                hit = (price >= order.trigger_price) if up == stop else (
                    price <= order.trigger_price)
                if not hit:
                    continue
                order.status = "FINISHED"
                order.update_ms = self.now_ms()
                triggered = VenueOrder(
                    order_id=next(self._ids), client_order_id=f"{order.client_order_id}-t",
                    symbol=symbol, side=order.side, order_type="MARKET",
                    quantity=order.quantity, price=0.0, trigger_price=0.0, reduce_only=True,
                    time_ms=order.update_ms,
                )
                try:
                    self._check_reduce(triggered)
                except VenueRejectError:
                    triggered.status = "EXPIRED"
                    self.orders[triggered.order_id] = triggered
                    continue
                self.orders[triggered.order_id] = triggered
                self._execute(triggered, triggered.quantity, price)

    # ---------------------------------------------------------------- countdown cancel-all

    def set_countdown(self, symbol: str, countdown_ms: int) -> None:
        with self.lock:
            if countdown_ms <= 0:
                self.countdowns.pop(symbol, None)
            else:
                self.countdowns[symbol] = self.clock() + countdown_ms / 1000

    def expire_countdowns(self) -> None:
        """Cancel every open order of a symbol whose countdown has run out (Binance's behaviour)."""
        with self.lock:
            now = self.clock()
            for symbol, deadline in list(self.countdowns.items()):
                if now >= deadline:
                    self.cancel_all(symbol, algo=False)
                    self.cancel_all(symbol, algo=True)
                    del self.countdowns[symbol]
                    self.countdown_fired.append(symbol)

    # ---------------------------------------------------------------- REST bodies

    def position_rows(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = []
            for symbol, position in sorted(self.positions.items()):
                if not position.amount:
                    continue
                mark = self.marks[symbol]
                notional = position.amount * mark
                rows.append({
                    "symbol": symbol, "positionSide": "BOTH", "positionAmt": _fmt(position.amount),
                    "entryPrice": _fmt(position.entry_price),
                    "breakEvenPrice": _fmt(position.entry_price), "markPrice": _fmt(mark),
                    "unRealizedProfit": _fmt((mark - position.entry_price) * position.amount),
                    "liquidationPrice": "0", "isolatedMargin": "0", "notional": _fmt(notional),
                    "marginAsset": "USDT", "isolatedWallet": "0",
                    "initialMargin": _fmt(abs(notional) / self.leverage), "maintMargin": "0",
                    "positionInitialMargin": _fmt(abs(notional) / self.leverage),
                    "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0",
                    "askNotional": "0", "leverage": str(self.leverage), "marginType": "cross",
                    "updateTime": self.now_ms(),
                })
            return rows

    def account(self) -> dict[str, Any]:
        with self.lock:
            unrealized = sum((self.marks[s] - p.entry_price) * p.amount
                             for s, p in self.positions.items() if p.amount)
            margin = sum(abs(p.amount) * self.marks[s] for s, p in self.positions.items())
            margin /= self.leverage
            available = self.wallet + unrealized - margin
            asset = {
                "asset": "USDT", "walletBalance": _fmt(self.wallet),
                "unrealizedProfit": _fmt(unrealized),
                "marginBalance": _fmt(self.wallet + unrealized),
                "maintMargin": "0", "initialMargin": _fmt(margin),
                "positionInitialMargin": _fmt(margin), "openOrderInitialMargin": "0",
                "crossWalletBalance": _fmt(self.wallet), "crossUnPnl": _fmt(unrealized),
                "availableBalance": _fmt(available), "maxWithdrawAmount": _fmt(available),
                "updateTime": self.now_ms(),
            }
            return {
                "totalInitialMargin": _fmt(margin), "totalMaintMargin": "0",
                "totalWalletBalance": _fmt(self.wallet), "totalUnrealizedProfit": _fmt(unrealized),
                "totalMarginBalance": _fmt(self.wallet + unrealized),
                "totalPositionInitialMargin": _fmt(margin), "totalOpenOrderInitialMargin": "0",
                "totalCrossWalletBalance": _fmt(self.wallet), "totalCrossUnPnl": _fmt(unrealized),
                "availableBalance": _fmt(available), "maxWithdrawAmount": _fmt(available),
                "assets": [asset], "positions": [],
            }
