"""Every frame of the bundled Binance captures, parsed and checked against a naive reader.

The naive reader below decodes each line with the standard library's `json` and writes down, per
symbol and kind, the rows the parser must produce (ids, times, prices, quantities, sides, update
ids, pu), with the receive-time clock estimate recomputed independently. The parser's columns
must equal them exactly, with zero dead letters and every line accounted for.

Captures: data/binance-spot (spot trade, depth@100ms, bookTicker, one bare REST snapshot),
data/binance-usdm (futures trade, depth@0ms with pu, bookTicker with E/T, a bare /fapi/v1/depth
snapshot with E/T) and the cryptofeed captures in data/multi-venue (spot and futures
depth@100ms, bookTicker, kline_1m, aggTrade, and REST depth snapshots in separate HTTP files),
whose lines `<unix time>: <JSON>` and `<url> -> <unix time>: <JSON>` are split here by hand.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from dataflows.binance import BinanceParser
from dataflows.capture import CaptureChunk
from engine.batches import MarketChunk

MS = 1_000_000
KLINE_MS = {"1m": 60_000}
Rows = dict[tuple[str, str], list[tuple]]


# ---------------------------------------------------------------- the naive reader


def _levels(rows: list[list[str]]) -> list[tuple[float, float]]:
    return [(float(price), float(qty)) for price, qty in rows]


def _level_rows(head: tuple, bids: list, asks: list) -> list[tuple]:
    rows = [(*head, 1, price, qty) for price, qty in _levels(bids)]
    rows += [(*head, -1, price, qty) for price, qty in _levels(asks)]
    return rows or [(*head, 0, None, None)]  # an update without levels keeps a placeholder


def naive_rows(frames: list[tuple[int, bytes]], bare_symbol: str | None = None) -> Rows:
    """Expected rows per (symbol, kind) and the count of frames per kind (under ("", kind))."""
    rows: Rows = defaultdict(list)
    offset = 0
    last_quote: dict[str, int] = {}
    for recv, raw in frames:
        frame = json.loads(raw)
        if "stream" in frame:
            stream, data = frame["stream"], frame["data"]
            kind = stream.split("@")[1].split("_")[0]  # trade, depth, kline, ...
        elif "rest" in frame:
            kind, data = "rest", frame["data"]
        else:
            kind, data = "snapshot", frame
        if "E" in data:
            offset = data["E"] * MS - recv
        symbol = data.get("s") or frame.get("symbol") or bare_symbol
        rows[("", kind)].append(())
        if kind == "trade":
            rows[(symbol, "trades")].append(
                (data["T"] * MS, recv, data["t"], float(data["p"]), float(data["q"]),
                 -1 if data["m"] else 1))
        elif kind == "aggTrade":
            rows[(symbol, "agg_trades")].append(
                (data["T"] * MS, recv, data["a"], data["f"], data["l"], float(data["p"]),
                 float(data["q"]), -1 if data["m"] else 1))
        elif kind == "bookTicker":
            if "E" in data:
                event = data["E"] * MS
            else:  # spot: receive time + offset, never below the symbol's previous estimate
                event = last_quote[symbol] = max(recv + offset, last_quote.get(symbol, 0))
            rows[(symbol, "quotes")].append(
                (event, recv, data["u"], float(data["b"]), float(data["B"]), float(data["a"]),
                 float(data["A"])))
        elif kind == "depth":
            head = (data["E"] * MS, recv, data["U"], data["u"], data.get("pu", -1))
            rows[(symbol, "deltas")] += _level_rows(head, data["b"], data["a"])
        elif kind == "kline":
            k = data["k"]
            rows[(symbol, "klines")].append(
                (data["E"] * MS, recv, k["t"] * MS, (k["T"] + 1) * MS, KLINE_MS[k["i"]] * MS,
                 float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"]),
                 float(k["q"]), float(k["V"]), k["n"], k["x"]))
        else:  # REST depth snapshot, bare or enveloped
            event = data["E"] * MS if "E" in data else recv + offset
            head = (event, recv, data["lastUpdateId"])
            rows[(symbol, "snapshots")] += _level_rows(head, data["bids"], data["asks"])
    return rows


def parsed_rows(chunks: list[MarketChunk]) -> Rows:
    """The parser's columns as row tuples per (symbol, kind); NaN placeholders read as None."""
    rows: Rows = defaultdict(list)
    for chunk in chunks:
        for kind in ("trades", "agg_trades", "quotes", "deltas", "snapshots", "klines", "marks"):
            columns = getattr(chunk, kind).as_dict()
            values = [column.tolist() for column in columns.values()]
            rows[(chunk.symbol, kind)] += [
                tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row)
                for row in zip(*values, strict=True)
            ]
    return {key: value for key, value in rows.items() if value}


