"""OKX v5 parser on every line of the bundled real capture (data/multi-venue/OKX.ws.1.0), checked
against a naive decoding, the venue's book checksums, validation and the tape; bad frames."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from dataflows.book import BookSynchronizer
from dataflows.okx import OkxParser, normalize_symbol, okx_checksum
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
)

CAPTURE = MULTI_VENUE / "OKX.ws.1.0"
SYMBOLS = {"BTCUSD-220527", "UNIUSD-SWAP", "BTCUSDT"}


@pytest.fixture(scope="module")
def parsed() -> Parsed:
    return parse_file(CAPTURE, OkxParser(), chunk_lines=50)


@pytest.fixture(scope="module")
def naive() -> dict[str, dict[str, list]]:
    expected: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    book_ids: Counter[str] = Counter()
    for frame in naive_frames(CAPTURE):
        message = frame.message
        if "event" in message:
            expected["control"][message["event"]].append(frame.line)
            continue
        channel, inst = message["arg"]["channel"], message["arg"]["instId"]
        rows = expected[inst.split("-")[0] + inst.split("-")[1] + "".join(
            "-" + part for part in inst.split("-")[2:])]
        for item in message["data"]:
            ts_event = int(item["ts"]) * 1_000_000
            if channel == "trades":
                rows["trades"].append((ts_event, frame.ts_recv, int(item["tradeId"]),
                                       float(item["px"]), float(item["sz"]),
                                       1 if item["side"] == "buy" else -1))
            elif channel == "tickers":
                rows["quotes"].append((ts_event, frame.ts_recv, -1, float(item["bidPx"]),
                                       float(item["bidSz"]), float(item["askPx"]),
                                       float(item["askSz"])))
            else:
                book_ids[inst] += 1
                kind = "snapshots" if message["action"] == "snapshot" else "deltas"
                for side, key in ((1, "bids"), (-1, "asks")):
                    for price, size, _, _ in item[key]:
                        rows[kind].append((ts_event, frame.ts_recv, book_ids[inst], side,
                                           float(price), float(size)))
    return expected


def test_every_line_is_market_data_control_or_dead_letter(parsed: Parsed) -> None:
    assert sum(1 for _ in open(CAPTURE, "rb")) == parsed.stats.lines == 414
    assert (parsed.stats.connections, parsed.stats.client_frames) == (1, 3)
    stats = parsed.parser.stats
    assert stats["frames"] == parsed.stats.received_frames == 410
    assert stats["market_frames"] + stats["control_frames"] + stats["dead_letters"] == 410
    assert parsed.dead_letters() == []
    assert parsed.parser.control_counts == {"subscribe": 18}
    assert stats["market_frames"] == 290 + 74 + 28  # books, trades, tickers


def test_columns_match_a_naive_decoding(parsed: Parsed, naive: dict) -> None:
    columns = parsed.symbol_columns()
    assert set(columns) == SYMBOLS
    assert len(naive["control"]["subscribe"]) == 18
    for symbol, parts in columns.items():
        expected = naive[symbol]
        t = parts["trades"]
        assert list(zip(t.ts_event.tolist(), t.ts_recv.tolist(), t.trade_id.tolist(),
                        t.price.tolist(), t.qty.tolist(), t.side.tolist(),
                        strict=True)) == expected["trades"], symbol
        q = parts["quotes"]
        assert list(zip(q.ts_event.tolist(), q.ts_recv.tolist(), q.update_id.tolist(),
                        q.bid_price.tolist(), q.bid_qty.tolist(), q.ask_price.tolist(),
                        q.ask_qty.tolist(), strict=True)) == expected["quotes"], symbol
        d = parts["deltas"]
        assert list(zip(d.ts_event.tolist(), d.ts_recv.tolist(), d.final_update_id.tolist(),
                        d.side.tolist(), d.price.tolist(), d.qty.tolist(),
                        strict=True)) == expected["deltas"], symbol
        assert np.array_equal(d.first_update_id, d.final_update_id)
        assert set(d.prev_final_update_id.tolist()) == {-1}
        s = parts["snapshots"]
        assert list(zip(s.ts_event.tolist(), s.ts_recv.tolist(), s.last_update_id.tolist(),
                        s.side.tolist(), s.price.tolist(), s.qty.tolist(),
                        strict=True)) == expected["snapshots"], symbol
    totals = {kind: sum(len(parts[kind]) for parts in columns.values())
              for kind in ("trades", "quotes", "snapshots", "deltas")}
    assert totals == {"trades": 74, "quotes": 28, "snapshots": 1176, "deltas": 7088}


def test_symbols_keep_derivative_suffixes() -> None:
    assert [normalize_symbol(i) for i in ("BTC-USDT", "UNI-USD-SWAP", "BTC-USD-220527",
                                          "BTC-USD-220527-30000-C")] == \
        ["BTCUSDT", "UNIUSD-SWAP", "BTCUSD-220527", "BTCUSD-220527-30000-C"]


def test_book_syncs_and_matches_every_checksum_of_the_venue() -> None:
    """OKX sends a CRC-32 of its top 25 levels with every book frame. A naive text book proves
    the checksums right, and the synchronized book must hold exactly those 25 levels per side.
    (The 2022 tickers channel sent throttled, stale best bid/ask, so the checksums are the
    venue's own top levels to compare with.)"""
    naive = {frame.line: frame.message for frame in naive_frames(CAPTURE)}
    text_books: dict[str, TextBook] = defaultdict(TextBook)
    checked: Counter[str] = Counter()

    def on_frame(line: int, chunk: MarketChunk, book: BookSynchronizer) -> None:
        message = naive[line]
        if message.get("arg", {}).get("channel") != "books":
            return
        (item,) = message["data"]
        if message["action"] == "snapshot":
            text_books[chunk.symbol] = TextBook()
        text = text_books[chunk.symbol]
        for side, key in (("bid", "bids"), ("ask", "asks")):
            for price, size, _, _ in item[key]:
                text.set(side, price, size)
        top_bids, top_asks = text.top(25)
        assert okx_checksum(top_bids, top_asks) == item["checksum"], line
        if message["action"] == "update":
            assert book.in_sync, line
            assert float_top(book, 25) == (as_floats(top_bids), as_floats(top_asks)), line
            checked[chunk.symbol] += 1

    books = replay_books(CAPTURE, OkxParser(), on_frame)
    assert checked == {"BTCUSD-220527": 98, "UNIUSD-SWAP": 92, "BTCUSDT": 97}
    for symbol, book in books.items():
        assert book.stats["syncs"] == 1 and book.stats["crossed"] == 0, symbol
        assert book.stats["gaps"] == 0 and book.in_sync, symbol


def test_validation_accepts_every_trade_and_quote(parsed: Parsed) -> None:
    trades, quotes = TradeValidator(), QuoteValidator()
    letters = []
    for chunk in parsed.chunks:
        letters += trades.validate(chunk.symbol, chunk.trades, "t")[1]
        letters += quotes.validate(chunk.symbol, chunk.quotes, "q")[1]
    assert letters == []


def test_tape_round_trip(parsed: Parsed, tmp_path: Path) -> None:
    rows = assert_tape_round_trip(parsed.chunks, tmp_path / "okx")
    assert rows["trades"] == 74 and rows["book_snapshots"] == 1176 and rows["best_bid_ask"] == 28


BOOKS = ('{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"%s","data":[{"asks":%s,'
         '"bids":[],"ts":"1652459225464","checksum":0%s}]}')


def test_venue_sequence_numbers_are_used_and_keepalives_counted() -> None:
    parser = OkxParser()
    frames = [
        BOOKS % ("snapshot", '[["100","1","0","1"]]', ',"seqId":10,"prevSeqId":-1'),
        BOOKS % ("update", '[["101","2","0","1"]]', ',"seqId":15,"prevSeqId":10'),
        BOOKS % ("update", "[]", ',"seqId":15,"prevSeqId":15'),  # keep-alive
        BOOKS % ("update", '[["101","0","0","0"]]', ',"seqId":20,"prevSeqId":15'),
    ]
    (chunk,), orphans = parser.parse_frames([f.encode() for f in frames], [1, 2, 3, 4])
    assert orphans == [] and chunk.dead_letters == ()
    assert chunk.snapshots.last_update_id.tolist() == [10]
    assert chunk.deltas.first_update_id.tolist() == [11, 16]
    assert chunk.deltas.final_update_id.tolist() == [15, 20]
    assert chunk.deltas.prev_final_update_id.tolist() == [-1, -1]
    assert parser.control_counts == {"book_keepalive": 1}
    book = BookSynchronizer("BTCUSDT")
    result = book.apply(chunk.deltas, chunk.snapshots)
    assert book.in_sync and [event.kind for event in result.events] == ["synced"]
    assert book.levels() == ({}, {100.0: 1.0})


def test_control_texts_and_events() -> None:
    parser = OkxParser()
    frames = [b"pong", b'{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}',
              b'{"event":"channel-conn-count","channel":"books","connCount":"1"}']
    chunks, orphans = parser.parse_frames(frames, [1, 2, 3])
    assert chunks == [] and orphans == []
    assert parser.control_counts == {"pong": 1, "subscribe": 1, "channel-conn-count": 1}


TRADE = ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
         '"tradeId":%s,"px":"30243.5","sz":"0.001","side":%s,"ts":%s}]}')
