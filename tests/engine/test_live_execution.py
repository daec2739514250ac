"""Live execution against the local Binance USD-M server: orders, unknown outcomes, restarts."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.execution import (
    ExecutionConfig,
    ExecutionError,
    LiveExecution,
    TradingBlockedError,
    VenueClient,
    VenueError,
)
from engine.orders import OrderState
from storage.journal import JournalWriter, read_table
from tests.engine.live_execution_helpers import (
    BTC,
    ETH,
    assert_no_secret,
    make_config,
    use_canary_credentials,
)
from tests.support.binance_trading_server import (
    BinanceTradingServer,
    FakeClock,
    binance_trading_server,
    reset_server,
)


@pytest.fixture(scope="module")
def server() -> Iterator[BinanceTradingServer]:
    with binance_trading_server() as running:
        yield running


@pytest.fixture
def venue(server: BinanceTradingServer, monkeypatch: pytest.MonkeyPatch,
          caplog: pytest.LogCaptureFixture) -> Iterator[BinanceTradingServer]:
    """A fresh venue with canary credentials; after the test, no log line holds a secret."""
    reset_server(server)
    use_canary_credentials(monkeypatch, server)
    caplog.set_level(logging.DEBUG)
    yield server
    assert_no_secret(caplog.text)


def _execution(server: BinanceTradingServer, tmp_path: Path, clock: FakeClock | None = None,
               **overrides: object) -> LiveExecution:
    config = make_config(server, tmp_path / "execution.json", **overrides)
    return LiveExecution(config, clock=clock or FakeClock())


def test_config_refuses_rate_limiter_off_and_inline_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rate limiter must stay on"):
        ExecutionConfig(run_id="r", state_file=tmp_path / "s.json", enable_rate_limit=False)
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        ExecutionConfig(run_id="r", state_file=tmp_path / "s.json", api_secret_env="abc+/=xyz")
    with pytest.raises(ValueError, match="Extra inputs"):
        ExecutionConfig.model_validate({"run_id": "r", "state_file": "s.json", "apiKey": "k"})


def test_client_switches_environment_and_hides_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATS_BINANCE_KEY", raising=False)
    config = ExecutionConfig(run_id="r", state_file=tmp_path / "s.json")
    with pytest.raises(ExecutionError, match="ATS_BINANCE_KEY"):
        VenueClient(config)
    monkeypatch.setenv("ATS_BINANCE_KEY", "k-canary-key-1234")
    monkeypatch.setenv("ATS_BINANCE_SECRET", "CANARY-SECRET-7d1f")
    testnet = VenueClient(config)
    assert testnet.exchange.enableRateLimit is True
    assert "binance.com" in testnet.exchange.urls["api"]["fapiPrivate"]
    assert "demo" in testnet.exchange.urls["api"]["fapiPrivate"]
    live = VenueClient(config.model_copy(update={"environment": "live"}))
    assert live.exchange.urls["api"]["fapiPrivate"] == "https://fapi.binance.com/fapi/v1"
    spot = VenueClient(config.model_copy(update={"venue": "binance", "symbols": ("BTC/USDT",)}))
    assert spot.exchange.isSandboxModeEnabled
    for text in (repr(testnet), repr(LiveExecution(config, testnet)), config.model_dump_json()):
        assert "CANARY" not in text and "k-canary-key-1234" not in text


@pytest.mark.slow
def test_place_before_reconcile_fails_closed(venue: BinanceTradingServer, tmp_path: Path) -> None:
    execution = _execution(venue, tmp_path)
    with pytest.raises(TradingBlockedError, match="reconcile"):
        execution.place(BTC, 1, 0.01)
    assert not any(path.startswith("POST") for path in venue.paths())
    execution.reconcile()
    order = execution.place(BTC, 1, 0.01)
    assert order.state is OrderState.FILLED
    assert venue.venue.position("BTCUSDT").amount == pytest.approx(0.01)


@pytest.mark.slow
def test_timeouts_after_create_never_duplicate_and_resolve(
        venue: BinanceTradingServer, tmp_path: Path) -> None:
    execution = _execution(venue, tmp_path)
    execution.reconcile()
    venue.delay_next("create", count=3, seconds=1.5)
    market = execution.place(BTC, 1, 0.02)
    limit = execution.place(BTC, 1, 0.01, "limit", price=50_000.0)
    stop = execution.place_stop(BTC, -1, 0.02, stop_price=55_000.0)
    for order in (market, limit, stop):
        assert venue.creates(order.client_order_id) == 1
        assert any(r.reason.startswith("create_order: network") for r in order.history)
    assert market.state is OrderState.FILLED and market.filled_quantity == pytest.approx(0.02)
    assert limit.state is OrderState.ACCEPTED and stop.state is OrderState.ACCEPTED
    assert len(venue.venue.orders) == 3
    assert execution.status()["unknown_orders"] == []

    venue.delay_next("cancel", seconds=1.5)
    assert execution.cancel(limit.client_order_id) is limit
    assert limit.state is OrderState.CANCELED
    assert venue.venue.by_client_id(limit.client_order_id).status == "CANCELED"


@pytest.mark.slow
def test_unknown_outcome_stays_blocked_until_the_venue_answers(
        venue: BinanceTradingServer, tmp_path: Path) -> None:
    clock = FakeClock()
    execution = _execution(venue, tmp_path, clock)
    execution.reconcile()
    venue.fail_next("create", 503)  # refused without effect: the order never reached the book
    lost = execution.place(ETH, 1, 0.1)
    assert lost.state is OrderState.UNKNOWN
    with pytest.raises(TradingBlockedError, match="unknown outcome"):
        execution.place(ETH, 1, 0.1)
    clock.advance(execution.config.unknown_grace_s + 1)
    assert execution.resolve_unknown() == []
    assert lost.state is OrderState.REJECTED
    assert venue.creates(lost.client_order_id) == 1
    assert execution.place(ETH, 1, 0.1).state is OrderState.FILLED


@pytest.mark.slow
def test_rejections_and_read_retries(venue: BinanceTradingServer, tmp_path: Path) -> None:
    execution = _execution(venue, tmp_path)
    execution.reconcile()
    too_big = execution.place(BTC, 1, 50.0)
    assert too_big.state is OrderState.REJECTED and "-2019" in too_big.history[-1].reason
    venue.fail_next("create", 400, -1021, "Timestamp for this request is outside of the "
                    "recvWindow.")
    stale = execution.place(BTC, 1, 0.01)
    assert stale.state is OrderState.REJECTED and "-1021" in stale.history[-1].reason
    reduce = execution.place(ETH, -1, 0.1, reduce_only=True)
    assert reduce.state is OrderState.REJECTED and "-2022" in reduce.history[-1].reason
    venue.fail_next("read", 503, count=2)
    venue.fail_next("read", 429, -1003, "Too many requests")
    assert execution.reconcile()["ready"] is True


@pytest.mark.slow
def test_restart_reconciles_venue_changes_before_any_order(
        venue: BinanceTradingServer, tmp_path: Path) -> None:
    first = _execution(venue, tmp_path)
    first.reconcile()
    first.place(BTC, 1, 0.05)
    will_fill = first.place(BTC, 1, 0.02, "limit", price=55_000.0)
    will_cancel = first.place(BTC, 1, 0.03, "limit", price=54_000.0)
    stop = first.place_stop(BTC, -1, 0.05, stop_price=50_000.0)
    first.drain_journal()
    # out of band: a fill, a cancel from the venue's UI, a manual order
    venue.venue.fill(will_fill.client_order_id, quantity=0.005)
    first.reconcile()
    first.reconcile()  # the same venue snapshot twice adds nothing
    assert will_fill.state is OrderState.PARTIALLY_FILLED
    assert will_fill.filled_quantity == pytest.approx(0.005)
    venue.venue.fill(will_fill.client_order_id)
    venue.venue.cancel(venue.venue.by_client_id(will_cancel.client_order_id))
    venue.venue.place({"symbol": "ETHUSDT", "side": "SELL", "type": "LIMIT", "quantity": "0.5",
                       "price": "2600", "newClientOrderId": "manual-1"}, algo=False)

    second = _execution(venue, tmp_path)
    with pytest.raises(TradingBlockedError):
        second.place(BTC, 1, 0.01)
    creates_before = sum(1 for p in venue.paths() if p.startswith("POST /fapi/v1/order"))
    status = second.reconcile()
    venue_open = sorted(o.client_order_id for o in venue.venue.orders.values() if o.open)
    assert status["open_orders"] == venue_open == sorted([stop.client_order_id, "manual-1"])
    assert status["positions"] == {BTC: pytest.approx(0.07), ETH: 0.0}
    margin_balance = float(venue.venue.account()["totalMarginBalance"])  # wallet + unrealised
    assert status["balances"]["USDT"] == pytest.approx(margin_balance)
    assert sum(1 for p in venue.paths() if p.startswith("POST /fapi/v1/order")) == creates_before
    adopted = second.orders["manual-1"]
    assert (adopted.side, adopted.quantity, adopted.price) == (-1, 0.5, 2600.0)
    assert second.orders[stop.client_order_id].order_type == "stop_market"
    new = second.place(BTC, -1, 0.01)
    assert new.client_order_id not in first.orders  # the persisted sequence continues

    first.reconcile()  # the old instance's own view is replaced too, and the changes journaled
    assert will_fill.state is OrderState.FILLED and will_cancel.state is OrderState.CANCELED
    journal = first.drain_journal()
    kinds = {row["kind"] for row in journal["execution_events"]}
    assert {"reconcile_adopted", "reconcile_closed", "reconcile_position"} <= kinds
    assert {row["state"] for row in journal["orders"]} >= {"filled", "canceled"}
    with JournalWriter(tmp_path / "journal.duckdb", "live-test") as writer:
        writer.append_many(journal)  # the rows fit the journal's tables
        writer.append_many(second.drain_journal())
    written = read_table(tmp_path / "journal.duckdb", "execution_events")
    assert len(written) == len(journal["execution_events"]) + 3


@pytest.mark.slow
def test_random_create_and_cancel_faults_leave_no_duplicates(
        venue: BinanceTradingServer, tmp_path: Path) -> None:
    """Seeded mix of timeouts-after-apply, 5xx and 429 on creates and cancels: every client id
    is sent once, and after resolution every local order matches the venue's record."""
    clock = FakeClock()
    execution = _execution(venue, tmp_path, clock)
    execution.reconcile()
    rng = random.Random(20261206)
    faults = [lambda kind: venue.delay_next(kind, seconds=1.0),
              lambda kind: venue.fail_next(kind, 503),
              lambda kind: venue.fail_next(kind, 429, -1003, "Too many requests."),
              lambda kind: None]
    orders = []
    for index in range(8):
        rng.choice(faults)("create")
        clock.advance(execution.config.unknown_grace_s + 1)
        execution.resolve_unknown()
        price = 50_000.0 + 100 * index
        orders.append(execution.place(BTC, 1, 0.01, "limit" if index % 2 else "market",
                                      price=price if index % 2 else None))
        if index % 2 and orders[-1].state is OrderState.ACCEPTED:
            rng.choice(faults)("cancel")
            execution.cancel(orders[-1].client_order_id)
    clock.advance(execution.config.unknown_grace_s + 1)
    assert execution.resolve_unknown() == []
    for order in orders:
        assert venue.creates(order.client_order_id) == 1
        try:
            at_venue = venue.venue.by_client_id(order.client_order_id)
        except KeyError:
            assert order.state is OrderState.REJECTED  # refused before it reached the book
            continue
        expected = {"FILLED": OrderState.FILLED, "NEW": OrderState.ACCEPTED,
                    "CANCELED": OrderState.CANCELED}[at_venue.status]
        assert order.state is expected
        assert order.filled_quantity == pytest.approx(at_venue.executed_qty)