def parse_all(frames: list[tuple[int, bytes]], chunk_lines: int, source: str,
              symbol_hint: str | None = None) -> tuple[BinanceParser, list[MarketChunk], list]:
    """Parse frames in chunks of `chunk_lines` with one parser; (parser, chunks, dead letters)."""
    parser = BinanceParser(symbol_hint)
    chunks: list[MarketChunk] = []
    dead: list = []
    for start in range(0, len(frames), chunk_lines):
        part = frames[start:start + chunk_lines]
        lines = CaptureChunk(source, list(range(start + 1, start + 1 + len(part))),
                             [recv for recv, _ in part], [raw for _, raw in part])
        result = parser.parse_lines(lines)
        chunks += result.chunks
        dead += result.dead_letters + [d for chunk in result.chunks for d in chunk.dead_letters]
    return parser, chunks, dead


def assert_same_rows(expected: Rows, chunks: list[MarketChunk]) -> None:
    got = parsed_rows(chunks)
    wanted = {key: value for key, value in expected.items() if key[0]}
    assert sorted(got) == sorted(wanted)
    for key, rows in wanted.items():
        assert len(got[key]) == len(rows), key
        mismatch = next((i for i, (a, b) in enumerate(zip(got[key], rows, strict=True))
                         if a != b), None)
        assert mismatch is None, (key, mismatch, got[key][mismatch], rows[mismatch])


# ---------------------------------------------------------------- hftbacktest captures


def _capture_frames(paths: list[Path]) -> list[tuple[int, bytes]]:
    frames = []
    for path in paths:
        with gzip.open(path, "rb") as handle:
            for line in handle:
                stamp, _, raw = line.rstrip(b"\n").partition(b" ")
                frames.append((int(stamp), raw))
    return frames


@pytest.mark.slow
@pytest.mark.parametrize("which", ["spot", "usdm"])
def test_every_frame_of_the_binance_captures(which: str, spot_captures: list[Path],
                                             usdm_captures: list[Path]) -> None:
    frames = _capture_frames(spot_captures if which == "spot" else usdm_captures)
    expected = naive_rows(frames, bare_symbol="BTCUSDT")
    parser, chunks, dead = parse_all(frames, 20_000, which)
    assert dead == []
    kinds = Counter({kind: len(rows) for (symbol, kind), rows in expected.items() if not symbol})
    assert sum(kinds.values()) == len(frames)  # every line is one frame of a known kind
    assert parser.stats == {"frames": len(frames), "market_frames": len(frames),
                            "control_frames": 0, "dead_letters": 0, "rejected_items": 0}
    if which == "spot":
        assert kinds == {"trade": 19_904, "bookTicker": 73_174, "depth": 6_495, "snapshot": 1}
    else:
        assert kinds == {"trade": 21_313, "bookTicker": 66_089, "depth": 6_551, "snapshot": 1}
    assert_same_rows(expected, chunks)
    if which == "usdm":  # futures: pu on every update, E on tickers and the snapshot
        deltas = [row for row in parsed_rows(chunks)[("BTCUSDT", "deltas")]]
        assert all(row[4] > 0 for row in deltas)


