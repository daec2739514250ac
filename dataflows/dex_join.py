"""DEX streams joined to CEX streams: a pool's swaps and liquidity become columns of the CEX
pair's bars.

The run config maps each DEX pool to the CEX pair it leads (`dex.pools`, e.g. the USDC/WETH pool
to ETHUSDT). `DexTapeSource` reads each pool's DEX tape as time slices (`DexChunk`), keyed on the
CEX pair, and the `join_dex` step of the feature dataflow meets them with the pair's
`FeatureBatch`es:

- a batch is held until the DEX side has delivered everything before the batch's watermark (or
  has ended), so what a bar sees never depends on which source Bytewax polled first: a replay is
  deterministic whatever the interleaving;
- each bar then gets the DEX features of `engine.dex.features` as `dex_<name>` columns, evaluated
  one nanosecond before its close: only DEX events strictly before the close count, so a block
  stamped exactly at the close is not seen by it (no look-ahead);
- the held DEX history is trimmed to what the features still look back over (35 minutes).

Pairs without a pool pass straight through. The join is replay-only for now: live DEX feeds are
not built, and `engine.runtime` refuses `dex` in a live run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from bytewax.inputs import FixedPartitionedSource

from dataflows.sources import IteratorPartition
from engine.batches import BarColumns, FeatureBatch
from engine.dex.features import DexColumns, dex_features
from engine.signal_features import DEX_PREFIX

LOOKBACK_NS = 35 * 60 * 1_000_000_000  # volume_ratio reads 30 min + 30 s back


@dataclass(frozen=True)
class DexChunk:
    """A pool's events with `watermark_start <= ts < watermark`, for the CEX pair `symbol`."""

    symbol: str
    pool: str
    sequence: int
    columns: DexColumns
    watermark: int
    end_of_stream: bool = False


def _slice(columns: DexColumns, start: int, stop: int) -> DexColumns:
    """The events with start <= ts < stop."""
    swaps = slice(*np.searchsorted(columns.swap_ts, [start, stop], "left"))
    liquidity = slice(*np.searchsorted(columns.liquidity_ts, [start, stop], "left"))
    return columns.take(swaps, liquidity)


def dex_chunks(tape: Path, symbol: str, chunk_ns: int) -> Iterator[DexChunk]:
    """A DEX tape as consecutive time slices of `chunk_ns`; the last is `end_of_stream`."""
    from storage.dex_tape import read_dex_tape

    dex = read_dex_tape(tape)
    columns = DexColumns.from_tables(dex.swaps, dex.liquidity)
    times = np.concatenate([columns.swap_ts, columns.liquidity_ts])
    if not len(times):
        yield DexChunk(symbol, dex.pool.symbol, 0, columns, -(2**63), end_of_stream=True)
        return
    start = int(times.min()) // chunk_ns * chunk_ns
    last = int(times.max())
    sequence = 0
    while True:
        stop = start + chunk_ns
        done = stop > last
        yield DexChunk(symbol, dex.pool.symbol, sequence, _slice(columns, start, stop), stop,
                       end_of_stream=done)
        if done:
            return
        start, sequence = stop, sequence + 1


class DexTapeSource(FixedPartitionedSource[DexChunk, int]):
    """DEX tapes, one partition per pool, each keyed on the CEX pair it leads."""

    def __init__(self, pools: dict[str, Path], chunk_ns: int) -> None:
        if chunk_ns <= 0:
            raise ValueError(f"DEX chunk duration must be positive, got {chunk_ns} ns")
        from storage.dex_tape import read_dex_tape

        for symbol, tape in pools.items():  # fail before the run, naming the tape
            try:
                read_dex_tape(tape)
            except (OSError, ValueError) as error:
                raise ValueError(f"DEX tape of {symbol} ({tape}): {error}") from error
        self._pools = dict(pools)  # CEX symbol -> DEX tape
        self._chunk_ns = chunk_ns

    def list_parts(self) -> list[str]:
        return sorted(self._pools)

    def build_part(self, step_id: str, for_part: str,
                   resume_state: int | None) -> IteratorPartition[DexChunk]:
        return IteratorPartition(dex_chunks(self._pools[for_part], for_part, self._chunk_ns),
                                 resume_state)


@dataclass
class DexJoinState:
    """One CEX pair's side of the join: DEX history, how far it is known, held batches."""

    joined: bool  # the pair has a pool; False: batches pass straight through
    history: DexColumns | None = None
    dex_watermark: int = -(2**63)
    dex_ended: bool = False
    held: deque[FeatureBatch] = field(default_factory=deque)

    def on_dex(self, chunk: DexChunk) -> None:
        self.history = chunk.columns if self.history is None else self.history.concat(
            chunk.columns)
        self.dex_watermark = max(self.dex_watermark, chunk.watermark)
        self.dex_ended = self.dex_ended or chunk.end_of_stream

    def release(self) -> list[FeatureBatch]:
        """The held batches the DEX side now covers, with their DEX columns, in order."""
        released = []
        while self.held and (self.dex_ended or self.held[0].watermark <= self.dex_watermark):
            released.append(self._attach(self.held.popleft()))
        if released:
            self._trim(released[-1].watermark)
        return released

    def _attach(self, batch: FeatureBatch) -> FeatureBatch:
        bars = {timeframe: self._with_dex(frame) for timeframe, frame in batch.bars.items()}
        return replace(batch, bars=bars)

    def _with_dex(self, frame: BarColumns) -> BarColumns:
        at = frame.columns["ts_close"].astype(np.int64) - 1
        if self.history is None or not len(at):
            features = dex_features(DexColumns.empty(), at)
        else:
            features = dex_features(self.history, at)
        columns = dict(frame.columns)
        columns.update({DEX_PREFIX + name: values for name, values in features.items()})
        return BarColumns(frame.timeframe, columns)

    def _trim(self, watermark: int) -> None:
        """Keep what bars closing after `watermark` may still read: the lookback, plus the last
        event before it (the features read "the last price before t - w")."""
        if self.history is None:
            return
        cutoff = watermark - LOOKBACK_NS
        swaps = max(0, int(np.searchsorted(self.history.swap_ts, cutoff, "left")) - 1)
        liquidity = max(0, int(np.searchsorted(self.history.liquidity_ts, cutoff, "left")) - 1)
        if swaps or liquidity:
            self.history = self.history.take(slice(swaps, None), slice(liquidity, None))


def join_dex(
    state: DexJoinState | None, item: FeatureBatch | DexChunk, *, dex_symbols: frozenset[str]
) -> tuple[DexJoinState, list[FeatureBatch]]:
    """The `join_dex` step (module docs): a CEX batch or a DEX slice in, released batches out."""
    if state is None:
        state = DexJoinState(joined=item.symbol in dex_symbols)
    if isinstance(item, DexChunk):
        state.on_dex(item)
        return state, state.release()
    if not state.joined:
        return state, [item]
    state.held.append(item)
    return state, state.release()
