"""ccxt REST adapter and poller against a loopback server speaking Binance's REST shapes with data
from the bundled captures (tests/dataflows/binance_rest_server.py). Nothing leaves 127.0.0.1."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import datetime

import ccxt
import numpy as np
import pytest

from dataflows.ccxt_rest import CcxtRestAdapter, PollTask, RestPoller
from tests.dataflows.binance_rest_server import (
    FakeBinance,
    RealData,
    fake_binance,
    load_real_data,
)

SPOT_AND_USDM = {"fetchMarkets": {"types": ["spot", "linear"]}}


@pytest.fixture(scope="module")
def real_data() -> RealData:
    return load_real_data()


@pytest.fixture
def server(real_data: RealData) -> Iterator[FakeBinance]:
    with fake_binance(real_data) as state:
        yield state


def _adapter(server: FakeBinance, **kwargs: object) -> CcxtRestAdapter:
    return CcxtRestAdapter("binance", urls=server.urls(), options=SPOT_AND_USDM,
                           clock=lambda: 1_800_000_000_000_000_000, **kwargs)  # type: ignore


def test_each_endpoint_becomes_columns(server: FakeBinance, real_data: RealData) -> None:
    adapter = _adapter(server)
    assert sorted(adapter.load_markets()) == ["BTC/USDT", "BTC/USDT:USDT", "ETH/USDT"]

    trades = adapter.fetch_trades("BTC/USDT", limit=300)
    source = real_data.trades[-300:]
    assert trades.trade_id.tolist() == [trade["id"] for trade in source]
    assert trades.price.tolist() == [float(trade["price"]) for trade in source]
    assert trades.qty.tolist() == [float(trade["qty"]) for trade in source]
    assert trades.side.tolist() == [-1 if trade["isBuyerMaker"] else 1 for trade in source]
    assert trades.ts_event.tolist() == [trade["time"] * 1_000_000 for trade in source]
    assert set(trades.ts_recv.tolist()) == {1_800_000_000_000_000_000}

    book = adapter.fetch_order_book("BTC/USDT", limit=100)
    depth = real_data.depth
    assert set(book.last_update_id.tolist()) == {depth["lastUpdateId"]} == {50093239218}
    assert book.side.tolist() == [1] * 100 + [-1] * 100
    assert book.price.tolist() == [float(p) for p, _ in depth["bids"][:100] + depth["asks"][:100]]
    assert book.qty[0] == 3.78826 and set(book.ts_event.tolist()) == {1_800_000_000_000_000_000}

    klines = adapter.fetch_ohlcv("BTC/USDT", "1m", limit=120)
    rows = real_data.klines[:120]
    assert klines.ts_open.tolist() == [row[0] * 1_000_000 for row in rows]
    assert np.all(klines.ts_close - klines.ts_open == 60_000_000_000)
    assert klines.close.tolist() == [float(row[4]) for row in rows]
    assert klines.volume.tolist() == [float(row[5]) for row in rows]
    assert klines.closed.all() and np.array_equal(klines.ts_event, klines.ts_close)
    assert np.isnan(klines.quote_volume).all() and set(klines.trade_count.tolist()) == {-1}
    first_close = datetime.fromisoformat("2024-12-01 00:00:59.999000+01:00")
    assert klines.ts_close[0] == (int(first_close.timestamp() * 1000) + 1) * 1_000_000

    marks = adapter.fetch_funding_rate("BTC/USDT:USDT")
    index = real_data.premium_index
    assert marks.mark_price.tolist() == [float(index["markPrice"])]
    assert marks.index_price.tolist() == [float(index["indexPrice"])]
    assert marks.funding_rate.tolist() == [0.0001]
    assert marks.next_funding_time.tolist() == [index["nextFundingTime"] * 1_000_000]
    assert marks.ts_event.tolist() == [index["time"] * 1_000_000]
    # raw trades (ids of the trade stream), not ccxt's default aggregate trades
    assert "/api/v3/trades" in server.paths() and "/api/v3/aggTrades" not in server.paths()


def test_symbols_are_ats_symbols() -> None:
    assert [CcxtRestAdapter.ats_symbol(s) for s in ("BTC/USDT", "BTC/USDT:USDT",
                                                     "BTC/USD:BTC-220527",
                                                     "BTC/USD:BTC-220527-30000-C")] == \
        ["BTCUSDT", "BTCUSDT-SWAP", "BTCUSD-220527", "BTCUSD-220527-30000-C"]


def _record_costs(adapter: CcxtRestAdapter) -> list[float]:
    """Wrap the exchange's throttle to learn the ccxt cost of each request, in order."""
    costs: list[float] = []
    throttle = adapter.exchange.throttle

    def recording(cost: float | None = None) -> None:
        costs.append(1.0 if cost is None else float(cost))
        throttle(cost)

    adapter.exchange.throttle = recording
    return costs