# ---------------------------------------------------------------- cryptofeed captures


def _decimal_ns(text: str) -> int:
    whole, _, fraction = text.partition(".")
    return int(whole) * 1_000_000_000 + int((fraction + "0" * 9)[:9])


def cryptofeed_frames(ws_path: Path, http_path: Path) -> list[tuple[int, bytes]]:
    """Websocket frames as received and HTTP answers in the REST envelope, merged by time."""
    frames = []
    for line in ws_path.read_bytes().splitlines():
        head, sep, body = line.partition(b": ")
        if sep and head.replace(b".", b"").isdigit():
            frames.append((_decimal_ns(head.decode()), body))
    for line in http_path.read_bytes().splitlines():
        if not line.strip():
            continue
        url, arrow, rest = line.split(b" ", 2)
        assert arrow == b"->"
        stamp, _, body = rest.partition(b": ")
        parts = urlsplit(url.decode())
        symbol = parse_qs(parts.query)["symbol"][0]
        envelope = (b'{"rest":"' + parts.path.encode() + b'","symbol":"' + symbol.encode()
                    + b'","data":' + body + b"}")
        frames.append((_decimal_ns(stamp.decode()), envelope))
    return sorted(frames, key=lambda frame: frame[0])  # stable: ties keep file order


VENUES = {
    "BINANCE": ({"NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"},
                {"depth": 177, "bookTicker": 84, "kline": 2, "aggTrade": 2, "rest": 4}),
    "BINANCE_FUTURES": ({"SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"},
                        {"depth": 764, "bookTicker": 613, "kline": 67, "aggTrade": 91, "rest": 4}),
}


@pytest.mark.parametrize("venue", sorted(VENUES))
def test_every_binance_frame_of_the_cryptofeed_captures(venue: str, multi_venue_dir: Path) -> None:
    frames = cryptofeed_frames(multi_venue_dir / f"{venue}.ws.1.0",
                               multi_venue_dir / f"{venue}.http.0.0")
    symbols, kinds = VENUES[venue]
    expected = naive_rows(frames)
    assert {kind: len(rows) for (symbol, kind), rows in expected.items() if not symbol} == kinds
    assert sum(kinds.values()) == len(frames)
    for chunk_lines in (len(frames), 97):  # cutting the stream into chunks changes nothing
        parser, chunks, dead = parse_all(frames, chunk_lines, venue)
        assert dead == []
        assert {chunk.symbol for chunk in chunks} == symbols
        assert parser.stats["market_frames"] == len(frames)
        assert_same_rows(expected, chunks)
    rest_snapshots = {key[0] for key in expected if key[1] == "snapshots"}
    assert rest_snapshots == symbols  # one REST snapshot per symbol, named by the envelope


def test_cryptofeed_reader_feeds_the_parser_the_same_frames(multi_venue_dir: Path) -> None:
    """The project's cryptofeed reader (dataflows.cryptofeed_capture) and the split above agree."""
    from dataflows.cryptofeed_capture import read_cryptofeed_capture

    for venue in VENUES:
        frames = []
        for name in (f"{venue}.ws.1.0", f"{venue}.http.0.0"):
            for chunk, letters in read_cryptofeed_capture(multi_venue_dir / name):
                assert letters == []
                frames += list(zip(chunk.ts_recv, chunk.frames, strict=True))
        frames.sort(key=lambda frame: frame[0])
        by_hand = cryptofeed_frames(multi_venue_dir / f"{venue}.ws.1.0",
                                    multi_venue_dir / f"{venue}.http.0.0")
        assert [recv for recv, _ in frames] == [recv for recv, _ in by_hand]
        assert [json.loads(raw) for _, raw in frames] == [json.loads(raw) for _, raw in by_hand]
        _, chunks, dead = parse_all(frames, 500, venue)
        assert dead == []
        assert_same_rows(naive_rows(by_hand), chunks)
