"""Binance websocket kinds beyond the bundled captures, from hand-written frames in the exact
shapes of the Binance API docs (spot and USD-M futures), and a table of malformed variants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dataflows.binance import BinanceParser, ParseResult
from dataflows.binance_frames import KLINE_INTERVAL_NS
from dataflows.binance_streams import stream_kind
from dataflows.capture import CaptureChunk
from engine.batches import MarketChunk

MS = 1_000_000
SPOT_AGG = {"e": "aggTrade", "E": 1672515782136, "s": "BNBBTC", "a": 12345, "p": "0.001",
            "q": "100", "f": 100, "l": 105, "T": 1672515782136, "m": True, "M": True}
FUTURES_AGG = {"e": "aggTrade", "E": 123456789, "s": "BTCUSDT", "a": 5933014, "p": "0.001",
               "q": "100", "f": 100, "l": 105, "T": 123456785, "m": False}
MARK = {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p": "11794.15000000",
        "i": "11784.62659091", "P": "11784.25641265", "r": "0.00038167", "T": 1562306400000}
KLINE = {"e": "kline", "E": 1672515782136, "s": "BNBBTC", "k": {
    "t": 1672515780000, "T": 1672515839999, "s": "BNBBTC", "i": "1m", "f": 100, "L": 200,
    "o": "0.0010", "c": "0.0020", "h": "0.0025", "l": "0.0015", "v": "1000", "n": 100,
    "x": False, "q": "1.0000", "V": "500", "Q": "0.500", "B": "123456"}}
FUTURES_TICKER = {"e": "bookTicker", "u": 400900217, "E": 1568014460893, "T": 1568014460891,
                  "s": "BNBUSDT", "b": "25.35190000", "B": "31.21000000", "a": "25.36520000",
                  "A": "40.66000000"}
FUTURES_DEPTH = {"e": "depthUpdate", "E": 123456789, "T": 123456788, "s": "BTCUSDT", "U": 157,
                 "u": 160, "pu": 149, "b": [["0.0024", "10"]], "a": [["0.0026", "100"]]}
FUTURES_SNAPSHOT = {"lastUpdateId": 1027024, "E": 1589436922972, "T": 1589436922959,
                    "bids": [["4.00000000", "431.00000000"]],
                    "asks": [["4.00000200", "12.00000000"]]}
SPOT_PARTIAL = {"lastUpdateId": 160, "bids": [["0.0024", "10"], ["0.0023", "5"]],
                "asks": [["0.0026", "100"]]}
FUTURES_PARTIAL = {"e": "depthUpdate", "E": 1571889248277, "T": 1571889248276, "s": "BTCUSDT",
                   "U": 390497796, "u": 390497878, "pu": 390497794,
                   "b": [["7403.89", "0.002"], ["7403.90", "3.906"]],
                   "a": [["7405.96", "3.340"], ["7406.63", "4.525"]]}


def _frame(stream: str | None, data: object) -> bytes:
    return json.dumps(data if stream is None else {"stream": stream, "data": data}).encode()


def parse(frames: list[bytes], parser: BinanceParser | None = None,
          first_recv: int = 1_000) -> tuple[BinanceParser, ParseResult]:
    parser = parser or BinanceParser()
    numbers = list(range(1, len(frames) + 1))
    recvs = [first_recv + index for index in range(len(frames))]
    return parser, parser.parse_lines(CaptureChunk("t.txt", numbers, recvs, frames))


def only(result: ParseResult, symbol: str) -> MarketChunk:
    return next(chunk for chunk in result.chunks if chunk.symbol == symbol)


def test_agg_trades_spot_and_futures_combined_and_bare() -> None:
    _, result = parse([_frame("bnbbtc@aggTrade", SPOT_AGG), _frame(None, SPOT_AGG),
                       _frame("btcusdt@aggTrade", FUTURES_AGG)])
    assert result.dead_letters == []
    spot = only(result, "BNBBTC").agg_trades
    assert spot.agg_id.tolist() == [12345, 12345]
    assert spot.first_trade_id.tolist() == [100, 100] and spot.last_trade_id.tolist() == [105, 105]
    assert spot.price.tolist() == [0.001, 0.001] and spot.qty.tolist() == [100.0, 100.0]
    assert spot.side.tolist() == [-1, -1]  # buyer is maker: a seller hit the bid
    assert spot.ts_event.tolist() == [1672515782136 * MS] * 2
    assert spot.ts_recv.tolist() == [1000, 1001]
    futures = only(result, "BTCUSDT").agg_trades
    assert futures.ts_event.tolist() == [123456785 * MS]  # T, not E
    assert futures.side.tolist() == [1]
    assert len(only(result, "BTCUSDT").trades) == 0  # agg trades are not trades here


def test_mark_price_streams_and_all_market_array() -> None:
    delivery = {**MARK, "s": "BTCUSDT_240927", "r": "", "T": 0}
    no_settle = {key: value for key, value in MARK.items() if key != "P"}
    other = {**MARK, "s": "ETHUSDT", "p": "3000.5", "i": "3001.0", "r": "-0.0001"}
    frames = [
        _frame("btcusdt@markPrice", MARK),
        _frame("btcusdt@markPrice@1s", no_settle),
        _frame("!markPrice@arr", [other, delivery]),
        _frame("!markPrice@arr@1s", [MARK]),
        _frame(None, [other]),  # raw stream /ws/!markPrice@arr: a bare list
        _frame(None, MARK),
    ]
    parser, result = parse(frames)
    assert result.dead_letters == [] and parser.stats["market_frames"] == 6
    btc = only(result, "BTCUSDT").marks
    assert btc.mark_price.tolist() == [11794.15] * 4
    assert btc.index_price.tolist() == [11784.62659091] * 4
    assert btc.funding_rate.tolist() == [0.00038167] * 4
    assert btc.next_funding_time.tolist() == [1562306400000 * MS] * 4
    assert btc.ts_event.tolist() == [1562305380000 * MS] * 4
    settle = btc.estimated_settle_price.tolist()
    assert settle[0] == 11784.25641265 and math.isnan(settle[1]) and settle[2] == 11784.25641265
    eth = only(result, "ETHUSDT").marks
    assert eth.mark_price.tolist() == [3000.5] * 2 and eth.funding_rate.tolist() == [-0.0001] * 2
    dated = only(result, "BTCUSDT_240927").marks
    assert math.isnan(dated.funding_rate[0]) and dated.next_funding_time.tolist() == [0]
    assert parser.offset_ns == 1562305380000 * MS - 1005  # marks carry E: they set the clock


def test_klines_of_every_interval_with_exclusive_close() -> None:
    frames = []
    start = 1704067200000  # 2024-01-01 00:00 UTC, a Monday: aligned for every interval
    for interval, length_ns in KLINE_INTERVAL_NS.items():
        close = start + length_ns // MS - 1 if length_ns else 1706745600000 - 1  # 1M: January
        data = {**KLINE, "s": "BTCUSDT", "k": {**KLINE["k"], "s": "BTCUSDT", "i": interval,
                                               "t": start, "T": close, "x": interval == "1d"}}
        frames.append(_frame(f"btcusdt@kline_{interval}", data))
    frames.append(_frame("btcusdt@kline_1h@+08:00", {**KLINE, "s": "BTCUSDT", "k": {
        **KLINE["k"], "i": "1h", "t": start, "T": start + 3_599_999}}))
    frames.append(_frame(None, KLINE))
    _, result = parse(frames)
    assert result.dead_letters == []
    klines = only(result, "BTCUSDT").klines
    assert len(klines) == len(KLINE_INTERVAL_NS) + 1
    month_ns = 31 * 86_400_000 * MS
    expected = [length or month_ns for length in KLINE_INTERVAL_NS.values()] + [3_600_000 * MS]
    assert klines.interval_ns.tolist() == expected
    np.testing.assert_array_equal(klines.ts_close - klines.ts_open, klines.interval_ns)
    assert klines.ts_open.tolist() == [start * MS] * len(klines)
    assert klines.closed.tolist() == [name == "1d" for name in KLINE_INTERVAL_NS] + [False]
    assert klines.ts_event.tolist() == [1672515782136 * MS] * len(klines)
    bnb = only(result, "BNBBTC").klines
    assert bnb.ts_close.tolist() == [1672515840000 * MS]  # T + 1 ms
    assert (bnb.open[0], bnb.high[0], bnb.low[0], bnb.close[0]) == (0.001, 0.0025, 0.0015, 0.002)
    assert (bnb.volume[0], bnb.quote_volume[0], bnb.taker_buy_volume[0]) == (1000.0, 1.0, 500.0)
    assert bnb.trade_count.tolist() == [100] and bnb.closed.tolist() == [False]


def test_futures_ticker_depth_and_snapshot_keep_exchange_times() -> None:
    frames = [_frame("btcusdt@depth@100ms", FUTURES_DEPTH),
              _frame("bnbusdt@bookTicker", FUTURES_TICKER),
              _frame(None, FUTURES_SNAPSHOT), _frame("!bookTicker", FUTURES_TICKER)]
    _, result = parse(frames, BinanceParser(symbol_hint="btcusdt"))
    assert result.dead_letters == []
    deltas = only(result, "BTCUSDT").deltas
    assert deltas.prev_final_update_id.tolist() == [149, 149]
    assert deltas.ts_event.tolist() == [123456789 * MS] * 2  # E (event), not T (transaction)
    quotes = only(result, "BNBUSDT").quotes
    assert quotes.ts_event.tolist() == [1568014460893 * MS] * 2
    assert quotes.update_id.tolist() == [400900217] * 2
    assert quotes.bid_price.tolist() == [25.3519] * 2 and quotes.ask_qty.tolist() == [40.66] * 2
    snapshot = only(result, "BTCUSDT").snapshots
    assert snapshot.ts_event.tolist() == [1589436922972 * MS] * 2
    assert snapshot.last_update_id.tolist() == [1027024] * 2


def test_partial_book_streams_become_snapshots_of_their_symbol() -> None:
    frames = [_frame("btcusdt@trade", {"e": "trade", "E": 5000, "s": "BTCUSDT", "t": 1,
                                       "p": "1", "q": "1", "T": 5000, "m": True}),
              _frame("ethusdt@depth5@100ms", SPOT_PARTIAL),
              _frame("btcusdt@depth20", SPOT_PARTIAL),
              _frame("btcusdt@depth10@500ms", FUTURES_PARTIAL)]
    _, result = parse(frames)
    assert result.dead_letters == []
    eth = only(result, "ETHUSDT").snapshots
    assert eth.last_update_id.tolist() == [160] * 3 and eth.side.tolist() == [1, 1, -1]
    assert eth.ts_event.tolist() == [1001 + (5000 * MS - 1000)] * 3  # estimated from the trade
    btc = only(result, "BTCUSDT").snapshots
    assert btc.last_update_id.tolist() == [160] * 3 + [390497878] * 4  # futures: its u
    assert btc.ts_event.tolist()[3:] == [1571889248277 * MS] * 4
    assert btc.price.tolist()[3:] == [7403.89, 7403.90, 7405.96, 7406.63]
    assert len(only(result, "BTCUSDT").deltas) == 0


def test_stream_names() -> None:
    assert stream_kind("btcusdt@depth") == ("depth", "BTCUSDT")
    assert stream_kind("btcusdt@depth@0ms") == ("depth", "BTCUSDT")
    assert stream_kind("btcusdt@depth20@100ms") == ("partial_depth", "BTCUSDT")
    assert stream_kind("btcusdt@depth15") == (None, "")
    assert stream_kind("btcusdt@kline_1M") == ("kline", "BTCUSDT")
    assert stream_kind("btcusdt@kline_2m") == (None, "")
    assert stream_kind("!markPrice@arr@1s") == ("markPrice_array", "")
    assert stream_kind("!ticker@arr") == (None, "")
    assert stream_kind("btcusdt@markPrice@3s") == (None, "")


def test_control_frames_are_counted_and_unknown_events_dead_lettered() -> None:
    ticker = {"e": "24hrTicker", "E": 123456789, "s": "BNBBTC", "p": "0.0015", "P": "250.00",
              "w": "0.0018", "c": "0.0025", "Q": "10", "b": "0.0024", "B": "10", "a": "0.0026",
              "A": "100", "o": "0.0010", "h": "0.0025", "l": "0.0010", "v": "10000", "q": "18",
              "O": 0, "C": 86400000, "F": 0, "L": 18150, "n": 18151}
    liquidation = {"e": "forceOrder", "E": 1568014460893, "o": {
        "s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "9910",
        "ap": "9910", "X": "FILLED", "l": "0.014", "z": "0.014", "T": 1568014460893}}
    frames = [
        b'{"result":null,"id":1}', b'{"result":["btcusdt@trade"],"id":3}',
        _frame("bnbbtc@ticker", ticker), _frame(None, ticker), _frame(None, liquidation),
        _frame("!forceOrder@arr", liquidation), _frame("!ticker@arr", [ticker]),
        b'{"error":{"code":2,"msg":"Invalid request: unknown variable"},"id":4}',
    ]
    parser, result = parse(frames)
    assert result.chunks == []
    assert parser.stats == {"frames": 8, "market_frames": 0, "control_frames": 2,
                            "dead_letters": 6, "rejected_items": 0}
    assert parser.control_counts == {"subscription_reply": 2}
    letters = result.dead_letters
    assert [letter.reason for letter in letters] == ["unknown_stream"] * 5 + ["venue_error"]
    assert [letter.source for letter in letters] == [f"t.txt:line {n}" for n in range(3, 9)]
    assert "'bnbbtc@ticker' (event '24hrTicker')" in letters[0].detail
    assert "'24hrTicker'" in letters[1].detail and "'forceOrder'" in letters[2].detail
    assert "!forceOrder@arr" in letters[3].detail and "!ticker@arr" in letters[4].detail
    assert "Invalid request" in letters[5].detail


def _trade(**changes: object) -> dict:
    base = {"e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": 7, "p": "100.5", "q": "2",
            "T": 1723161255342, "m": False, "M": True}
    return {**base, **changes}


def _without(data: dict, key: str) -> dict:
    return {name: value for name, value in data.items() if name != key}


BAD_FRAMES = [  # (label, stream, data, reason, symbol the letter belongs to)
    ("trade id as text", "btcusdt@trade", _trade(t="7"), "invalid_number", "BTCUSDT"),
    ("trade qty null", "btcusdt@trade", _trade(q=None), "invalid_number", "BTCUSDT"),
    ("trade price bool", "btcusdt@trade", _trade(p=True), "invalid_number", "BTCUSDT"),
    ("trade id over int64", "btcusdt@trade", _trade(t=2**63), "invalid_number", "BTCUSDT"),
    ("trade id past 64 bits", "btcusdt@trade", _trade(t=10**20), "invalid_number", "BTCUSDT"),
    ("trade time negative", "btcusdt@trade", _trade(T=-1), "invalid_number", "BTCUSDT"),
    ("E too large", "btcusdt@trade", _trade(E=10**17), "invalid_number", "BTCUSDT"),
    ("stream of another symbol", "ethusdt@trade", _trade(), "invalid_field", None),
    ("data a list", "btcusdt@trade", [_trade()], "missing_field", None),
    ("agg missing a", "bnbbtc@aggTrade", _without(SPOT_AGG, "a"), "missing_field", "BNBBTC"),
    ("agg first id float", "bnbbtc@aggTrade", {**SPOT_AGG, "f": 1.5}, "invalid_number",
     "BNBBTC"),
    ("agg m text", "bnbbtc@aggTrade", {**SPOT_AGG, "m": "true"}, "invalid_field", "BNBBTC"),
    ("agg qty object", "bnbbtc@aggTrade", {**SPOT_AGG, "q": {}}, "invalid_number", "BNBBTC"),
    ("ticker missing A", "bnbusdt@bookTicker", _without(FUTURES_TICKER, "A"), "missing_field",
     "BNBUSDT"),
    ("ticker u float", "bnbusdt@bookTicker", {**FUTURES_TICKER, "u": 1.0}, "invalid_number",
     "BNBUSDT"),
    ("ticker bid bool", "bnbusdt@bookTicker", {**FUTURES_TICKER, "b": False}, "invalid_number",
     "BNBUSDT"),
    ("depth flat levels", "btcusdt@depth", {**FUTURES_DEPTH, "b": ["0.0024", "10"]},
     "invalid_field", "BTCUSDT"),
    ("depth levels nested twice", "btcusdt@depth", {**FUTURES_DEPTH, "a": [[["1", "2"]]]},
     "invalid_field", "BTCUSDT"),
    ("depth level of three", "btcusdt@depth", {**FUTURES_DEPTH, "a": [["1", "2", "3"]]},
     "invalid_field", "BTCUSDT"),
    ("depth levels an object", "btcusdt@depth", {**FUTURES_DEPTH, "b": {"1": "2"}},
     "invalid_field", "BTCUSDT"),
    ("depth pu text", "btcusdt@depth", {**FUTURES_DEPTH, "pu": "149"}, "invalid_number",
     "BTCUSDT"),
    ("depth missing U", "btcusdt@depth", _without(FUTURES_DEPTH, "U"), "missing_field",
     "BTCUSDT"),
    ("partial missing asks", "btcusdt@depth5", _without(SPOT_PARTIAL, "asks"),
     "missing_field", "BTCUSDT"),
    ("partial futures without u", "btcusdt@depth5@100ms", _without(FUTURES_PARTIAL, "u"),
     "missing_field", "BTCUSDT"),
    ("mark missing r", "btcusdt@markPrice", _without(MARK, "r"), "missing_field", "BTCUSDT"),
    ("mark next funding text", "btcusdt@markPrice", {**MARK, "T": "1562306400000"},
     "invalid_number", "BTCUSDT"),
    ("mark settle object", "btcusdt@markPrice", {**MARK, "P": {}}, "invalid_number", "BTCUSDT"),
    ("mark price not a number", "btcusdt@markPrice", {**MARK, "p": "n/a"}, "invalid_number",
     "BTCUSDT"),
    ("mark array an object", "!markPrice@arr", MARK, "invalid_field", None),
    ("kline k a list", "bnbbtc@kline_1m", {**KLINE, "k": []}, "invalid_field", "BNBBTC"),
    ("kline unknown interval", "bnbbtc@kline_1m", {**KLINE, "k": {**KLINE["k"], "i": "2m"}},
     "invalid_field", "BNBBTC"),
    ("kline close not one interval", "bnbbtc@kline_1m",
     {**KLINE, "k": {**KLINE["k"], "T": 1672515899999}}, "invalid_field", "BNBBTC"),
    ("kline x text", "bnbbtc@kline_1m", {**KLINE, "k": {**KLINE["k"], "x": "false"}},
     "invalid_field", "BNBBTC"),
    ("kline count float", "bnbbtc@kline_1m", {**KLINE, "k": {**KLINE["k"], "n": 100.0}},
     "invalid_number", "BNBBTC"),
    ("kline missing V", "bnbbtc@kline_1m", {**KLINE, "k": _without(KLINE["k"], "V")},
     "missing_field", "BNBBTC"),
    ("kline missing E", "bnbbtc@kline_1m", _without(KLINE, "E"), "missing_field", "BNBBTC"),
    ("bare frame without symbol", None, _without(FUTURES_AGG, "s"), "missing_field", None),
]


@pytest.mark.parametrize(("label", "stream", "data", "reason", "symbol"), BAD_FRAMES,
                         ids=[row[0] for row in BAD_FRAMES])
def test_malformed_frames_become_dead_letters(
    label: str, stream: str | None, data: object, reason: str, symbol: str | None
) -> None:
    good = _frame("btcusdt@trade", _trade(t=1))
    parser, result = parse([good, _frame(stream, data), good.replace(b'"t": 1', b'"t": 2')])
    letters = result.dead_letters + [d for chunk in result.chunks for d in chunk.dead_letters]
    assert [(letter.reason, letter.source, letter.symbol) for letter in letters] == [
        (reason, "t.txt:line 2", symbol)
    ], label
    assert letters[0].detail.startswith("t.txt line 2: ") and letters[0].ts_recv == 1001
    assert letters[0].payload == _frame(stream, data).decode()
    assert parser.stats["dead_letters"] == 1 and parser.stats["market_frames"] == 2
    btc = only(result, "BTCUSDT")
    assert btc.trades.trade_id.tolist() == [1, 2]  # the frames around it are untouched
    rows = sum(len(getattr(chunk, kind)) for chunk in result.chunks
               for kind in ("agg_trades", "quotes", "deltas", "snapshots", "marks", "klines"))
    assert rows == 0  # a bad frame leaves no partial row behind


def test_one_bad_item_of_a_mark_array_is_dead_lettered_alone() -> None:
    other = {**MARK, "s": "ETHUSDT"}
    frames = [_frame("!markPrice@arr", [MARK, {**other, "i": None}, _without(MARK, "s"),
                                        "oops", {**other, "s": "SOLUSDT"}])]
    parser, result = parse(frames)
    assert [chunk.symbol for chunk in result.chunks] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert len(only(result, "BTCUSDT").marks) == 1 and len(only(result, "SOLUSDT").marks) == 1
    eth = only(result, "ETHUSDT")
    assert len(eth.marks) == 0
    assert [(d.reason, d.symbol) for d in eth.dead_letters] == [("invalid_number", "ETHUSDT")]
    assert "item 1: " in eth.dead_letters[0].detail
    assert [(d.reason, d.detail.split(": ")[1]) for d in result.dead_letters] == [
        ("missing_field", "item 2"), ("missing_field", "item 3")
    ]
    assert parser.stats["rejected_items"] == 3 and parser.stats["market_frames"] == 1
