"""Kraken v1 parser on every line of the bundled real capture (data/multi-venue/KRAKEN.ws.50.0),
checked against a naive decoding, the venue's book checksums and the tape; the trade, spread and
ticker channels (absent from the capture) and bad frames on documented shapes."""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from dataflows.book import BookSynchronizer
from dataflows.kraken import KrakenParser, kraken_checksum, normalize_symbol
from dataflows.validate import QuoteValidator, TradeValidator
from engine.batches import MarketChunk
from tests.dataflows.venue_helpers import (
    MULTI_VENUE,
    Parsed,
    TextBook,
    as_floats,
    assert_tape_round_trip,
    float_top,
    naive_frames,
    parse_file,
    replay_books,
    seconds_ns,
)

CAPTURE = MULTI_VENUE / "KRAKEN.ws.50.0"
PAIRS = ["WAVES/EUR", "XMR/USD", "KSM/XBT", "GRT/ETH", "SC/EUR", "ETH/CHF", "OCEAN/XBT",
         "OMG/USD", "XBT/CHF", "ADA/XBT"]


@pytest.fixture(scope="module")
def parsed() -> Parsed:
    return parse_file(CAPTURE, KrakenParser(), chunk_lines=700)


@pytest.fixture(scope="module")
def naive() -> dict[str, dict[str, list]]:
    expected: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    book_ids: Counter[str] = Counter()
    for frame in naive_frames(CAPTURE):
        message = frame.message
        if isinstance(message, dict):
            expected["control"][message["event"]].append(frame.line)
            continue
        pair = message[-1]
        base, quote = (code.replace("XBT", "BTC") for code in pair.split("/"))
        rows = expected[base + quote]
        book_ids[pair] += 1
        payloads = message[1:-2]
        if "as" in payloads[0]:
            for side, key in ((1, "bs"), (-1, "as")):
                for price, volume, _ in payloads[0][key]:
                    rows["snapshots"].append((frame.ts_recv, book_ids[pair], side, float(price),
                                              float(volume)))
            continue
        levels = {key: [level for p in payloads for level in p.get(key, [])] for key in "ab"}
        ts_event = max(seconds_ns(level[2]) for key in "ab" for level in levels[key])
        for side, key in ((1, "b"), (-1, "a")):
            for level in levels[key]:
                rows["deltas"].append((ts_event, frame.ts_recv, book_ids[pair], side,
                                       float(level[0]), float(level[1])))
    return expected


def test_every_line_is_market_data_control_or_dead_letter(parsed: Parsed) -> None:
    assert sum(1 for _ in open(CAPTURE, "rb")) == parsed.stats.lines == 4325
    assert (parsed.stats.connections, parsed.stats.client_frames, parsed.stats.blank_lines) == \
        (1, 1, 2)
    stats = parsed.parser.stats
    assert stats["frames"] == parsed.stats.received_frames == 4321
    assert stats["market_frames"] + stats["control_frames"] + stats["dead_letters"] == 4321
    assert parsed.dead_letters() == []
    assert parsed.parser.control_counts == {"systemStatus": 1, "subscriptionStatus": 10,
                                            "heartbeat": 31}
    assert stats["market_frames"] == 4279


def test_columns_match_a_naive_decoding(parsed: Parsed, naive: dict) -> None:
    columns = parsed.symbol_columns()
    assert set(columns) == {normalize_symbol(pair) for pair in PAIRS}
    assert {kind: len(lines) for kind, lines in naive["control"].items()} == \
        {"systemStatus": 1, "subscriptionStatus": 10, "heartbeat": 31}
    for symbol, parts in columns.items():
        expected = naive[symbol]
        d = parts["deltas"]
        assert list(zip(d.ts_event.tolist(), d.ts_recv.tolist(), d.final_update_id.tolist(),
                        d.side.tolist(), d.price.tolist(), d.qty.tolist(),
                        strict=True)) == expected["deltas"], symbol
        assert np.array_equal(d.first_update_id, d.final_update_id)
        s = parts["snapshots"]
        assert list(zip(s.ts_recv.tolist(), s.last_update_id.tolist(), s.side.tolist(),
                        s.price.tolist(), s.qty.tolist(), strict=True)) == expected["snapshots"]
        assert len(parts["trades"]) == len(parts["quotes"]) == 0
    assert sum(len(parts["deltas"]) for parts in columns.values()) == 4272


