"""Protective orders placed on the entry fill: a stop-loss and layered take-profits, as OCO.

On the first entry fill the tactic places a reduce-only stop-market "sl" for the filled quantity
at `stop_atr` x ATR from the fill price and one reduce-only limit "tp1", "tp2", ... per resting
layer of the take-profit plan. Later entry fills resize them (amend quantity): the stop always
covers the open position and layer i always holds `fraction_i x entry filled - exited by it`, so
the resting take-profits never exceed the position. Levels stay anchored to the first fill.

OCO: a stop fill cancels every take-profit; the fill that closes the position cancels the stop
(and any take-profit left). A take-profit fill shrinks the stop to the rest of the position.

A layer whose take-profit already filled passes its share of later entry fills to the last layer
still open.

Plans ("50/50", "4x25", "30/30/30/10"): fractions of the entry; a layer without a target (the
last 25% of "4x25") rests nowhere and leaves with the ATR-trailed stop. After the first
take-profit fills, the stop moves to breakeven (entry +- offset). The ATR trailing stop follows
the best close since entry by `trail_atr` x ATR; `trail_activation` says from when ("always",
"after_tp1", or "last_layer": when only the last layer is left). Stops only ever tighten.

Time exits: `time_exit` closes the position when no take-profit has filled by then, `max_hold`
closes it in any case. A time exit first cancels every resting order and, once all cancels are
confirmed, sends a reduce-only market order "x" for what is left (so no resting order can fill
after the market order and flip the position). A stop the venue cancels, rejects or expires
unasked leaves the position unprotected: the tactic then exits the same way ("stop_lost").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from engine.config import _Frozen
from engine.orders import QUANTITY_TOLERANCE
from engine.tactics.commands import (
    AmendOrder,
    Bar,
    CancelOrder,
    Command,
    OrderClosed,
    PlaceOrder,
    TacticFill,
)
from engine.timeframes import parse_duration_ns

STOP = "sl"
CLOSE = "x"
PlanName = Literal["50/50", "4x25", "30/30/30/10"]

# name -> fractions of the entry, and default targets in ATR multiples (None: trailing layer)
TAKE_PROFIT_PLANS: dict[str, tuple[tuple[float, float | None], ...]] = {
    "50/50": ((0.5, 2.0), (0.5, 4.0)),
    "4x25": ((0.25, 1.0), (0.25, 2.0), (0.25, 3.0), (0.25, None)),
    "30/30/30/10": ((0.3, 1.0), (0.3, 2.0), (0.3, 3.0), (0.1, 4.0)),
}


class ProtectionConfig(_Frozen):
    """Stop, take-profit plan, breakeven, trailing and time exits; distances in ATR multiples."""

    stop_atr: float = Field(1.5, gt=0)
    plan: PlanName = "50/50"
    target_atr: tuple[float, ...] | None = None  # overrides the plan's targets (resting layers)
    breakeven_after_tp1: bool = True
    breakeven_offset_pct: float = Field(0.0005, ge=0, lt=0.05)
    trail_atr: float | None = Field(2.0, gt=0)
    trail_activation: Literal["always", "after_tp1", "last_layer"] = "last_layer"
    time_exit: str | None = None
    max_hold: str | None = "24h"

    @model_validator(mode="after")
    def _check(self) -> ProtectionConfig:
        resting = sum(1 for _, target in TAKE_PROFIT_PLANS[self.plan] if target is not None)
        if self.target_atr is not None and (
            len(self.target_atr) != resting or any(value <= 0 for value in self.target_atr)
        ):
            raise ValueError(
                f"target_atr: plan {self.plan} needs {resting} positive ATR multiples"
            )
        for key in ("time_exit", "max_hold"):
            value = getattr(self, key)
            if value is not None:
                try:
                    ns = parse_duration_ns(value)
                except ValueError as error:
                    raise ValueError(f"{key}: {error}") from None
                if ns <= 0:
                    raise ValueError(f"{key}: must be positive, got {value!r}")
        return self

    def layers(self) -> list[tuple[float, float | None]]:
        """(fraction, target ATR multiple or None) per layer."""
        overrides = iter(self.target_atr or ())
        return [
            (fraction, None if target is None else next(overrides, target))
            for fraction, target in TAKE_PROFIT_PLANS[self.plan]
        ]


@dataclass
class Layer:
    purpose: str
    fraction: float
    price: float | None  # None: trailing layer, no resting order
    exited: float = 0.0
    resting: float = 0.0  # quantity of the resting order (0: none or closed)
    done: bool = False


class ProtectiveOrders:
    """Protection of one position opened by `side` entry fills (+1 long, -1 short)."""

    def __init__(self, config: ProtectionConfig, side: int, atr: float) -> None:
        if side not in (1, -1):
            raise ValueError(f"side must be +1 or -1, got {side!r}")
        if not (math.isfinite(atr) and atr > 0):
            raise ValueError(f"atr must be > 0, got {atr}")
        self.config = config
        self.side = side
        self.atr = atr
        self.entered = 0.0  # entry quantity filled
        self.position = 0.0  # open quantity
        self.entry_price = math.nan
        self.entry_ts: int | None = None
        self.best_close = math.nan
        self.stop_price: float | None = None
        self.stop_reason = "stop_loss"
        self.stop_open = False
        self.layers: list[Layer] = []
        self.take_profits_hit = 0
        self.exit_reason = ""  # set when an exit (stop fill or time exit) has begun
        self.pending_cancels: set[str] = set()
        self.closes_sent = 0
        self.close_orders: dict[str, float] = {}  # market closes sent: purpose -> unfilled
        self.attention = ""  # why the tactic could not finish on its own (a close was refused)
        self.done = False

    # ------------------------------------------------------------------ views

    def resting_take_profit_quantity(self) -> float:
        return sum(layer.resting for layer in self.layers)

    def stop_quantity(self) -> float:
        return self.position if self.stop_open else 0.0

    # ------------------------------------------------------------------ events

    def on_entry_fill(self, fill: TacticFill) -> list[Command]:
        """An entry execution: open or grow the position and its protective orders."""
        if self.done:
            raise RuntimeError("entry fill after the position was closed by its protection")
        previous = self.entered
        self.entered += fill.quantity
        self.position += fill.quantity
        self.entry_price = (
            fill.price if previous == 0
            else (self.entry_price * previous + fill.price * fill.quantity) / self.entered
        )
        if self.exit_reason:  # exiting: the new quantity leaves with the exit too
            return self._continue_exit()
        if self.entry_ts is None:
            return self._open(fill)
        commands: list[Command] = [
            AmendOrder(STOP, quantity=self.position, reason="entry partially filled: resize")
        ]
        for layer, target in zip(self.layers, self._layer_targets(), strict=True):
            if layer.price is not None and not layer.done and target != layer.resting:
                layer.resting = target
                commands.append(AmendOrder(layer.purpose, quantity=target,
                                           reason="entry partially filled: resize"))
        return commands

    def on_fill(self, fill: TacticFill) -> list[Command]:
        """An execution of a protective or closing order."""
        if fill.purpose.startswith("tp"):
            self._layer(fill.purpose)  # raises for a take-profit this protection never placed
        elif fill.purpose not in (STOP, *self.close_orders):
            raise ValueError(f"fill of {fill.purpose!r}: not an order of this protection")
        if fill.quantity > self.position * (1 + QUANTITY_TOLERANCE):
            raise ValueError(
                f"{fill.purpose} filled {fill.quantity} with only {self.position} open"
            )
        self.position = max(0.0, self.position - fill.quantity)
        flat = self.position <= QUANTITY_TOLERANCE * max(self.entered, 1e-300)
        commands: list[Command] = []
        if fill.purpose == STOP:
            if not self.exit_reason:
                self.exit_reason = self.stop_reason
                commands += self._cancel_take_profits("stop filled: OCO")
        elif fill.purpose.startswith("tp"):
            layer = self._layer(fill.purpose)
            layer.exited += fill.quantity
            layer.resting = max(0.0, layer.resting - fill.quantity)
            if layer.resting <= QUANTITY_TOLERANCE * self.entered:
                layer.resting = 0.0
                if not layer.done:  # not a fill racing a cancel already sent
                    layer.done = True
                    self.take_profits_hit += 1
                    if not flat:
                        commands += self._after_take_profit()
            if not flat and self.stop_open:
                commands.append(AmendOrder(STOP, quantity=self.position,
                                           reason=f"{fill.purpose} filled: resize"))
        elif fill.purpose in self.close_orders:
            self.close_orders[fill.purpose] = max(0.0, self.close_orders[fill.purpose]
                                                  - fill.quantity)
        if flat:
            self.position = 0.0
            self.done = True
            if self.stop_open and fill.purpose != STOP:
                commands.append(CancelOrder(STOP, "position closed: OCO"))
            self.stop_open = False
            commands += self._cancel_take_profits("position closed: OCO")
        return commands

    def on_order_closed(self, event: OrderClosed) -> list[Command]:
        """A protective order ended without filling (canceled, rejected, expired)."""
        self.pending_cancels.discard(event.purpose)
        if event.purpose in self.close_orders:  # a refused market close: never retried blindly
            self.close_orders.pop(event.purpose)
            self.attention = f"market close {event.purpose} {event.state}; position open"
            return []
        if event.purpose == STOP:
            lost = self.stop_open and not self.done
            self.stop_open = False
            if lost and not self.exit_reason:
                return self._begin_exit(f"stop_lost: stop order {event.state}")
        elif event.purpose.startswith("tp"):
            layer = self._layer(event.purpose)
            layer.resting, layer.done = 0.0, True
        if self.exit_reason and not self.done:
            return self._continue_exit()
        return []

    def on_bar(self, bar: Bar) -> list[Command]:
        """A bar closed: update ATR and the best close, trail the stop, check time exits."""
        if math.isfinite(bar.atr) and bar.atr > 0:
            self.atr = bar.atr
        if self.entry_ts is None or self.done or self.exit_reason:
            return []
        if math.isfinite(bar.close):
            better = (bar.close - self.best_close) * self.side > 0
            self.best_close = bar.close if math.isnan(self.best_close) or better else (
                self.best_close)
        commands: list[Command] = []
        trail = self.config.trail_atr
        if trail is not None and self._trailing_active():
            commands += self._tighten(self.best_close - self.side * trail * self.atr,
                                      "trailing_stop")
        return commands + self.on_time(bar.ts_event)

    def on_time(self, ts_event: int) -> list[Command]:
        if self.entry_ts is None or self.done or self.exit_reason:
            return []
        held = ts_event - self.entry_ts
        max_hold = self.config.max_hold
        if max_hold is not None and held >= parse_duration_ns(max_hold):
            return self._begin_exit(f"max_hold: held {max_hold}")
        time_exit = self.config.time_exit
        if time_exit is not None and self.take_profits_hit == 0 and held >= parse_duration_ns(
            time_exit
        ):
            return self._begin_exit(f"time_exit: no take-profit within {time_exit}")
        return []

    # ------------------------------------------------------------------ internals

    def _open(self, fill: TacticFill) -> list[Command]:
        self.entry_ts = fill.ts_event
        self.best_close = fill.price
        exit_side = -self.side
        self.stop_price = fill.price - self.side * self.config.stop_atr * self.atr
        if not self.stop_price > 0:
            self.stop_price = None
            return self._begin_exit("stop_invalid: stop distance exceeds the price")
        self.stop_open = True
        commands: list[Command] = [
            PlaceOrder(STOP, exit_side, "stop_market", self.position, stop_price=self.stop_price,
                       reduce_only=True, reason=f"stop {self.config.stop_atr} ATR")
        ]
        for index, (fraction, target) in enumerate(self.config.layers(), start=1):
            price = None if target is None else fill.price + self.side * target * self.atr
            if price is not None and not price > 0:
                price = None  # unreachable target: the layer leaves with the stop
            self.layers.append(Layer(f"tp{index}", fraction, price))
        for layer, quantity in zip(self.layers, self._layer_targets(), strict=True):
            if layer.price is not None:
                layer.resting = quantity
                commands.append(PlaceOrder(layer.purpose, exit_side, "limit", quantity,
                                           price=layer.price, reduce_only=True,
                                           reason=f"take-profit {layer.fraction:.0%}"))
        return commands

    def _layer_targets(self) -> list[float]:
        """Resting quantity each layer should hold for the entry filled so far: its fraction of
        the entry less what it already exited. The share of a layer already done (entry that
        grew after its take-profit filled) goes to the last layer still open."""
        targets = [0.0] * len(self.layers)
        carry = 0.0
        for index, layer in enumerate(self.layers):
            share = max(0.0, layer.fraction * self.entered - layer.exited)
            if layer.done:
                carry += share
            else:
                targets[index] = share
        still_open = [index for index, layer in enumerate(self.layers) if not layer.done]
        if still_open:
            targets[still_open[-1]] += carry
        return targets

    def _layer(self, purpose: str) -> Layer:
        for layer in self.layers:
            if layer.purpose == purpose:
                return layer
        raise ValueError(f"unknown protective order {purpose!r}")

    def _after_take_profit(self) -> list[Command]:
        commands: list[Command] = []
        if self.take_profits_hit == 1 and self.config.breakeven_after_tp1:
            offset = self.config.breakeven_offset_pct
            commands += self._tighten(self.entry_price * (1 + self.side * offset),
                                      "breakeven_stop")
        trail = self.config.trail_atr
        if trail is not None and self._trailing_active():
            commands += self._tighten(self.best_close - self.side * trail * self.atr,
                                      "trailing_stop")
        return commands

    def _trailing_active(self) -> bool:
        activation = self.config.trail_activation
        if activation == "always":
            return True
        if activation == "after_tp1":
            return self.take_profits_hit >= 1
        return sum(1 for layer in self.layers if not layer.done) <= 1

    def _tighten(self, price: float, reason: str) -> list[Command]:
        if not self.stop_open or not (math.isfinite(price) and price > 0):
            return []
        if self.stop_price is not None and (price - self.stop_price) * self.side <= 0:
            return []
        self.stop_price, self.stop_reason = price, reason
        return [AmendOrder(STOP, stop_price=price, reason=reason)]

    def _cancel_take_profits(self, reason: str) -> list[Command]:
        commands: list[Command] = []
        for layer in self.layers:
            if layer.resting > 0 and not layer.done:
                layer.done = True
                self.pending_cancels.add(layer.purpose)
                commands.append(CancelOrder(layer.purpose, reason))
        return commands

    def _begin_exit(self, reason: str) -> list[Command]:
        self.exit_reason = reason
        commands = self._cancel_take_profits(reason)
        if self.stop_open:
            self.stop_open = False
            self.pending_cancels.add(STOP)
            commands.append(CancelOrder(STOP, reason))
        return commands + self._continue_exit()

    def _continue_exit(self) -> list[Command]:
        """Send the market close once no cancel is outstanding (nothing else can fill)."""
        if self.pending_cancels or self.stop_open or self.attention:
            return []
        quantity = self.position - sum(self.close_orders.values())
        if quantity <= QUANTITY_TOLERANCE * self.entered:
            return []
        already = self.closes_sent
        self.closes_sent += 1
        purpose = CLOSE if already == 0 else f"{CLOSE}{already + 1}"
        self.close_orders[purpose] = quantity
        return [PlaceOrder(purpose, -self.side, "market", quantity, reduce_only=True,
                           reason=self.exit_reason)]
