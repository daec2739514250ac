"""The venue registry: parsers by name, capture readers by sniffing the first line."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from dataflows.binance import BinanceParser
from dataflows.book import BookSynchronizer
from dataflows.capture import CaptureChunk, read_capture
from dataflows.coinbase import CoinbaseParser
from dataflows.cryptofeed_capture import read_cryptofeed_capture
from dataflows.kraken import KrakenParser
from dataflows.okx import OkxParser
from dataflows.venues import VENUES, capture_reader, cryptofeed_venue, make_parser
from tests.dataflows.venue_helpers import MULTI_VENUE

REPO = Path(__file__).resolve().parents[2]


def test_make_parser_by_venue_name() -> None:
    assert VENUES == ("binance", "binance-usdm", "coinbase", "okx", "kraken")
    kinds = {venue: type(make_parser(venue)) for venue in VENUES}
    assert kinds == {"binance": BinanceParser, "binance-usdm": BinanceParser,
                     "coinbase": CoinbaseParser, "okx": OkxParser, "kraken": KrakenParser}
    assert make_parser("OKX", symbol_hint="btcusdt").symbol_hint == "BTCUSDT"  # type: ignore
    with pytest.raises(ValueError, match="unknown venue 'ftx'; allowed venues: binance, "
                                         "binance-usdm, coinbase, okx, kraken"):
        make_parser("ftx")


def test_capture_reader_sniffs_the_format(tmp_path: Path) -> None:
    for name in ("COINBASE.ws.28.0", "OKX.ws.1.0", "KRAKEN.ws.50.0", "BINANCE.http.0.0"):
        assert capture_reader(MULTI_VENUE / name) is read_cryptofeed_capture
    assert capture_reader(REPO / "data" / "binance-spot" / "btcusdt_20240808.gz") is read_capture
    received_first = tmp_path / "frames.gz"
    received_first.write_bytes(gzip.compress(b"\n\n1618677817.06: {}\n"))
    assert capture_reader(received_first) is read_cryptofeed_capture
    bad = tmp_path / "notes.txt"
    bad.write_text("\nhello world\n")
    with pytest.raises(ValueError, match=r"notes.txt line 2: neither"):
        capture_reader(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no non-blank line"):
        capture_reader(empty)


def test_a_sniffed_reader_and_made_parser_parse_a_capture() -> None:
    path = MULTI_VENUE / "OKX.ws.1.0"
    venue = cryptofeed_venue(path)
    assert venue == "okx"
    parser = make_parser(venue)
    trades = 0
    for lines, letters in capture_reader(path)(path, 20_000):
        assert letters == []
        chunks, dead = parser.parse_lines(lines)
        assert dead == []
        trades += sum(len(chunk.trades) for chunk in chunks)
    assert trades == 74
    assert [cryptofeed_venue(MULTI_VENUE / n) for n in ("COINBASE.ws.28.0", "KRAKEN.ws.50.0",
                                                         "BINANCE.ws.1.0")] == \
        ["coinbase", "kraken", "binance"]


@pytest.mark.parametrize(("http", "ws", "symbols"), [
    ("BINANCE.http.0.0", "BINANCE.ws.1.0", {"NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"}),
    ("BINANCE_FUTURES.http.0.0", "BINANCE_FUTURES.ws.1.0",
     {"SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"}),
])
def test_binance_cryptofeed_captures_parse_and_sync(http: str, ws: str, symbols: set[str]) -> None:
    """cryptofeed records REST snapshots and websocket frames in two files: merged by receive
    time, the REST envelopes and frames go through the Binance parser and every book syncs."""
    frames = []
    for name in (http, ws):
        for lines, letters in read_cryptofeed_capture(MULTI_VENUE / name):
            assert letters == []
            frames += zip(lines.ts_recv, lines.line_numbers, lines.frames, strict=True)
    frames.sort(key=lambda frame: frame[0])  # stable: file order breaks ties
    merged = CaptureChunk("merged", [n for _, n, _ in frames], [t for t, _, _ in frames],
                          [f for _, _, f in frames])
    parser = make_parser(cryptofeed_venue(ws) or "")
    chunks, orphans = parser.parse_lines(merged)
    assert orphans == [] and all(chunk.dead_letters == () for chunk in chunks)
    assert {chunk.symbol for chunk in chunks} == symbols
    for chunk in chunks:
        book = BookSynchronizer(chunk.symbol)
        result = book.apply(chunk.deltas, chunk.snapshots)
        assert book.in_sync and [event.kind for event in result.events] == ["synced"]
        assert len(chunk.snapshots) > 0 and len(chunk.deltas) > 0