BAD_FRAMES = [
    ("ping", "malformed_json", None, "invalid JSON"),
    ('{"event":"error","code":"60012","msg":"Invalid request"}', "venue_error", None,
     "Invalid request"),
    ('{"event":"notice","msg":"x"}', "unknown_stream", None, "'notice'"),
    ('{"data":[]}', "unknown_stream", None, "no 'arg'"),
    ('{"arg":{"channel":"candle1m","instId":"BTC-USDT"},"data":[]}', "unknown_stream", None,
     "'candle1m'"),
    ('{"arg":{"channel":"trades"},"data":[]}', "missing_field", None, "'instId'"),
    ('{"arg":{"channel":"trades","instId":"BTC-USDT"}}', "missing_field", "BTCUSDT", "'data'"),
    (TRADE % ('"x1"', '"buy"', '"1652459226050"'), "invalid_number", "BTCUSDT", "'tradeId'"),
    (TRADE % ('"7"', '"long"', '"1652459226050"'), "invalid_field", "BTCUSDT", "'side'"),
    (TRADE % ('"7"', '"buy"', '"soon"'), "invalid_number", "BTCUSDT", "'ts'"),
    (BOOKS % ("patch", "[]", ""), "invalid_field", "BTCUSDT", "'action'"),
    (BOOKS % ("update", '[["100"]]', ""), "invalid_field", "BTCUSDT", "level 0"),
    (BOOKS % ("update", '[["100","abc","0","1"]]', ""), "invalid_number", "BTCUSDT", "size"),
    (BOOKS % ("update", "[]", ',"seqId":"5","prevSeqId":4'), "invalid_number", "BTCUSDT",
     "'seqId'"),
    ('{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"bidPx":"1","bidSz":"1",'
     '"askPx":"2","ts":"1652459226050"}]}', "missing_field", "BTCUSDT", "'askSz'"),
]


@pytest.mark.parametrize(("frame", "reason", "symbol", "detail"), BAD_FRAMES)
def test_bad_frames_become_dead_letters(
    frame: str, reason: str, symbol: str | None, detail: str
) -> None:
    parser = OkxParser()
    good = TRADE % ('"5"', '"buy"', '"1652459226050"')
    chunks, orphans = parser.parse_frames([good.encode(), frame.encode()], [10, 11], "live:okx")
    letters = orphans + [letter for chunk in chunks for letter in chunk.dead_letters]
    (letter,) = letters
    assert (letter.reason, letter.symbol, letter.source) == (reason, symbol, "live:okx:line 2")
    assert detail in letter.detail, letter.detail
    assert letter.payload == frame and (letter in orphans) == (symbol is None)
    (chunk,) = chunks
    assert chunk.trades.trade_id.tolist() == [5] and len(chunk.deltas) == len(chunk.quotes) == 0
