"""The shared venue-parser machinery: exact time readers, feed events, REST envelopes, dead-letter
attribution and live frame numbering (through the Coinbase parser, the simplest venue)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dataflows.coinbase import CoinbaseParser
from dataflows.venue_parser import (
    FrameError,
    decimal_seconds_to_ns,
    iso8601_to_ns,
    ms_text_to_ns,
    read_levels,
)
from engine.batches import FeedEvent


def test_decimal_seconds_are_exact() -> None:
    # 1618677816.8434298 as a float is 1618677816.8434298038...; text keeps it exact
    assert decimal_seconds_to_ns("1618677816.8434298") == 1618677816_843429800
    assert decimal_seconds_to_ns("1618677817.061845") == 1618677817_061845000
    assert decimal_seconds_to_ns("0.000000001") == 1
    assert decimal_seconds_to_ns("1.1234567899") == 1_123456789  # below a ns is cut
    for bad in ("", "1e9", "-1.5", "1.", ".5", "12 ", "abc"):
        with pytest.raises(ValueError, match="decimal unix time"):
            decimal_seconds_to_ns(bad)


def test_iso8601_is_exact_and_checked() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    moment = datetime(2021, 4, 17, 16, 43, 37, 75687, tzinfo=UTC)
    expected = (moment - epoch) // timedelta(microseconds=1) * 1000
    assert iso8601_to_ns("2021-04-17T16:43:37.075687Z") == expected
    assert iso8601_to_ns("2021-04-17T16:43:37.075687123Z") == expected + 123
    assert iso8601_to_ns("2021-04-17T18:43:37.075687+02:00") == expected
    assert iso8601_to_ns("2021-04-17T16:43:37Z") == expected - 75_687_000
    for bad in ("2021-04-17 16:43:37Z", "2021-04-17T16:43:37", "2021-13-01T00:00:00Z",
                "2021-04-17T25:00:00Z", "yesterday"):
        with pytest.raises(ValueError):
            iso8601_to_ns(bad)


def test_millisecond_text_and_levels() -> None:
    assert ms_text_to_ns("1652459225464", "ts") == 1652459225464_000000
    assert ms_text_to_ns(1652459225464, "ts") == 1652459225464_000000
    for bad in ("1.5", "-1", True, None, "16524592254640"):
        with pytest.raises(FrameError) as caught:
            ms_text_to_ns(bad, "books 'ts'")
        assert caught.value.reason == "invalid_number" and "books 'ts'" in caught.value.detail
    assert read_levels([["1.5", "2", "0", "3"]], "asks", "x") == ([1.5], [2.0])
    assert read_levels([["NaN", "-1"]], "asks", "x")[1] == [-1.0]  # validation judges these
    with pytest.raises(FrameError, match="level 1"):
        read_levels([["1", "2"], ["1"]], "asks", "books update")


def test_feed_events_travel_in_the_stream_with_estimated_times() -> None:
    parser = CoinbaseParser()
    frames = [
        b'{"type":"match","trade_id":1,"side":"buy","size":"1","price":"10",'
        b'"product_id":"BTC-USD","time":"2021-04-17T16:43:37Z"}',
        b'{"feed":"disconnected","symbol":"BTCUSD","detail":"socket closed"}',
        b'{"feed":"stale","symbol":"ethusd","detail":"no data for 30 s"}',
    ]
    exchange = 1618677817_000_000_000
    chunks, orphans = parser.parse_frames(frames, [exchange + 100, exchange + 5_000, exchange + 9])
    assert orphans == []
    events = {chunk.symbol: chunk.feed_events for chunk in chunks}
    assert events["BTCUSD"] == (
        FeedEvent("BTCUSD", exchange + 5_000 - 100, exchange + 5_000, "disconnected",
                  "socket closed"),
    )
    assert events["ETHUSD"][0].kind == "stale" and events["ETHUSD"][0].ts_event == exchange - 91
    assert parser.stats["market_frames"] == 3


def test_bad_feed_events_and_rest_envelopes_are_dead_letters() -> None:
    parser = CoinbaseParser()
    frames = [
        b'{"feed":"exploded","symbol":"BTCUSD","detail":""}',
        b'{"feed":"stale","detail":"no symbol"}',
        b'{"rest":"/products/BTC-USD/book","symbol":"BTC-USD","data":{}}',
        b'{"rest":"/api/v3/depth","data":{}}',
    ]
    chunks, orphans = parser.parse_frames(frames, [1, 2, 3, 4], source="feed")
    letters = orphans + [letter for chunk in chunks for letter in chunk.dead_letters]
    found = sorted((letter.source, letter.reason, letter.symbol) for letter in letters)
    assert found == [
        ("feed:line 1", "invalid_field", "BTCUSD"),
        ("feed:line 2", "missing_field", None),
        ("feed:line 3", "unknown_stream", None),
        ("feed:line 4", "missing_field", None),
    ]
    unknown = next(letter for letter in letters if letter.reason == "unknown_stream")
    assert "coinbase parser takes no REST responses" in unknown.detail
    assert "/products/BTC-USD/book" in unknown.detail


def test_live_frames_are_numbered_across_calls_and_sequences_increase() -> None:
    parser = CoinbaseParser()
    good = (b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1","1"]],'
            b'"time":"2021-04-17T16:43:37Z"}')
    first, _ = parser.parse_frames([good, good], [1, 2], source="ws")
    second, orphans = parser.parse_frames([good, b"oops"], [3, 4], source="ws")
    assert [chunk.sequence for chunk in first + second] == [0, 1]
    assert orphans[0].source == "ws:line 4"
    assert second[0].deltas.first_update_id.tolist() == [3]
    assert parser.stats == {"frames": 4, "market_frames": 3, "control_frames": 0,
                            "dead_letters": 1}