@pytest.mark.slow
def test_protective_stops_live_on_the_venue(venue: BinanceTradingServer, tmp_path: Path) -> None:
    execution = _execution(venue, tmp_path)
    execution.reconcile()
    execution.place(BTC, 1, 0.05)
    stop = execution.place_stop(BTC, -1, 0.05, stop_price=55_000.0)
    target = execution.place_stop(BTC, -1, 0.05, stop_price=70_000.0, take_profit=True)
    held = {o.client_order_id: o for o in venue.venue.open_orders("BTCUSDT", algo=True)}
    assert (held[stop.client_order_id].order_type, held[stop.client_order_id].reduce_only) == (
        "STOP_MARKET", True)
    assert held[target.client_order_id].order_type == "TAKE_PROFIT_MARKET"
    assert held[stop.client_order_id].trigger_price == 55_000.0

    venue.venue.set_mark("BTCUSDT", 54_000.0)  # the venue executes the stop without us
    assert venue.venue.position("BTCUSDT").amount == 0
    status = execution.reconcile()
    assert stop.state is OrderState.EXPIRED and "triggered" in stop.history[-1].reason
    assert status["positions"][BTC] == 0.0
    assert status["open_orders"] == [target.client_order_id]
    assert execution.cancel(target.client_order_id).state is OrderState.CANCELED
    assert venue.venue.open_orders("BTCUSDT", algo=True) == []


@pytest.mark.slow
def test_orders_take_the_venue_precision(venue: BinanceTradingServer, tmp_path: Path) -> None:
    execution = _execution(venue, tmp_path)
    execution.reconcile()
    order = execution.place(BTC, 1, 0.0129, "limit", price=50_000.04)
    assert (order.quantity, order.price) == (0.012, 50_000.0)
    at_venue = venue.venue.by_client_id(order.client_order_id)
    assert (at_venue.quantity, at_venue.price) == (0.012, 50_000.0)
    with pytest.raises(VenueError, match="lot size"):
        execution.place(BTC, 1, 0.0004)
    assert execution.place(BTC, 1, 0.0129).state is OrderState.FILLED  # not stuck partially