@pytest.mark.slow
def test_book_syncs_and_matches_every_checksum_of_the_venue() -> None:
    """Every Kraken update carries a CRC-32 of the top 10 levels per side: the naive text book
    proves it, and the synchronized book must hold exactly those levels."""
    naive = {frame.line: frame.message for frame in naive_frames(CAPTURE)}
    text_books: dict[str, TextBook] = defaultdict(TextBook)
    checked: Counter[str] = Counter()

    def on_frame(line: int, chunk: MarketChunk, book: BookSynchronizer) -> None:
        message = naive[line]
        if isinstance(message, dict):
            return
        payloads = message[1:-2]
        if "as" in payloads[0]:
            text_books[chunk.symbol] = TextBook()
            for side, key in (("bid", "bs"), ("ask", "as")):
                for price, volume, _ in payloads[0][key]:
                    text_books[chunk.symbol].set(side, price, volume)
            return
        text = text_books[chunk.symbol]
        for payload in payloads:
            for side, key in (("bid", "b"), ("ask", "a")):
                for level in payload.get(key, []):
                    text.set(side, level[0], level[1])
        top_bids, top_asks = text.top(10)
        assert str(kraken_checksum(top_asks, top_bids)) == payloads[-1]["c"], line
        assert book.in_sync, line
        assert float_top(book, 10) == (as_floats(top_bids), as_floats(top_asks)), line
        checked[chunk.symbol] += 1

    books = replay_books(CAPTURE, KrakenParser(), on_frame)
    assert sum(checked.values()) == 4279 - 10
    for symbol, book in books.items():
        assert book.stats["syncs"] == 1 and book.stats["crossed"] == 0, symbol
        assert book.stats["gaps"] == 0 and book.in_sync, symbol


def test_tape_round_trip(parsed: Parsed, tmp_path: Path) -> None:
    rows = assert_tape_round_trip(parsed.chunks, tmp_path / "kraken")
    assert rows["book_deltas"] == 4272 and rows["trades"] == 0


def test_symbols() -> None:
    assert [normalize_symbol(p) for p in ("XBT/USD", "XDG/XBT", "ETH/CHF", "xbt/eur")] == \
        ["BTCUSD", "DOGEBTC", "ETHCHF", "BTCEUR"]


# Kraken v1 documented shapes for the channels the capture lacks.
TRADES = ('[0,[["5541.20000","0.15850568","1534614057.321597","s","l",""],'
          '["5542.50000","0.40100000","1534614057.324998","b","l",""]],"trade","XBT/USD"]')
SPREAD = '[0,["5698.40000","5700.00000","1542057299.545897","1.01234567","0.98765432"],' \
         '"spread","XBT/USD"]'
TICKER = ('[0,{"a":["5525.40000",1,"1.000"],"b":["5525.10000",1,"1.500"],"c":["5525.10000",'
          '"0.00398963"],"v":["2634.11501494","3591.17907851"]},"ticker","XBT/USD"]')


def test_trades_get_per_pair_counter_ids_and_taker_sides() -> None:
    parser = KrakenParser()
    other = TRADES.replace("XBT/USD", "ETH/USD")
    later = TRADES.replace("1534614057.", "1534614058.")
    (btc, eth), orphans = parser.parse_frames([TRADES.encode(), other.encode(), later.encode()],
                                              [1, 2, 3])
    assert orphans == []
    assert (btc.symbol, eth.symbol) == ("BTCUSD", "ETHUSD")
    assert btc.trades.trade_id.tolist() == [1, 2, 3, 4] and eth.trades.trade_id.tolist() == [1, 2]
    assert btc.trades.side.tolist() == [-1, 1, -1, 1]
    assert btc.trades.ts_event[:2].tolist() == [1534614057_321597000, 1534614057_324998000]
    assert btc.trades.price[:2].tolist() == [5541.2, 5542.5]
    assert btc.trades.qty[1] == 0.401
    kept, dead = TradeValidator().validate("BTCUSD", btc.trades, "t")
    assert dead == [] and len(kept) == 4


def test_spread_and_ticker_become_quotes() -> None:
    parser = KrakenParser()
    (chunk,), _ = parser.parse_frames([SPREAD.encode(), TICKER.encode()],
                                      [1542057300_000_000_000, 1542057301_000_000_000])
    quotes = chunk.quotes
    assert quotes.bid_price.tolist() == [5698.4, 5525.1]
    assert quotes.ask_price.tolist() == [5700.0, 5525.4]
    assert quotes.bid_qty.tolist() == [1.01234567, 1.5] and quotes.ask_qty.tolist() == [
        0.98765432, 1.0]
    assert quotes.update_id.tolist() == [-1, -1]
    spread_time = 1542057299_545897000
    offset = spread_time - 1542057300_000_000_000
    assert quotes.ts_event.tolist() == [spread_time, 1542057301_000_000_000 + offset]
    kept, dead = QuoteValidator().validate("BTCUSD", quotes, "q")
    assert dead == [] and len(kept) == 2


BOOK = '[336,%s,"book-10","XBT/USD"]'


