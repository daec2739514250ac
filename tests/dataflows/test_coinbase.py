"""Coinbase parser on every line of the bundled real capture (data/multi-venue/COINBASE.ws.28.0),
checked against a naive decoding, the synchronized book, validation and the tape; bad frames."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from dataflows.book import BookSynchronizer
from dataflows.coinbase import CoinbaseParser, normalize_symbol
from dataflows.validate import QuoteValidator, TradeValidator
from engine.batches import MarketChunk
from tests.dataflows.venue_helpers import (
    MULTI_VENUE,
    Parsed,
    TextBook,
    as_floats,
    assert_tape_round_trip,
    float_top,
    iso_ns,
    naive_frames,
    parse_file,
    replay_books,
)

CAPTURE = MULTI_VENUE / "COINBASE.ws.28.0"
PRODUCTS = {"SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC",
            "NU-GBP", "CRV-EUR", "SKL-GBP"}


@pytest.fixture(scope="module")
def parsed() -> Parsed:
    return parse_file(CAPTURE, CoinbaseParser(), chunk_lines=1_000)


@pytest.fixture(scope="module")
def naive() -> dict[str, dict[str, list]]:
    """Expected rows per symbol and kind, decoded with json/datetime only."""
    expected: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    book_ids: Counter[str] = Counter()
    for frame in naive_frames(CAPTURE):
        message = frame.message
        kind = message["type"]
        if kind == "subscriptions":
            expected["control"]["subscriptions"].append(frame.line)
            continue
        rows = expected[message["product_id"].replace("-", "")]
        if kind in ("match", "last_match"):
            aggressor = 1 if message["side"] == "sell" else -1
            rows["trades"].append((iso_ns(message["time"]), frame.ts_recv, message["trade_id"],
                                   float(message["price"]), float(message["size"]), aggressor))
        elif kind == "l2update":
            book_ids[message["product_id"]] += 1
            update = book_ids[message["product_id"]]
            changes = ([c for c in message["changes"] if c[0] == "buy"]
                       + [c for c in message["changes"] if c[0] == "sell"])
            for side, price, size in changes:
                rows["deltas"].append((iso_ns(message["time"]), frame.ts_recv, update, update,
                                       1 if side == "buy" else -1, float(price), float(size)))
        elif kind == "snapshot":
            book_ids[message["product_id"]] += 1
            for side, key in ((1, "bids"), (-1, "asks")):
                for price, size in message[key]:
                    rows["snapshots"].append((frame.ts_recv, book_ids[message["product_id"]],
                                              side, float(price), float(size)))
        elif kind == "ticker":
            rows["quotes"].append((iso_ns(message["time"]), frame.ts_recv, message["sequence"],
                                   float(message["best_bid"]), float(message["best_ask"])))
        else:
            raise AssertionError(f"unexpected frame type {kind} on line {frame.line}")
    return expected


def test_every_line_is_market_data_control_or_dead_letter(parsed: Parsed) -> None:
    line_count = sum(1 for _ in open(CAPTURE, "rb"))
    assert line_count == parsed.stats.lines == 9952
    # 1 connection line, 3 subscriptions sent by the client, 2 blank lines at the end
    assert (parsed.stats.connections, parsed.stats.client_frames, parsed.stats.blank_lines) == \
        (1, 3, 2)
    stats = parsed.parser.stats
    assert stats["frames"] == parsed.stats.received_frames == 9946
    assert stats["market_frames"] + stats["control_frames"] + stats["dead_letters"] == 9946
    assert parsed.dead_letters() == [] and stats["dead_letters"] == 0
    assert parsed.parser.control_counts == {"subscriptions": 3}
    assert stats["market_frames"] == 9719 + 97 + 10 + 10 + 107  # l2update, match, last_match,
    # snapshot, ticker


def test_columns_match_a_naive_decoding(parsed: Parsed, naive: dict) -> None:
    columns = parsed.symbol_columns()
    assert set(columns) == {normalize_symbol(product) for product in PRODUCTS}
    assert len(naive["control"]["subscriptions"]) == 3
    for symbol, parts in columns.items():
        expected = naive[symbol]
        trades = parts["trades"]
        got_trades = list(zip(trades.ts_event.tolist(), trades.ts_recv.tolist(),
                              trades.trade_id.tolist(), trades.price.tolist(),
                              trades.qty.tolist(), trades.side.tolist(), strict=True))
        assert got_trades == expected["trades"], symbol
        deltas = parts["deltas"]
        got_deltas = list(zip(deltas.ts_event.tolist(), deltas.ts_recv.tolist(),
                              deltas.first_update_id.tolist(), deltas.final_update_id.tolist(),
                              deltas.side.tolist(), deltas.price.tolist(), deltas.qty.tolist(),
                              strict=True))
        assert got_deltas == expected["deltas"], symbol
        assert set(deltas.prev_final_update_id.tolist()) == {-1}  # spot procedure
        snapshots = parts["snapshots"]
        got_snapshots = list(zip(snapshots.ts_recv.tolist(), snapshots.last_update_id.tolist(),
                                 snapshots.side.tolist(), snapshots.price.tolist(),
                                 snapshots.qty.tolist(), strict=True))
        assert got_snapshots == expected["snapshots"], symbol
        quotes = parts["quotes"]
        got_quotes = list(zip(quotes.ts_event.tolist(), quotes.ts_recv.tolist(),
                              quotes.update_id.tolist(), quotes.bid_price.tolist(),
                              quotes.ask_price.tolist(), strict=True))
        assert got_quotes == expected["quotes"], symbol
        assert np.isnan(quotes.bid_qty).all() and np.isnan(quotes.ask_qty).all()  # no sizes
    counts = Counter({kind: sum(len(parts[kind]) for parts in columns.values())
                      for kind in ("trades", "deltas", "quotes")})
    assert counts == {"trades": 107, "deltas": 9719, "quotes": 107}


def test_chunking_does_not_change_the_columns(parsed: Parsed) -> None:
    one_chunk = parse_file(CAPTURE, CoinbaseParser()).symbol_columns()
    for symbol, parts in parsed.symbol_columns().items():
        for kind, columns in parts.items():
            for name, values in columns.as_dict().items():
                np.testing.assert_array_equal(values, getattr(one_chunk[symbol][kind], name))
    sequences = defaultdict(list)
    for chunk in parsed.chunks:
        sequences[chunk.symbol].append(chunk.sequence)
    assert all(seq == list(range(len(seq))) for seq in sequences.values())


def test_snapshot_time_is_estimated_from_the_latest_clock_offset() -> None:
    lines = [
        b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","10","1"]],'
        b'"time":"2021-04-17T16:43:37.000000Z"}',
        b'{"type":"snapshot","product_id":"ETH-USD","bids":[["1","2"]],"asks":[["3","4"]]}',
    ]
    exchange = 1618677817_000_000_000
    received = [exchange + 250_000_000, exchange + 900_000_000]
    chunks, dead = CoinbaseParser().parse_frames(lines, received)
    assert dead == []
    snapshot = next(chunk for chunk in chunks if chunk.symbol == "ETHUSD").snapshots
    # offset observed on the l2update: exchange - receive = -250 ms
    assert snapshot.ts_event.tolist() == [exchange + 650_000_000] * 2


@pytest.mark.slow
def test_book_syncs_stays_uncrossed_and_matches_tickers_and_a_naive_book() -> None:
    text_books: dict[str, TextBook] = defaultdict(TextBook)
    naive = {frame.line: frame.message for frame in naive_frames(CAPTURE)}
    tickers_seen: Counter[str] = Counter()
    outcome: Counter[str] = Counter()

    def on_frame(line: int, chunk: MarketChunk, book: BookSynchronizer) -> None:
        message = naive[line]
        if message["type"] == "snapshot":
            text_books[chunk.symbol] = TextBook()
            for side, key in (("bid", "bids"), ("ask", "asks")):
                for price, size in message[key]:
                    text_books[chunk.symbol].set(side, price, size)
        elif message["type"] == "l2update":
            for side, price, size in message["changes"]:
                text_books[chunk.symbol].set("bid" if side == "buy" else "ask", price, size)
            assert book.in_sync, line
        for row in range(len(chunk.quotes)):
            bid, ask = float(chunk.quotes.bid_price[row]), float(chunk.quotes.ask_price[row])
            tickers_seen[chunk.symbol] += 1
            if not book.in_sync:
                outcome["before the book synced"] += 1
                continue
            bids, asks = float_top(book, 1)
            if (bids[0][0], asks[0][0]) == (bid, ask):
                outcome["equal at arrival"] += 1
            elif tickers_seen[chunk.symbol] == 1:
                # the ticker sent on subscription is as of the last trade, before the snapshot
                outcome[f"subscription ticker line {line}"] += 1
            else:
                outcome[f"different at line {line}"] += 1

    books = replay_books(CAPTURE, CoinbaseParser(), on_frame)
    assert outcome == {"equal at arrival": 97, "subscription ticker line 42": 1,
                       "before the book synced": 9}
    for symbol, book in books.items():
        assert book.in_sync and book.stats["syncs"] == 1, symbol
        assert book.stats["crossed"] == 0 and book.stats["gaps"] == 0, symbol
        text = text_books[symbol]
        bids, asks = book.levels()
        assert bids == {float(p): float(s) for p, s in text.bids.items()}, symbol
        assert asks == {float(p): float(s) for p, s in text.asks.items()}, symbol
        top_bids, top_asks = text.top(5)
        assert float_top(book, 5) == (as_floats(top_bids), as_floats(top_asks))


def test_validation_accepts_every_trade_and_rejects_sizeless_quotes(parsed: Parsed) -> None:
    trades, quotes = TradeValidator(), QuoteValidator()
    trade_letters, quote_letters = [], []
    for chunk in parsed.chunks:
        trade_letters += trades.validate(chunk.symbol, chunk.trades, "t")[1]
        quote_letters += quotes.validate(chunk.symbol, chunk.quotes, "q")[1]
    assert trade_letters == []
    # The 2021 ticker has no best_bid_size/best_ask_size: the sizes are NaN and the quote
    # validator (which requires positive sizes) rejects all 107 of them.
    assert Counter(letter.reason for letter in quote_letters) == {"invalid_quote": 107}


def test_tape_round_trip(parsed: Parsed, tmp_path: Path) -> None:
    rows = assert_tape_round_trip(parsed.chunks, tmp_path / "coinbase")
    assert rows["trades"] == 107 and rows["book_deltas"] == 9719 and rows["best_bid_ask"] == 107


def test_resubscribed_snapshot_continues_the_synthetic_ids() -> None:
    snapshot = b'{"type":"snapshot","product_id":"BTC-USD","bids":[["1","1"]],"asks":[["2","1"]]}'
    update = (b'{"type":"l2update","product_id":"BTC-USD","changes":[["sell","2","3"]],'
              b'"time":"2021-04-17T16:43:37.1Z"}')
    chunks, _ = CoinbaseParser().parse_frames([snapshot, update, update, snapshot, update],
                                              [1, 2, 3, 4, 5])
    (chunk,) = chunks
    assert chunk.snapshots.last_update_id.tolist() == [1, 1, 4, 4]
    assert chunk.deltas.first_update_id.tolist() == [2, 3, 5]
    assert chunk.deltas.final_update_id.tolist() == [2, 3, 5]
    assert chunk.deltas.ts_event.tolist() == [1618677817_100_000_000] * 3


L2 = '{"type":"l2update","product_id":"BTC-USD","changes":%s,"time":%s}'
MATCH = ('{"type":"match","trade_id":%s,"side":%s,"size":"1","price":"10",'
         '"product_id":"BTC-USD","time":"2021-04-17T16:43:37.1Z"}')
BAD_FRAMES = [
    ("{not json", "malformed_json", None, "invalid JSON"),
    ("[1, 2]", "unknown_stream", None, "JSON list"),
    ('{"type":"received","product_id":"BTC-USD"}', "unknown_stream", None, "'received'"),
    ('{"type":"error","message":"Failed to subscribe","reason":"XYZ is not a valid product"}',
     "venue_error", None, "XYZ is not a valid product"),
    ('{"type":"l2update","changes":[],"time":"2021-04-17T16:43:37Z"}', "missing_field", None,
     "'product_id'"),
    ('{"type":"l2update","product_id":"BTC-USD","changes":[]}', "missing_field", "BTCUSD",
     "'time'"),
    (L2 % ('[["buy","abc","1"]]', '"2021-04-17T16:43:37Z"'), "invalid_number", "BTCUSD",
     "change 0 price"),
    (L2 % ('[["hold","1","1"]]', '"2021-04-17T16:43:37Z"'), "invalid_field", "BTCUSD",
     "not [buy|sell, price, size]"),
    (L2 % ('[["buy","1","1"]]', '"yesterday"'), "invalid_field", "BTCUSD", "ISO-8601"),
    (L2 % ('"changes"', '"2021-04-17T16:43:37Z"'), "invalid_field", "BTCUSD", "'changes'"),
    (MATCH % ('"12"', '"sell"'), "invalid_number", "BTCUSD", "'trade_id'"),
    (MATCH % ("12", '"up"'), "invalid_field", "BTCUSD", "'side'"),
    ('{"type":"match","side":"buy","product_id":"BTC-USD","time":"2021-04-17T16:43:37Z"}',
     "missing_field", "BTCUSD", "'trade_id'"),
    ('{"type":"snapshot","product_id":"BTC-USD","bids":"none","asks":[]}', "invalid_field",
     "BTCUSD", "'bids'"),
    ('{"type":"ticker","product_id":"BTC-USD","best_bid":"x","best_ask":"1",'
     '"time":"2021-04-17T16:43:37Z"}', "invalid_number", "BTCUSD", "best_bid"),
]


@pytest.mark.parametrize(("frame", "reason", "symbol", "detail"), BAD_FRAMES)
def test_bad_frames_become_dead_letters(
    frame: str, reason: str, symbol: str | None, detail: str
) -> None:
    parser = CoinbaseParser()
    good = L2 % ('[["buy","1","1"]]', '"2021-04-17T16:43:37Z"')
    chunks, orphans = parser.parse_frames([good.encode(), frame.encode(), good.encode()],
                                          [10, 11, 12], source="live:coinbase")
    letters = orphans + [letter for chunk in chunks for letter in chunk.dead_letters]
    assert len(letters) == 1
    (letter,) = letters
    assert (letter.reason, letter.symbol, letter.source) == (reason, symbol, "live:coinbase:line 2")
    assert detail in letter.detail and letter.detail.startswith("live:coinbase line 2: ")
    assert letter.payload == frame and letter.ts_recv == 11
    assert (letter in orphans) == (symbol is None)
    # the bad frame left no rows and consumed no book id: the updates stay continuous
    (chunk,) = [chunk for chunk in chunks if chunk.symbol == "BTCUSD"]
    assert chunk.deltas.first_update_id.tolist() == [1, 2]
    assert len(chunk.trades) == 0 and len(chunk.snapshots) == 0 and len(chunk.quotes) == 0
    assert parser.stats == {"frames": 3, "market_frames": 2, "control_frames": 0,
                            "dead_letters": 1}


def test_control_frames_are_counted_not_dead_lettered() -> None:
    parser = CoinbaseParser()
    frames = [b'{"type":"heartbeat","sequence":1,"last_trade_id":2,"product_id":"BTC-USD"}',
              b'{"type":"subscriptions","channels":[]}', b'{"type":"status","products":[]}']
    chunks, orphans = parser.parse_frames(frames, [1, 2, 3])
    assert chunks == [] and orphans == []
    assert parser.control_counts == {"heartbeat": 1, "subscriptions": 1, "status": 1}


def test_ticker_with_sizes_and_without_time() -> None:
    frame = (b'{"type":"ticker","product_id":"ETH-USD","best_bid":"100.5","best_bid_size":"2",'
             b'"best_ask":"100.6","best_ask_size":"3.5","sequence":7}')
    (chunk,), _ = CoinbaseParser().parse_frames([frame], [5_000])
    quotes = chunk.quotes
    assert (quotes.bid_price[0], quotes.bid_qty[0], quotes.ask_price[0], quotes.ask_qty[0]) == \
        (100.5, 2.0, 100.6, 3.5)
    assert quotes.update_id[0] == 7 and quotes.ts_event[0] == 5_000  # no offset seen yet
    assert not math.isnan(quotes.bid_qty[0])
