"""The per-symbol steps of the feature dataflow, as pure functions over small explicit state.

Each step takes its state (None at first) and a `StagedChunk` and returns the new state and the
chunk with its outputs added, which is exactly the shape of a Bytewax `stateful_map` mapper. The
steps know nothing of Bytewax, so they are unit tested directly and reused by live mode.

Late and bad items never crash a step and are never dropped silently: each step appends them to
the chunk's dead letters with a reason, and `flow.py` routes those to their own stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from dataflows.book import BookSynchronizer, BookTrack
from dataflows.validate import AggTradeValidator, MarkValidator, QuoteValidator, TradeValidator
from dataflows.windows import BarFolder
from engine.batches import (
    BarColumns,
    BookEvent,
    DeadLetter,
    DepthSamples,
    FeatureBatch,
    MarketChunk,
    MarkPriceColumns,
    QuoteColumns,
    TradeColumns,
)
from engine.indicator_spec import IndicatorSpec
from engine.indicators import IndicatorSet

END_OF_TIME = 2**63 - 1


@dataclass(frozen=True)
class StagedChunk:
    """A MarketChunk on its way through the steps, collecting each step's outputs."""

    chunk: MarketChunk
    trades: TradeColumns | None = None
    quotes: QuoteColumns | None = None
    marks: MarkPriceColumns | None = None
    book_track: BookTrack | None = None
    depth: DepthSamples | None = None
    book_events: tuple[BookEvent, ...] = ()
    dead_letters: tuple[DeadLetter, ...] = ()
    watermark: int = -END_OF_TIME
    last_trade_ts: int = -END_OF_TIME
    bars: dict[str, BarColumns] = field(default_factory=dict)

    @property
    def symbol(self) -> str:
        return self.chunk.symbol


@dataclass
class ValidateState:
    trades: TradeValidator
    quotes: QuoteValidator
    watermark: int = -END_OF_TIME
    agg_trades: AggTradeValidator = field(default_factory=AggTradeValidator)
    marks: MarkValidator = field(default_factory=MarkValidator)
    has_raw_trades: bool = False  # the symbol's stream has carried raw trades


def validate_events(
    state: ValidateState | None, staged: StagedChunk
) -> tuple[ValidateState, StagedChunk]:
    """Route NaN, negative, duplicate and out-of-order rows to dead letters; keep the rest.

    Bars are built from raw trades. A symbol whose stream has never carried a raw trade (a
    futures capture of `aggTrade` only) gets its validated agg trades as trades instead
    (trade_id = agg id); from the first chunk with raw trades on, raw trades win.
    """
    if state is None:
        state = ValidateState(TradeValidator(), QuoteValidator())
    chunk = staged.chunk
    source = f"{chunk.symbol} chunk {chunk.sequence}"
    state.has_raw_trades = state.has_raw_trades or len(chunk.trades) > 0
    trades, trade_letters = state.trades.validate(chunk.symbol, chunk.trades, source)
    agg, agg_letters = state.agg_trades.validate(chunk.symbol, chunk.agg_trades, source)
    if not state.has_raw_trades:
        trades = TradeColumns(agg.ts_event, agg.ts_recv, agg.agg_id, agg.price, agg.qty, agg.side)
    quotes, quote_letters = state.quotes.validate(chunk.symbol, chunk.quotes, source)
    marks, mark_letters = state.marks.validate(chunk.symbol, chunk.marks, source)
    if len(trades):
        state.watermark = max(state.watermark, int(trades.ts_event[-1]))
    watermark = END_OF_TIME if chunk.end_of_stream else state.watermark
    letters = (chunk.dead_letters + tuple(trade_letters) + tuple(agg_letters)
               + tuple(quote_letters) + tuple(mark_letters))
    return state, replace(
        staged,
        trades=trades,
        quotes=quotes,
        marks=marks,
        dead_letters=letters,
        watermark=watermark,
        last_trade_ts=state.watermark,
    )