def test_republished_levels_and_two_payload_updates() -> None:
    snapshot = BOOK % ('{"as":[["5541.30000","2.50700000","1534614248.123678"]],'
                       '"bs":[["5541.20000","1.52900000","1534614248.765567"]]}')
    republish = BOOK % ('{"a":[["5541.30000","2.40000000","1534614248.456738","r"]],'
                        '"c":"974942666"}')
    both = BOOK % ('{"a":[["5541.40000","1.00000000","1534614249.000001"]]},'
                   '{"b":[["5541.20000","0.00000000","1534614249.000002"]],"c":"1"}')
    (chunk,), orphans = KrakenParser().parse_frames(
        [snapshot.encode(), republish.encode(), both.encode()], [10, 20, 30])
    assert orphans == [] and chunk.dead_letters == ()
    assert chunk.snapshots.last_update_id.tolist() == [1, 1]
    deltas = chunk.deltas
    assert deltas.final_update_id.tolist() == [2, 3, 3]
    assert deltas.side.tolist() == [-1, 1, -1]  # bids before asks within one update
    assert deltas.ts_event.tolist() == [1534614248_456738000, 1534614249_000002000,
                                        1534614249_000002000]
    book = BookSynchronizer("BTCUSD")
    book.apply(chunk.deltas, chunk.snapshots)
    assert book.in_sync and book.levels() == ({}, {5541.3: 2.4, 5541.4: 1.0})


def test_checksum_of_a_text_book() -> None:
    asks = [(f"{Decimal('0.05005') + Decimal(i) / 100000:.5f}", "0.00000500") for i in range(12)]
    bids = [(f"{Decimal('0.05000') - Decimal(i) / 100000:.5f}", "0.00000500") for i in range(12)]
    first_ten = kraken_checksum(asks[:10], bids[:10])
    assert kraken_checksum(asks, bids) == first_ten  # only the top ten count
    assert kraken_checksum(asks[:10], bids[:9]) != first_ten


BAD_FRAMES = [
    ("{", "malformed_json", None, "invalid JSON"),
    ('{"event":"subscriptionStatus","status":"error","pair":"XBT/ABC",'
     '"errorMessage":"Currency pair not supported"}', "venue_error", None,
     "Currency pair not supported"),
    ('{"event":"addOrderStatus"}', "unknown_stream", None, "'addOrderStatus'"),
    ("[1,2]", "unknown_stream", None, "not [channelID"),
    ('[1,{"a":[]},"book-10",5]', "missing_field", None, "no pair name"),
    ('[1,[],"ohlc-5","XBT/USD"]', "unknown_stream", "BTCUSD", "'ohlc-5'"),
    (BOOK % '{"x":[]}', "invalid_field", "BTCUSD", "keys [x]"),
    (BOOK % '[1]', "invalid_field", "BTCUSD", "not objects"),
    (BOOK % '{"a":[["1","2"]]}', "invalid_field", "BTCUSD", "not [price, volume, time]"),
    (BOOK % '{"a":[["1","x","1534614248.1"]]}', "invalid_number", "BTCUSD", "volume"),
    (BOOK % '{"a":[["1","2","noon"]]}', "invalid_number", "BTCUSD", "timestamp"),
    (BOOK % '{"a":[]}', "missing_field", "BTCUSD", "no level"),
    ('[0,[["1","2","1534614057.3","x","l",""]],"trade","XBT/USD"]', "invalid_field", "BTCUSD",
     "not b or s"),
    ('[0,["1","2"],"spread","XBT/USD"]', "invalid_field", "BTCUSD", "[bid, ask, time"),
    ('[0,{"a":["1",1,"1"]},"ticker","XBT/USD"]', "missing_field", "BTCUSD", "ticker 'b'"),
]


@pytest.mark.parametrize(("frame", "reason", "symbol", "detail"), BAD_FRAMES)
def test_bad_frames_become_dead_letters(
    frame: str, reason: str, symbol: str | None, detail: str
) -> None:
    parser = KrakenParser()
    good = BOOK % '{"b":[["5541.2","1.0","1534614248.1"]],"c":"1"}'
    chunks, orphans = parser.parse_frames([good.encode(), frame.encode(), good.encode()],
                                          [1, 2, 3], "live:kraken")
    letters = orphans + [letter for chunk in chunks for letter in chunk.dead_letters]
    (letter,) = letters
    assert (letter.reason, letter.symbol, letter.source) == (reason, symbol, "live:kraken:line 2")
    assert detail in letter.detail, letter.detail
    assert (letter in orphans) == (symbol is None)
    (chunk,) = chunks
    assert chunk.deltas.final_update_id.tolist() == [1, 2]  # no id spent on the bad frame
    assert len(chunk.trades) == len(chunk.quotes) == 0