TASKS = [PollTask("BTC/USDT", "trades", limit=50), PollTask("BTC/USDT", "order_book", limit=20),
         PollTask("BTC/USDT", "ohlcv", limit=10), PollTask("BTC/USDT:USDT", "funding_rate")]


def test_poller_yields_chunks_and_never_outruns_the_rate_limiter(server: FakeBinance) -> None:
    adapter = _adapter(server, rate_limit_ms=120)  # slower than Binance's 50 ms: clearer gaps
    costs = _record_costs(adapter)
    sleeps: list[float] = []
    poller = RestPoller(adapter, TASKS, interval_s=60.0, sleep=sleeps.append)
    chunks = list(poller.run(rounds=3))

    assert [(chunk.symbol, chunk.sequence) for chunk in chunks] == [
        ("BTCUSDT", 0), ("BTCUSDT-SWAP", 0), ("BTCUSDT", 1), ("BTCUSDT-SWAP", 1),
        ("BTCUSDT", 2), ("BTCUSDT-SWAP", 2)]
    spot = chunks[0]
    assert (len(spot.trades), len(spot.snapshots), len(spot.klines)) == (50, 40, 10)
    assert len(chunks[1].marks) == 1 and len(chunks[1].trades) == 0
    # the same 50 trades come back every round: delivered once, then counted as repeats
    assert [len(chunk.trades) for chunk in chunks[2::2]] == [0, 0]
    assert poller.stats == {"rounds": 3, "requests": 12, "errors": 0, "trades": 50,
                            "repeated_trades": 100, "snapshots": 3, "klines": 30, "marks": 3}
    assert len(sleeps) == 2 and all(0 < pause <= 60.0 for pause in sleeps)

    # Rate limit at the server: ccxt starts a request only when rateLimit x cost (of that
    # endpoint) has passed since it started the previous one, so each gap the server saw is at
    # least that, less the difference of two loopback latencies (a few ms: the allowance), and
    # the whole span is at least the sum.
    times = [moment for moment, _ in server.requests]
    assert len(times) == len(costs) == 2 + 12  # two exchangeInfo calls to load the markets
    assert adapter.rate_limit_ms == 120 and min(costs) > 0
    limit_s = adapter.rate_limit_ms / 1000
    allowance = 0.025
    gaps = np.diff(times)
    needed = np.array(costs[1:]) * limit_s
    assert np.all(gaps >= needed - allowance), list(zip(gaps, needed, strict=True))
    assert times[-1] - times[0] >= needed.sum() - allowance


def test_without_the_limiter_the_same_requests_burst(server: FakeBinance) -> None:
    """Control for the test above: the server's clock does see unthrottled bursts."""
    exchange = ccxt.binance({"enableRateLimit": False, "options": SPOT_AND_USDM})
    exchange.urls["api"].update(server.urls())
    exchange.session.trust_env = False
    exchange.load_markets()
    for _ in range(6):
        exchange.fetch_order_book("BTC/USDT", 5)
    gaps = np.diff([moment for moment, _ in server.requests])
    assert len(gaps) == 7 and np.min(gaps) < exchange.rateLimit / 1000


