"""The byte-level symbol pre-scan names exactly the symbols the parser makes chunks for."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from dataflows.binance import parse_capture
from dataflows.capture_scan import scan_capture_symbols
from tests.dataflows.test_binance_captures import cryptofeed_frames

MARK = {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p": "11794.15",
        "i": "11784.62", "P": "11784.25", "r": "0.00038167", "T": 1562306400000}
AGG = {"e": "aggTrade", "E": 1672515782136, "s": "BNBBTC", "a": 1, "p": "0.001", "q": "100",
       "f": 100, "l": 105, "T": 1672515782136, "m": True, "M": True}
KLINE = {"e": "kline", "E": 1672515782136, "s": "ADAUSDT", "k": {
    "t": 1672515780000, "T": 1672515839999, "s": "ADAUSDT", "i": "1m", "f": 100, "L": 200,
    "o": "1", "c": "2", "h": "2", "l": "1", "v": "10", "n": 10, "x": False, "q": "15",
    "V": "5", "Q": "7", "B": "0"}}
TICKER = {"symbol": "LTCBTC", "bidPrice": "4", "bidQty": "431", "askPrice": "4.1",
          "askQty": "9"}


def _lines() -> list[str]:
    frames = [
        {"stream": "bnbbtc@aggTrade", "data": AGG},
        {"stream": "btcusdt@markPrice@1s", "data": MARK},
        {"stream": "!markPrice@arr", "data": [{**MARK, "s": "ETHUSDT"}, {**MARK, "s": "SOLUSDT"}]},
        {"stream": "adausdt@kline_1m", "data": KLINE},
        {"stream": "dotusdt@depth5@100ms", "data": {"lastUpdateId": 1, "bids": [], "asks": []}},
        {"rest": "/api/v3/ticker/bookTicker", "data": [TICKER, {**TICKER, "symbol": "XLMBTC"}]},
        {"rest": "/api/v3/depth", "symbol": "LINKUSDT",
         "data": {"lastUpdateId": 1, "bids": [], "asks": []}},
        {"feed": "connected", "symbol": "TRXUSDT", "detail": "connection 1"},
        {**AGG, "s": "AVAXUSDT"},  # bare
        {"u": 1, "s": "NEARUSDT", "b": "1", "B": "1", "a": "2", "A": "1"},  # bare spot ticker
        [{**MARK, "s": "OPUSDT"}],  # bare all-market marks
        {"result": None, "id": 1},
        {"stream": "xrpusdt@ticker", "data": {"e": "24hrTicker", "s": "XRPUSDT"}},
        {"e": "forceOrder", "E": 1, "o": {"s": "DOGEUSDT"}},
        {"stream": "!ticker@arr", "data": [{"e": "24hrTicker", "s": "SHIBUSDT"}]},
        {"lastUpdateId": 5, "bids": [], "asks": []},  # bare snapshot: the hint or only symbol
    ]
    return [f"{1000 + index} {json.dumps(frame)}" for index, frame in enumerate(frames)]


EXPECTED = {"BNBBTC", "BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT", "DOTUSDT", "LTCBTC", "XLMBTC",
            "LINKUSDT", "TRXUSDT", "AVAXUSDT", "NEARUSDT", "OPUSDT"}


def _parsed_symbols(path: Path) -> set[str]:
    return {chunk.symbol for result in parse_capture([path]) for chunk in result.chunks}


@pytest.mark.parametrize("compressed", [False, True])
def test_scan_names_the_parsers_symbols_of_every_frame_kind(tmp_path: Path,
                                                             compressed: bool) -> None:
    text = ("\n".join(_lines()) + "\n").encode()
    path = tmp_path / "capture.txt"  # gzip is told by its first bytes, not by the name
    path.write_bytes(gzip.compress(text) if compressed else text)
    symbols, lines = scan_capture_symbols(path)
    assert lines == len(_lines())
    assert symbols == EXPECTED
    assert _parsed_symbols(path) == EXPECTED  # no unknown stream adds a symbol to the run


def test_scan_of_the_bundled_captures(spot_captures: list[Path], usdm_captures: list[Path]
                                      ) -> None:
    counts = [scan_capture_symbols(path) for path in spot_captures + usdm_captures]
    assert counts == [({"BTCUSDT"}, 41_249), ({"BTCUSDT"}, 58_325), ({"BTCUSDT"}, 93_954)]


@pytest.mark.parametrize("venue", ["BINANCE", "BINANCE_FUTURES"])
def test_scan_of_the_cryptofeed_captures_as_a_raw_capture(tmp_path: Path, multi_venue_dir: Path,
                                                          venue: str) -> None:
    frames = cryptofeed_frames(multi_venue_dir / f"{venue}.ws.1.0",
                               multi_venue_dir / f"{venue}.http.0.0")
    path = tmp_path / "capture.txt"
    path.write_bytes(b"".join(b"%d %s\n" % (recv, raw) for recv, raw in frames))
    symbols, lines = scan_capture_symbols(path)
    assert lines == len(frames) and len(symbols) == 4
    assert symbols == _parsed_symbols(path)
