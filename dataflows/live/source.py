"""The dataflow's live input: frames drained from the feed, parsed by the replay parser.

One partition: the feed interleaves symbols on one connection, as a raw capture does, so live
and replay of its recording cut the same frames into chunks the same way (by the parser, per
symbol). Each poll drains what arrived since the last one (DESIGN.md: in live mode a batch is
what arrived since the last call). A frame naming a symbol the run does not trade becomes a dead
letter ("unexpected_symbol"). When the run is asked to stop, the frames already received are
still delivered, then every symbol gets its end-of-stream chunk, which closes its open bars.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.binance import BinanceParser
from dataflows.live.frames import FrameBuffer
from engine.batches import DeadLetter, MarketChunk, TradeColumns

FrameObserver = Callable[[list[int], list[bytes]], None]
POLL_INTERVAL = timedelta(milliseconds=1)


class LivePartition(StatefulSourcePartition[MarketChunk, None]):
    """Drains the buffer each poll; ends after `stop` once the buffer is empty."""

    def __init__(self, buffer: FrameBuffer, symbols: Sequence[str], stop: threading.Event,
                 max_frames: int, on_frames: FrameObserver | None, source_name: str) -> None:
        self._buffer = buffer
        self._symbols = tuple(symbols)
        self._stop = stop
        self._max_frames = max_frames
        self._on_frames = on_frames
        self._source_name = source_name
        self._parser = BinanceParser()
        self._sequences: dict[str, int] = {}
        self._orphans: list[DeadLetter] = []
        self._ended = False

    def next_batch(self) -> list[MarketChunk]:
        if self._ended:
            raise StopIteration
        stopping = self._stop.is_set()
        times, frames = self._buffer.drain(self._max_frames)
        if not frames:
            if stopping:
                self._ended = True
                return self._final_chunks()
            return []
        if self._on_frames is not None:
            self._on_frames(times, frames)
        result = self._parser.parse_frames(frames, times, source=self._source_name)
        self._orphans.extend(result.dead_letters)
        chunks: list[MarketChunk] = []
        for chunk in result.chunks:
            if chunk.symbol not in self._symbols:
                self._orphans.extend(_unexpected(chunk))
                continue
            self._sequences[chunk.symbol] = chunk.sequence + 1
            chunks.append(chunk)
        if chunks and self._orphans:
            chunks[0] = replace(chunks[0], dead_letters=chunks[0].dead_letters
                                + tuple(self._orphans))
            self._orphans = []
        return chunks

    def _final_chunks(self) -> list[MarketChunk]:
        chunks = []
        for index, symbol in enumerate(sorted(self._symbols)):
            letters = tuple(self._orphans) if index == 0 else ()
            chunks.append(MarketChunk(symbol=symbol, sequence=self._sequences.get(symbol, 0),
                                      trades=TradeColumns.empty(), dead_letters=letters,
                                      end_of_stream=True))
        self._orphans = []
        return chunks

    def next_awake(self) -> datetime | None:
        if self._buffer.pending:
            return None
        return datetime.now(UTC) + POLL_INTERVAL

    def snapshot(self) -> None:
        return None  # a live socket cannot be rewound; recovery starts from the live edge


def _unexpected(chunk: MarketChunk) -> list[DeadLetter]:
    rows = (len(chunk.trades) + len(chunk.quotes) + len(chunk.deltas) + len(chunk.snapshots)
            + len(chunk.agg_trades) + len(chunk.marks) + len(chunk.klines))
    letter = DeadLetter(stage="live_source", reason="unexpected_symbol",
                        detail=f"{rows} rows of {chunk.symbol}, which this run does not trade",
                        source=f"live chunk {chunk.sequence}", symbol=chunk.symbol)
    return [letter, *chunk.dead_letters]


class LiveSource(FixedPartitionedSource[MarketChunk, None]):
    """The feed's frames as a Bytewax source (one partition)."""

    def __init__(self, buffer: FrameBuffer, symbols: Sequence[str], stop: threading.Event, *,
                 max_frames: int = 5000, on_frames: FrameObserver | None = None,
                 source_name: str = "live") -> None:
        self._args = (buffer, tuple(symbols), stop, max_frames, on_frames, source_name)

    def list_parts(self) -> list[str]:
        return ["live"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> LivePartition:
        return LivePartition(*self._args)
