"""The live source parses what the feed buffered exactly as a replay parses the capture."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from dataflows.capture import read_capture
from dataflows.live.frames import FrameBuffer, one_line
from dataflows.live.source import LivePartition
from dataflows.sources import capture_chunks
from engine.batches import MarketChunk


def _buffer_from(paths: list[Path]) -> FrameBuffer:
    buffer = FrameBuffer()
    for path in paths:
        for lines, _letters in read_capture(path):
            for ts_recv, frame in zip(lines.ts_recv, lines.frames, strict=True):
                buffer.put(ts_recv, frame)
    return buffer


def _drain(partition: LivePartition) -> list[MarketChunk]:
    chunks: list[MarketChunk] = []
    while True:
        try:
            chunks.extend(partition.next_batch())
        except StopIteration:
            return chunks


def _concat(chunks: list[MarketChunk], table: str, column: str) -> np.ndarray:
    return np.concatenate([getattr(getattr(chunk, table), column) for chunk in chunks])


def test_live_partition_parses_like_the_capture_reader(spot_captures: list[Path]) -> None:
    buffer = _buffer_from(spot_captures)
    total = buffer.pending
    stop = threading.Event()
    stop.set()  # drain everything, then end
    partition = LivePartition(buffer, ["BTCUSDT"], stop, 997, None, "live")
    live = _drain(partition)
    replayed = list(capture_chunks(list(spot_captures), 20_000))
    assert live[-1].end_of_stream and replayed[-1].end_of_stream
    lines = sum(len(chunk) for path in spot_captures for chunk, _ in read_capture(path))
    assert total == lines  # every line of the two files was buffered
    for table, column in [("trades", "trade_id"), ("trades", "price"), ("trades", "ts_event"),
                          ("quotes", "update_id"), ("quotes", "ts_event"),
                          ("deltas", "final_update_id"), ("deltas", "qty"),
                          ("snapshots", "last_update_id")]:
        np.testing.assert_array_equal(_concat(live, table, column),
                                      _concat(replayed, table, column), err_msg=column)
    assert not any(chunk.dead_letters for chunk in live)


def test_frames_of_other_symbols_are_dead_lettered_not_dropped() -> None:
    buffer = FrameBuffer()
    buffer.put(1, b'{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"T":1,"s":"ETHUSDT",'
                  b'"t":5,"p":"1.0","q":"2.0","m":true}}')
    buffer.put(2, b'{"stream":"btcusdt@trade","data":{"e":"trade","E":2,"T":2,"s":"BTCUSDT",'
                  b'"t":9,"p":"3.0","q":"1.0","m":false}}')
    stop = threading.Event()
    stop.set()
    chunks = _drain(LivePartition(buffer, ["BTCUSDT"], stop, 100, None, "live"))
    assert {chunk.symbol for chunk in chunks} == {"BTCUSDT"}
    letters = [letter for chunk in chunks for letter in chunk.dead_letters]
    assert [letter.reason for letter in letters] == ["unexpected_symbol"]
    assert "ETHUSDT" in letters[0].detail
    assert _concat(chunks, "trades", "trade_id").tolist() == [9]


def test_partition_waits_while_running_and_ends_after_stop() -> None:
    buffer = FrameBuffer()
    stop = threading.Event()
    seen: list[int] = []
    partition = LivePartition(buffer, ["BTCUSDT"], stop, 100,
                              lambda times, frames: seen.extend(times), "live")
    assert partition.next_batch() == []
    assert partition.next_awake() is not None  # idle: poll again shortly
    buffer.put(7, b"not json")
    assert partition.next_awake() is None
    chunks = partition.next_batch()
    assert seen == [7] and chunks == []  # a malformed frame names no symbol yet
    stop.set()
    final = partition.next_batch()
    assert [chunk.end_of_stream for chunk in final] == [True]
    assert [letter.reason for letter in final[0].dead_letters] == ["malformed_json"]
    with pytest.raises(StopIteration):
        partition.next_batch()


def test_frames_become_single_lines() -> None:
    assert one_line(b'{"a":\n 1,\r\n"b": 2}') == b'{"a":  1,  "b": 2}'
    buffer = FrameBuffer()
    buffer.put(1, b"x\ny")
    buffer.put_event("stale", "BTCUSDT", "no data for 30.0 s")
    times, frames = buffer.drain(1)
    assert (times, frames) == ([1], [b"x y"])
    times, frames = buffer.drain(10)
    assert frames == [b'{"feed":"stale","symbol":"BTCUSDT","detail":"no data for 30.0 s"}']
    assert buffer.pending == 0 and buffer.total == 2