def test_failures_are_recorded_and_the_poller_goes_on(
    server: FakeBinance, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = _adapter(server)
    adapter.load_markets()
    tasks = [PollTask("BTC/USDT", "order_book", limit=5), PollTask("BTC/USDT", "trades", limit=5)]
    poller = RestPoller(adapter, tasks, interval_s=0.0)
    server.fail_next = [503, 500]
    with caplog.at_level(logging.WARNING, logger="dataflows.ccxt_rest"):
        first = poller.poll_once()
    assert first.chunks == [] and [error.kind for error in first.errors] == [
        "ExchangeNotAvailable", "ExchangeNotAvailable"]
    assert first.errors[0].endpoint == "order_book" and first.errors[0].symbol == "BTC/USDT"
    assert "503" in first.errors[0].message and "500" in first.errors[1].message
    assert len(caplog.records) == 2 and "order_book BTC/USDT failed" in caplog.text
    second = poller.poll_once()
    assert second.errors == [] and len(second.chunks) == 1
    assert len(second.chunks[0].trades) == 5 and second.chunks[0].sequence == 0
    assert poller.stats["errors"] == 2 and len(poller.errors) == 2
    # an unknown symbol on the venue is an error of its own kind, not a crash
    poller = RestPoller(adapter, [PollTask("DOGE/USDT", "trades")], interval_s=0.0)
    (error,) = poller.poll_once().errors
    assert error.kind == "BadSymbol"


def test_unreachable_venue_is_a_network_error() -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = CcxtRestAdapter("binance", urls={"public": f"http://127.0.0.1:{port}/api/v3"},
                              options={"fetchMarkets": {"types": ["spot"]}}, timeout_ms=2_000)
    poller = RestPoller(adapter, [PollTask("BTC/USDT", "trades")], interval_s=0.0)
    result = poller.poll_once()
    (error,) = result.errors
    assert issubclass(getattr(ccxt, error.kind), ccxt.NetworkError), error.kind
    assert str(port) in error.message


def test_configuration_fails_closed(server: FakeBinance) -> None:
    with pytest.raises(ValueError, match="unknown ccxt exchange id 'nasdaq'"):
        CcxtRestAdapter("nasdaq")
    with pytest.raises(ValueError, match=r"may not set \['apiKey', 'secret'\]") as caught:
        CcxtRestAdapter("binance", options={"apiKey": "k-123456", "secret": "s-654321"})
    assert "k-123456" not in str(caught.value) and "s-654321" not in str(caught.value)
    with pytest.raises(ValueError, match=r"may not set \['enableRateLimit'\]"):
        CcxtRestAdapter("binance", options={"enableRateLimit": False})
    with pytest.raises(ValueError, match="may only slow requests down"):
        CcxtRestAdapter("binance", rate_limit_ms=10)
    slower = CcxtRestAdapter("binance", rate_limit_ms=200)
    assert slower.rate_limit_ms == 200 and slower.exchange.enableRateLimit is True
    assert not slower.exchange.apiKey and not slower.exchange.secret
    sandbox = CcxtRestAdapter("binance", sandbox=True)
    assert "testnet" in sandbox.exchange.urls["api"]["public"]
    with pytest.raises(ValueError, match="unknown endpoint 'ticker'"):
        PollTask("BTC/USDT", "ticker")


def test_error_messages_never_carry_credentials(server: FakeBinance) -> None:
    adapter = _adapter(server)
    adapter.exchange.apiKey = "AKIA-should-never-show"  # as if something had set one
    message = adapter.redact("binance GET https://x/?key=AKIA-should-never-show failed " * 20)
    assert "AKIA" not in message and "<redacted>" in message and len(message) == 300
