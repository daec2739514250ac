"""Several consecutive feature batches of one symbol as one.

Live mode makes a batch of whatever arrived since the last poll, often every millisecond; when
a symbol's actor is still busy with the previous step, the batches that queued meanwhile are
sent as one step. The engine processes a batch in event-time order (trades, bar closes, feed
events), so one merged batch is processed as the same batches one after another would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.batches import (
    BarColumns,
    DepthSamples,
    FeatureBatch,
    MarkPriceColumns,
    QuoteColumns,
    TradeColumns,
)


def _concat_optional(parts: Sequence[Any], kind: Any) -> Any:
    """`kind.concat` of the parts present; None when no part has a row."""
    present = [part for part in parts if part is not None and len(part)]
    return kind.concat(present) if present else None


def _concat_bars(batches: Sequence[FeatureBatch]) -> dict[str, BarColumns]:
    timeframes = dict.fromkeys(tf for batch in batches for tf in batch.bars)
    return {timeframe: BarColumns.concat([batch.bars[timeframe] for batch in batches
                                          if timeframe in batch.bars])
            for timeframe in timeframes}


def _concat_depth(parts: Sequence[DepthSamples | None]) -> DepthSamples | None:
    present = [part for part in parts if part is not None and len(part)]
    if len(present) <= 1:
        return present[0] if present else None
    return DepthSamples(*(np.concatenate([getattr(part, name) for part in present])
                          for name in ("ts_event", "bid_price", "bid_qty", "ask_price",
                                       "ask_qty")))


def merge_batches(batches: Sequence[FeatureBatch]) -> FeatureBatch:
    """One batch holding `batches` (consecutive, one symbol) in order.

    >>> from engine.batches import TradeColumns
    >>> first = FeatureBatch("BTCUSDT", 4, 10, TradeColumns.empty(), {})
    >>> second = FeatureBatch("BTCUSDT", 5, 20, TradeColumns.empty(), {})
    >>> merged = merge_batches([first, second])
    >>> merged.sequence, merged.watermark
    (5, 20)
    """
    if not batches:
        raise ValueError("merge_batches needs at least one batch")
    if len(batches) == 1:
        return batches[0]
    symbols = {batch.symbol for batch in batches}
    if len(symbols) != 1:
        raise ValueError(f"merge_batches: batches of several symbols {sorted(symbols)}")
    last = batches[-1]
    trades = TradeColumns.concat([batch.trades for batch in batches])
    return FeatureBatch(
        symbol=last.symbol,
        sequence=last.sequence,
        watermark=max(batch.watermark for batch in batches),
        trades=trades,
        bars=_concat_bars(batches),
        quotes=_concat_optional([batch.quotes for batch in batches], QuoteColumns),
        marks=_concat_optional([batch.marks for batch in batches], MarkPriceColumns),
        depth=_concat_depth([batch.depth for batch in batches]),
        book_events=tuple(event for batch in batches for event in batch.book_events),
        feed_events=tuple(event for batch in batches for event in batch.feed_events),
        end_of_stream=any(batch.end_of_stream for batch in batches),
    )
