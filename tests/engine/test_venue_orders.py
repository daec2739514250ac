"""VenueOrders: venue reports become fills of the new quantity only; what risk approved but the
venue will never fill is released; a refusal holds orders off instead of hammering the venue;
the venue's position wins when a stop fired at the venue; a checkpoint carries no connection."""

from __future__ import annotations

import itertools
import pickle
from dataclasses import dataclass, field

import pytest

from engine.execution.errors import TradingBlockedError
from engine.execution.port import VenueReport
from engine.position_tracker import OrderContext
from engine.types import OrderIntent
from engine.venue_orders import VenueOrders

SECOND = 1_000_000_000


@dataclass
class ScriptedPort:
    """An ExecutionPort whose answers the test scripts."""

    placed: list[tuple[str, int, float, bool]] = field(default_factory=list)
    fill_ratio: float = 1.0
    refuse: bool = False
    venue_position: float | None = 0.0
    later: dict[str, VenueReport] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def place(self, symbol: str, side: int, quantity: float, reduce_only: bool, purpose: str,
              order_id: str, intent_id: str | None) -> VenueReport:
        if self.refuse:
            raise TradingBlockedError("HALTED (test)")
        self.placed.append((symbol, side, quantity, reduce_only))
        rounded = round(quantity, 3)
        filled = rounded * self.fill_ratio
        final = self.fill_ratio == 1.0
        return VenueReport(f"c{next(self._ids)}", order_id, "filled" if final else "accepted",
                           rounded, filled, 100.0, 0.0, final)

    def place_stop(self, symbol: str, side: int, quantity: float, stop_price: float,
                   order_id: str) -> VenueReport:
        self.placed.append((symbol, side, quantity, True))
        return VenueReport("stop-1", order_id, "accepted", quantity, 0.0, float("nan"), 0.0,
                           False)

    def cancel(self, client_order_id: str) -> VenueReport:
        raise AssertionError("not cancelled in these tests")

    def refresh(self, client_order_ids: list[str]) -> list[VenueReport]:
        return [self.later[client_id] for client_id in client_order_ids]

    def position(self, symbol: str) -> float | None:
        return self.venue_position


def _intent(side: int = 1, quantity: float = 1.23456, reduce_only: bool = False,
            ts: int = 10 * SECOND) -> OrderIntent:
    return OrderIntent("BTCUSDT:i1", "BTCUSDT", ts, 1, side, "exit" if reduce_only else "entry",
                       reduce_only, quantity, 100.0)


def _orders(port: ScriptedPort) -> VenueOrders:
    return VenueOrders("BTCUSDT", "BTC/USDT:USDT", 4.0, venue_stops=True,
                       poll_interval_ns=5 * SECOND, port=port)


def test_rounded_fill_releases_the_rest_and_estimates_the_fee() -> None:
    port, sequence = ScriptedPort(), itertools.count()
    orders = _orders(port)
    (update,) = orders.submit(_intent(), 1.23456, OrderContext("entry", "test"),
                              lambda: next(sequence))
    assert update.fill is not None and update.fill.quantity == pytest.approx(1.235)
    assert update.final and not update.unfilled and update.reserved
    assert update.fill.fee == pytest.approx(100.0 * 1.235 * 4.0 / 1e4)
    (down,) = orders.submit(_intent(quantity=1.23449), 1.23449, OrderContext("entry", "test"),
                            lambda: next(sequence))
    assert down.unfilled, "the venue rounded down: risk must release what never fills"
    assert not orders.busy


def test_partial_fills_arrive_as_deltas_until_final() -> None:
    port, sequence = ScriptedPort(fill_ratio=0.5, venue_position=2.0), itertools.count()
    orders = _orders(port)
    (first,) = orders.submit(_intent(quantity=2.0), 2.0, OrderContext("entry", "test"),
                             lambda: next(sequence))
    assert first.fill is not None and first.fill.quantity == pytest.approx(1.0)
    assert orders.busy and orders.pending_quantity() == pytest.approx(1.0)
    port.later["c0"] = VenueReport("c0", "BTCUSDT:o1", "filled", 2.0, 2.0, 101.0, 0.0, True)
    updates = orders.poll(11 * SECOND, 1.0, 101.0, lambda: next(sequence))
    fills = [update.fill for update in updates if update.fill is not None]
    assert [fill.quantity for fill in fills] == [pytest.approx(1.0)]
    assert fills[0].price == pytest.approx(102.0)  # average 101 over 2 after 100 for the first
    assert not orders.busy


def test_a_refusal_holds_orders_off_for_the_retry_interval() -> None:
    port, sequence = ScriptedPort(refuse=True), itertools.count()
    orders = _orders(port)
    with pytest.raises(TradingBlockedError):
        orders.submit(_intent(reduce_only=True), 1.0, OrderContext("exit", "stop_loss"),
                      lambda: next(sequence))
    assert orders.busy and orders.exit_working()
    orders.poll(10 * SECOND + SECOND // 2, 1.0, 100.0, lambda: next(sequence))
    assert orders.busy
    orders.poll(11 * SECOND, 1.0, 100.0, lambda: next(sequence))
    assert not orders.busy


def test_a_stop_that_fired_at_the_venue_closes_the_engine_position_at_its_trigger() -> None:
    port, sequence = ScriptedPort(), itertools.count()
    orders = _orders(port)
    orders.sync_stop(1.0, 95.0, 10 * SECOND, lambda: next(sequence))
    assert orders.stop is not None
    port.later["stop-1"] = VenueReport("stop-1", "x", "expired", 1.0, 0.0, float("nan"), 0.0,
                                       True, "poll: triggered")
    port.venue_position = 0.0
    updates = orders.poll(20 * SECOND, 1.0, 94.0, lambda: next(sequence))
    fills = [update.fill for update in updates if update.fill is not None]
    assert len(fills) == 1 and fills[0].side == -1 and fills[0].quantity == pytest.approx(1.0)
    assert fills[0].price == pytest.approx(95.0)
    assert all(not update.reserved for update in updates)
    assert orders.stop is None


def test_venue_position_is_left_alone_when_it_agrees_or_is_unknown() -> None:
    port, sequence = ScriptedPort(venue_position=2.0), itertools.count()
    orders = _orders(port)
    assert orders.poll(10 * SECOND, 2.0, 100.0, lambda: next(sequence)) == []
    port.venue_position = None  # spot: no positions to compare
    assert orders.poll(20 * SECOND, 1.0, 100.0, lambda: next(sequence)) == []


def test_checkpoint_drops_the_connection() -> None:
    orders = _orders(ScriptedPort())
    restored = pickle.loads(pickle.dumps(orders))
    assert restored.port is None and restored.symbol == "BTCUSDT"
