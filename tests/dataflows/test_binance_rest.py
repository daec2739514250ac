"""REST envelopes and feed events in the frame stream, with responses in the exact shapes the
Binance API docs give for each endpoint (spot /api/v3 and USD-M futures /fapi/v1)."""

from __future__ import annotations

import json
import math

import pytest

from dataflows.binance import BinanceParser, ParseResult
from dataflows.binance_rest import FEED_KINDS, REST_ENDPOINTS
from dataflows.capture import CaptureChunk
from engine.batches import MarketChunk

MS = 1_000_000
SPOT_TRADES = [
    {"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
     "time": 1499865549590, "isBuyerMaker": True, "isBestMatch": True},
    {"id": 28458, "price": "4.00000200", "qty": "1.50000000", "quoteQty": "6.000003",
     "time": 1499865549591, "isBuyerMaker": False, "isBestMatch": True},
]
FUTURES_TRADES = [{"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.00",
                   "time": 1499865549590, "isBuyerMaker": True}]
AGG_TRADES = [{"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27781,
               "T": 1498793709153, "m": True, "M": True}]
SPOT_TICKER = {"symbol": "LTCBTC", "bidPrice": "4.00000000", "bidQty": "431.00000000",
               "askPrice": "4.00000200", "askQty": "9.00000000"}
FUTURES_TICKER = {"symbol": "BTCUSDT", "bidPrice": "4.00000000", "bidQty": "431.00000000",
                  "askPrice": "4.00000200", "askQty": "9.00000000", "time": 1589437530011,
                  "lastUpdateId": 1027024}
PREMIUM = {"symbol": "BTCUSDT", "markPrice": "11793.63104562", "indexPrice": "11781.80495970",
           "estimatedSettlePrice": "11781.16138815", "lastFundingRate": "0.00038246",
           "interestRate": "0.00010000", "nextFundingTime": 1597392000000, "time": 1597370495002}
SPOT_DEPTH = {"lastUpdateId": 1027024, "bids": [["4.00000000", "431.00000000"]],
              "asks": [["4.00000200", "12.00000000"]]}
FUTURES_DEPTH = {**SPOT_DEPTH, "E": 1589436922972, "T": 1589436922959}


def rest(path: str, symbol: str | None, data: object) -> bytes:
    envelope: dict[str, object] = {"rest": path}
    if symbol is not None:
        envelope["symbol"] = symbol
    envelope["data"] = data
    return json.dumps(envelope).encode()


def parse(frames: list[bytes], parser: BinanceParser | None = None) -> ParseResult:
    parser = parser or BinanceParser()
    numbers = list(range(1, len(frames) + 1))
    return parser.parse_lines(CaptureChunk("r.txt", numbers, [5_000 + n for n in numbers],
                                           frames))


def only(result: ParseResult, symbol: str) -> MarketChunk:
    return next(chunk for chunk in result.chunks if chunk.symbol == symbol)


def test_every_rest_endpoint_is_known() -> None:
    assert set(REST_ENDPOINTS) == {
        "/api/v3/depth", "/api/v3/trades", "/api/v3/historicalTrades", "/api/v3/aggTrades",
        "/api/v3/ticker/bookTicker", "/fapi/v1/depth", "/fapi/v1/trades",
        "/fapi/v1/historicalTrades", "/fapi/v1/aggTrades", "/fapi/v1/ticker/bookTicker",
        "/fapi/v1/premiumIndex",
    }


@pytest.mark.parametrize("path", ["/api/v3/trades", "/api/v3/historicalTrades",
                                  "/fapi/v1/trades", "/fapi/v1/historicalTrades"])
def test_rest_trades_become_trades(path: str) -> None:
    data = FUTURES_TRADES if path.startswith("/fapi") else SPOT_TRADES
    result = parse([rest(path, "BTCUSDT", data)])
    assert result.dead_letters == []
    trades = only(result, "BTCUSDT").trades
    assert trades.trade_id.tolist() == [item["id"] for item in data]
    assert trades.ts_event.tolist() == [item["time"] * MS for item in data]
    assert trades.ts_recv.tolist() == [5_001] * len(data)
    assert trades.price.tolist() == [float(item["price"]) for item in data]
    assert trades.qty.tolist() == [float(item["qty"]) for item in data]
    assert trades.side.tolist() == [-1 if item["isBuyerMaker"] else 1 for item in data]