def sync_book(
    state: BookSynchronizer | None,
    staged: StagedChunk,
    *,
    depth_levels: int = 20,
    futures: bool | None = None,
) -> tuple[BookSynchronizer, StagedChunk]:
    """Keep the local L2 book in sync from snapshots and diffs; sample it once a second.

    `futures` picks Binance's USD-M (pu chain) or spot procedure; None takes it per symbol from
    the first depth update (one with pu >= 0 is futures). Resync requests travel as
    "resync_requested" book events.
    """
    chunk = staged.chunk
    if state is None:
        state = BookSynchronizer(chunk.symbol, depth_levels=depth_levels, futures=futures)
    # Sample the book up to the last trade, so quiet book periods still give bars book features.
    sample_until = staged.last_trade_ts if staged.last_trade_ts > -END_OF_TIME else None
    result = state.apply(chunk.deltas, chunk.snapshots, watermark=sample_until)
    return state, replace(
        staged,
        book_track=result.track,
        depth=result.depth,
        book_events=staged.book_events + tuple(result.events),
        dead_letters=staged.dead_letters + tuple(result.dead_letters),
    )


def fold_bars(
    state: BarFolder | None, staged: StagedChunk, *, timeframes: tuple[str, ...]
) -> tuple[BarFolder, StagedChunk]:
    """Fold trades into event-time bars of every timeframe; emit the bars that closed."""
    if state is None:
        state = BarFolder(timeframes)
    trades = staged.trades if staged.trades is not None else TradeColumns.empty()
    bars = state.fold(trades, staged.watermark, staged.book_track)
    if staged.chunk.end_of_stream:
        flushed = state.flush(staged.watermark, staged.book_track)
        bars = _concat_bars(bars, flushed)
    late = tuple(state.take_dead_letters())
    return state, replace(staged, bars=bars, dead_letters=staged.dead_letters + late)


def _concat_bars(
    first: dict[str, BarColumns], second: dict[str, BarColumns]
) -> dict[str, BarColumns]:
    merged = dict(first)
    for timeframe, bars in second.items():
        merged[timeframe] = BarColumns.concat([merged[timeframe], bars]) if (
            timeframe in merged) else bars
    return merged


@dataclass
class IndicatorState:
    by_timeframe: dict[str, IndicatorSet]
    no_bars: dict[str, BarColumns] = field(default_factory=dict)  # empty, indicator columns


def compute_indicators(
    state: IndicatorState | None, staged: StagedChunk, *, specs: tuple[IndicatorSpec, ...]
) -> tuple[IndicatorState, FeatureBatch]:
    """Extend each timeframe's bars with the indicators the strategy asked for.

    The batch also carries the validated quotes and mark prices (funding for the paper
    matcher); venue klines stay on the tape for now and are not passed on.
    """
    if state is None:
        grouped: dict[str, list[IndicatorSpec]] = {}
        for spec in specs:
            grouped.setdefault(spec.timeframe, []).append(spec)
        state = IndicatorState({tf: IndicatorSet(group) for tf, group in grouped.items()})
    bars: dict[str, BarColumns] = {}
    for timeframe, frame in staged.bars.items():
        indicator_set = state.by_timeframe.get(timeframe)
        if indicator_set is None:
            bars[timeframe] = frame
            continue
        if len(frame) == 0 and timeframe in state.no_bars:
            bars[timeframe] = state.no_bars[timeframe]  # live batches mostly close no bar
            continue
        extra = indicator_set.update(frame.columns)
        bars[timeframe] = BarColumns(timeframe, {**frame.columns, **extra})
        if len(frame) == 0:
            state.no_bars[timeframe] = bars[timeframe]
    chunk = staged.chunk
    batch = FeatureBatch(
        symbol=chunk.symbol,
        sequence=chunk.sequence,
        watermark=staged.watermark,
        trades=staged.trades if staged.trades is not None else TradeColumns.empty(),
        bars=bars,
        quotes=staged.quotes if staged.quotes is not None and len(staged.quotes) else None,
        marks=staged.marks if staged.marks is not None and len(staged.marks) else None,
        depth=staged.depth if staged.depth is not None and len(staged.depth) else None,
        book_events=staged.book_events,
        feed_events=chunk.feed_events,
        end_of_stream=chunk.end_of_stream,
    )
    return state, batch
