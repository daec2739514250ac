"""Closed-bar history per timeframe and the order in which a batch's bar closes are processed.

A strategy reads bars through `BarView`s over this history: the last `keep` bars of earlier
batches followed by the current batch's bars. The schedule lists the batch's bar closes in event
time, the longer timeframe first among equal close times (so a trend timeframe is known before the
entry timeframe decides). Bars out of close-time order, or closing after the batch watermark
(which would be look-ahead), are left out and reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.batches import FeatureBatch
from engine.timeframes import timeframe_ns

_NEVER = -(2**63)


@dataclass(frozen=True)
class DroppedBar:
    timeframe: str
    row: int
    ts_close: int
    reason: str  # "out_of_order_bar" or "bar_after_watermark"


@dataclass(frozen=True)
class BarEvents:
    """A batch's bar closes in processing order; `end[i]` is the BarView end index of event i
    in `history[timeframe[i]]`."""

    ts_close: np.ndarray
    timeframe: list[str]
    end: np.ndarray
    history: dict[str, dict[str, np.ndarray]]

    def __len__(self) -> int:
        return len(self.ts_close)


class BarSchedule:
    """Keeps `keep` closed bars per timeframe across batches; picklable."""

    def __init__(self, timeframes: tuple[str, ...], keep: int) -> None:
        self.timeframes = timeframes
        self.keep = keep
        self.history: dict[str, dict[str, np.ndarray]] = {}
        self.last_close: dict[str, int] = {}

    def begin(self, batch: FeatureBatch) -> tuple[BarEvents, list[DroppedBar]]:
        """Add the batch's bars to the history and list their closes in processing order."""
        dropped: list[DroppedBar] = []
        stamps: list[np.ndarray] = []
        ranks: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        names: list[str] = []
        for timeframe in self.timeframes:
            bars = batch.bars.get(timeframe)
            if bars is None or not len(bars):
                continue
            rows = self._valid_rows(timeframe, bars.columns["ts_close"], batch.watermark, dropped)
            new = {name: np.asarray(column)[rows] for name, column in bars.columns.items()}
            old = self.history.get(timeframe, {})
            offset = min(len(old.get("ts_close", ())), self.keep)
            self.history[timeframe] = _concat(old, new, offset)
            count = len(rows)
            if not count:
                continue
            self.last_close[timeframe] = int(new["ts_close"][-1])
            stamps.append(new["ts_close"].astype(np.int64))
            ranks.append(np.full(count, -timeframe_ns(timeframe), np.int64))
            ends.append(np.arange(offset + 1, offset + count + 1, dtype=np.int64))
            names.extend([timeframe] * count)
        history = dict(self.history)
        if not stamps:
            empty = np.empty(0, np.int64)
            return BarEvents(empty, [], empty, history), dropped
        ts_close, rank, end = np.concatenate(stamps), np.concatenate(ranks), np.concatenate(ends)
        order = np.lexsort((end, rank, ts_close))
        events = BarEvents(ts_close[order], [names[i] for i in order], end[order], history)
        return events, dropped

    def trim(self) -> None:
        """Keep only the last `keep` bars per timeframe (between batches)."""
        self.history = {
            timeframe: {name: column[-self.keep :].copy() for name, column in columns.items()}
            for timeframe, columns in self.history.items()
        }

    def _valid_rows(
        self, timeframe: str, ts_close: np.ndarray, watermark: int, dropped: list[DroppedBar]
    ) -> np.ndarray:
        stamps = np.asarray(ts_close, np.int64)
        previous = self.last_close.get(timeframe, _NEVER)
        running = np.maximum.accumulate(np.concatenate(([previous], stamps)))[:-1]
        valid = (stamps > running) & (stamps <= watermark)
        for row in np.flatnonzero(~valid):
            reason = "bar_after_watermark" if stamps[row] > watermark else "out_of_order_bar"
            dropped.append(DroppedBar(timeframe, int(row), int(stamps[row]), reason))
        return np.flatnonzero(valid)


def _concat(
    old: dict[str, np.ndarray], new: dict[str, np.ndarray], old_rows: int
) -> dict[str, np.ndarray]:
    """The last `old_rows` bars already seen followed by the new ones (NaN for new columns)."""
    if not old_rows:
        return dict(new)
    merged: dict[str, np.ndarray] = {}
    for name, column in new.items():
        previous = old.get(name)
        if previous is None:
            previous = np.full(old_rows, np.nan)
        merged[name] = np.concatenate([previous[len(previous) - old_rows :], column])
    return merged