@pytest.mark.parametrize("path", ["/api/v3/aggTrades", "/fapi/v1/aggTrades"])
def test_rest_agg_trades_become_agg_trades(path: str) -> None:
    futures = [{key: value for key, value in AGG_TRADES[0].items() if key != "M"}]
    data = AGG_TRADES if path.startswith("/api") else futures  # futures sends no M
    result = parse([rest(path, "BNBBTC", data)])
    assert result.dead_letters == []
    agg = only(result, "BNBBTC").agg_trades
    assert agg.agg_id.tolist() == [26129] and agg.first_trade_id.tolist() == [27781]
    assert agg.last_trade_id.tolist() == [27781] and agg.side.tolist() == [-1]
    assert agg.price.tolist() == [0.01633102] and agg.qty.tolist() == [4.70443515]
    assert agg.ts_event.tolist() == [1498793709153 * MS]


def test_rest_book_tickers_spot_estimated_futures_timed() -> None:
    trade = rest("/fapi/v1/trades", "BTCUSDT", FUTURES_TRADES)
    tick = b'{"e":"trade","E":1000,"s":"LTCBTC","t":1,"p":"1","q":"1","T":1000,"m":true}'
    result = parse([
        tick,  # sets the clock offset: E 1000 ms at receive time 5001
        rest("/api/v3/ticker/bookTicker", "LTCBTC", SPOT_TICKER),
        rest("/api/v3/ticker/bookTicker", "ltcbtc", SPOT_TICKER),
        rest("/fapi/v1/ticker/bookTicker", "BTCUSDT", FUTURES_TICKER),
        trade,
    ])
    assert result.dead_letters == []
    spot = only(result, "LTCBTC").quotes
    offset = 1000 * MS - 5_001
    assert spot.ts_event.tolist() == [5_002 + offset, 5_003 + offset]
    assert spot.update_id.tolist() == [-1, -1]  # spot sends no update id
    assert spot.bid_price.tolist() == [4.0, 4.0] and spot.ask_price.tolist() == [4.000002] * 2
    assert spot.bid_qty.tolist() == [431.0, 431.0] and spot.ask_qty.tolist() == [9.0, 9.0]
    futures = only(result, "BTCUSDT").quotes
    assert futures.ts_event.tolist() == [1589437530011 * MS]
    assert futures.update_id.tolist() == [1027024]


def test_rest_premium_index_becomes_a_mark_and_all_symbol_lists_split() -> None:
    eth = {**PREMIUM, "symbol": "ETHUSDT", "estimatedSettlePrice": None}
    eth = {key: value for key, value in eth.items() if value is not None}
    dated = {**PREMIUM, "symbol": "BTCUSDT_240927", "lastFundingRate": "", "nextFundingTime": 0}
    result = parse([
        rest("/fapi/v1/premiumIndex", "BTCUSDT", PREMIUM),
        rest("/fapi/v1/premiumIndex", None, [PREMIUM, eth, dated]),
        rest("/fapi/v1/ticker/bookTicker", None, [FUTURES_TICKER, {**FUTURES_TICKER,
                                                                   "symbol": "ETHUSDT"}]),
    ])
    assert result.dead_letters == []
    btc = only(result, "BTCUSDT").marks
    assert btc.mark_price.tolist() == [11793.63104562] * 2
    assert btc.index_price.tolist() == [11781.8049597] * 2
    assert btc.estimated_settle_price.tolist() == [11781.16138815] * 2
    assert btc.funding_rate.tolist() == [0.00038246] * 2
    assert btc.next_funding_time.tolist() == [1597392000000 * MS] * 2
    assert btc.ts_event.tolist() == [1597370495002 * MS] * 2
    assert math.isnan(only(result, "ETHUSDT").marks.estimated_settle_price[0])
    assert math.isnan(only(result, "BTCUSDT_240927").marks.funding_rate[0])
    assert len(only(result, "ETHUSDT").quotes) == 1 and len(only(result, "BTCUSDT").quotes) == 1


def test_rest_depth_snapshots_take_the_envelope_symbol() -> None:
    parser = BinanceParser()
    first = b'{"e":"trade","E":1000,"s":"ETHUSDT","t":1,"p":"1","q":"1","T":1000,"m":true}'
    result = parse([first, rest("/api/v3/depth", "BTCUSDT", SPOT_DEPTH),
                    rest("/fapi/v1/depth", "BNBUSDT", FUTURES_DEPTH)], parser)
    assert result.dead_letters == []  # two symbols seen, still no "snapshot_symbol_unknown"
    spot = only(result, "BTCUSDT").snapshots
    assert spot.last_update_id.tolist() == [1027024] * 2 and spot.side.tolist() == [1, -1]
    assert spot.ts_event.tolist() == [5_002 + 1000 * MS - 5_001] * 2  # estimated
    futures = only(result, "BNBUSDT").snapshots
    assert futures.ts_event.tolist() == [1589436922972 * MS] * 2
    assert parser.offset_ns == 1589436922972 * MS - 5_003  # a REST E sets the clock too


def test_bad_rest_envelopes_and_items() -> None:
    result = parse([
        rest("/api/v3/klines", "BTCUSDT", []),  # 1 unknown endpoint
        rest("/api/v3/trades", None, SPOT_TRADES),  # 2 no symbol
        rest("/api/v3/trades", "BTCUSDT", SPOT_TRADES[0]),  # 3 not a list
        b'{"rest":"/api/v3/depth","symbol":"BTCUSDT"}',  # 4 no data
        rest("/api/v3/trades", "BTCUSDT", [SPOT_TRADES[0], {**SPOT_TRADES[1], "id": "x"},
                                           7]),  # 5 items 1 and 2 bad
        rest("/fapi/v1/premiumIndex", "BTCUSDT", {**PREMIUM, "symbol": "ETHUSDT"}),  # 6
        rest("/api/v3/depth", "BTCUSDT", {**SPOT_DEPTH, "bids": [["1"]]}),  # 7
        b'{"rest":"/api/v3/depth","symbol":7,"data":{}}',  # 8
        rest("/api/v3/depth", "BTCUSDT", {"code": -1121, "msg": "Invalid symbol."}),  # 9
    ])
    letters = result.dead_letters + [d for chunk in result.chunks for d in chunk.dead_letters]
    found = sorted((int(d.source.rsplit(" ", 1)[1]), d.reason, d.symbol) for d in letters)
    assert found == [
        (1, "unknown_stream", "BTCUSDT"), (2, "missing_field", None),
        (3, "invalid_field", "BTCUSDT"), (4, "missing_field", "BTCUSDT"),
        (5, "invalid_field", "BTCUSDT"), (5, "invalid_number", "BTCUSDT"),
        (6, "invalid_field", "BTCUSDT"), (7, "invalid_field", "BTCUSDT"),
        (8, "missing_field", None), (9, "venue_error", "BTCUSDT"),
    ]
    assert "'/api/v3/klines'" in next(d.detail for d in letters if d.reason == "unknown_stream")
    assert only(result, "BTCUSDT").trades.trade_id.tolist() == [28457]  # the good item is kept


def test_feed_events_of_every_kind() -> None:
    parser = BinanceParser()
    frames = [b'{"e":"trade","E":1000,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1000,"m":true}']
    kinds = sorted(FEED_KINDS)
    frames += [json.dumps({"feed": kind, "symbol": "btcusdt", "detail": f"about {kind}"}).encode()
               for kind in kinds]
    frames.append(b'{"feed":"stale","symbol":"ETHUSDT"}')
    result = parse(frames, parser)
    assert result.dead_letters == []
    events = only(result, "BTCUSDT").feed_events
    assert [event.kind for event in events] == kinds
    assert [event.detail for event in events] == [f"about {kind}" for kind in kinds]
    offset = 1000 * MS - 5_001
    assert [event.ts_recv for event in events] == list(range(5_002, 5_002 + len(kinds)))
    assert [event.ts_event for event in events] == [t + offset for t in range(5_002,
                                                                              5_002 + len(kinds))]
    (quiet,) = only(result, "ETHUSDT").feed_events
    assert (quiet.kind, quiet.detail, quiet.symbol) == ("stale", "", "ETHUSDT")


def test_bad_feed_events() -> None:
    result = parse([b'{"feed":"exploded","symbol":"BTCUSDT","detail":""}',
                    b'{"feed":"stale","detail":"no symbol"}',
                    b'{"feed":"stale","symbol":"BTCUSDT","detail":42}'])
    letters = result.dead_letters + [d for chunk in result.chunks for d in chunk.dead_letters]
    assert sorted((d.source, d.reason, d.symbol) for d in letters) == [
        ("r.txt:line 1", "invalid_field", "BTCUSDT"), ("r.txt:line 2", "missing_field", None),
        ("r.txt:line 3", "invalid_field", "BTCUSDT"),
    ]
    assert any("'exploded' is not one of" in d.detail for d in letters)
    assert all(len(chunk.feed_events) == 0 for chunk in result.chunks)
