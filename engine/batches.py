"""Columnar micro-batches: the items that flow from the dataflow to the actors.

DESIGN.md's performance rule: one item carries many events of one symbol as NumPy columns, never
one Python object per trade. These containers are plain NumPy so that `engine/` stays free of
Bytewax and Ray; `storage/schemas.py` holds the matching Arrow schemas for the tape and journal.

Conventions:
- every timestamp is int64 nanoseconds since the epoch, UTC;
- `side` of a trade is the aggressor: +1 buyer-initiated, -1 seller-initiated;
- `side` of a book level is +1 bid, -1 ask;
- a batch's `watermark` promises that every event of that symbol with `ts_event < watermark` has
  been delivered in this or an earlier batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np

BUY = 1
SELL = -1
BID = 1
ASK = -1
NO_LEVEL = 0  # side of the placeholder row of a depth update that changed no level


def _check_lengths(name: str, columns: dict[str, np.ndarray]) -> None:
    lengths = {key: len(value) for key, value in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{name}: columns have different lengths: {lengths}")


class _Columns:
    """What every columnar container shares: columns of equal length, named in `DTYPES` (the
    dataclass fields, in order, with their dtypes), `as_dict` in that order, and `empty()`."""

    DTYPES: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        _check_lengths(type(self).__name__, self.as_dict())

    def __len__(self) -> int:
        return len(getattr(self, next(iter(self.DTYPES))))

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.DTYPES}

    @classmethod
    def empty(cls) -> Self:
        return cls(**{name: np.empty(0, dtype) for name, dtype in cls.DTYPES.items()})

    @classmethod
    def concat(cls, parts: Sequence[Self]) -> Self:
        """The rows of `parts`, in order (an empty container for none)."""
        filled = [part for part in parts if len(part)]
        if not filled:
            return cls.empty()
        if len(filled) == 1:
            return filled[0]
        return cls(**{name: np.concatenate([getattr(part, name) for part in filled])
                      for name in cls.DTYPES})


@dataclass(frozen=True)
class TradeColumns(_Columns):
    """Trades of one symbol in event-time order."""

    ts_event: np.ndarray  # int64
    ts_recv: np.ndarray  # int64
    trade_id: np.ndarray  # int64
    price: np.ndarray  # float64
    qty: np.ndarray  # float64
    side: np.ndarray  # int8, +1 buy aggressor, -1 sell aggressor

    DTYPES: ClassVar[dict[str, Any]] = {
        "ts_event": np.int64, "ts_recv": np.int64, "trade_id": np.int64, "price": np.float64,
        "qty": np.float64, "side": np.int8
    }

    def take(self, index: np.ndarray | slice) -> TradeColumns:
        return TradeColumns(**{key: value[index] for key, value in self.as_dict().items()})



@dataclass(frozen=True)
class BookDeltaColumns(_Columns):
    """Diff-depth updates, one row per changed level; rows of one update share its ids.

    `prev_final_update_id` is the futures `pu` field and -1 where the venue has none (spot).
    A quantity of 0 removes the level. An update that changed no level keeps its ids in one
    placeholder row with side `NO_LEVEL` (price and quantity NaN), since the next update
    continues from it.
    """

    ts_event: np.ndarray  # int64
    ts_recv: np.ndarray  # int64
    first_update_id: np.ndarray  # int64 (U)
    final_update_id: np.ndarray  # int64 (u)
    prev_final_update_id: np.ndarray  # int64 (pu) or -1
    side: np.ndarray  # int8, +1 bid, -1 ask
    price: np.ndarray  # float64
    qty: np.ndarray  # float64

    DTYPES: ClassVar[dict[str, Any]] = {
        "ts_event": np.int64, "ts_recv": np.int64, "first_update_id": np.int64,
        "final_update_id": np.int64, "prev_final_update_id": np.int64, "side": np.int8,
        "price": np.float64, "qty": np.float64
    }


@dataclass(frozen=True)
class BookSnapshotColumns(_Columns):
    """Full-depth snapshots (REST), one row per level; rows of one snapshot share its id."""

    ts_event: np.ndarray  # int64
    ts_recv: np.ndarray  # int64
    last_update_id: np.ndarray  # int64
    side: np.ndarray  # int8
    price: np.ndarray  # float64
    qty: np.ndarray  # float64

    DTYPES: ClassVar[dict[str, Any]] = {
        "ts_event": np.int64, "ts_recv": np.int64, "last_update_id": np.int64, "side": np.int8,
        "price": np.float64, "qty": np.float64
    }


@dataclass(frozen=True)
class QuoteColumns(_Columns):
    """Best bid and ask (bookTicker), or top of the synced book sampled by the dataflow."""

    ts_event: np.ndarray  # int64
    ts_recv: np.ndarray  # int64
    update_id: np.ndarray  # int64
    bid_price: np.ndarray  # float64
    bid_qty: np.ndarray  # float64
    ask_price: np.ndarray  # float64
    ask_qty: np.ndarray  # float64

    DTYPES: ClassVar[dict[str, Any]] = {
        "ts_event": np.int64, "ts_recv": np.int64, "update_id": np.int64, "bid_price": np.float64,
        "bid_qty": np.float64, "ask_price": np.float64, "ask_qty": np.float64
    }


@dataclass(frozen=True)
class DepthSamples:
    """Top `levels` of the synced book, sampled at each 1-second boundary while in sync.

    Arrays of shape (samples, levels); missing levels are NaN. The paper matcher walks these.
    """

    ts_event: np.ndarray  # int64, shape (samples,)
    bid_price: np.ndarray  # float64, shape (samples, levels), best first
    bid_qty: np.ndarray
    ask_price: np.ndarray
    ask_qty: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_event)


@dataclass(frozen=True)
class AggTradeColumns(_Columns):
    """Aggregate trades (Binance `aggTrade`): fills of one taker order at one price, summed.

    `agg_id` is the venue's aggregate id (`a`), `first_trade_id`/`last_trade_id` the range of raw
    trade ids it covers (`f`/`l`). `side` is the aggressor as in `TradeColumns`.
    """

    ts_event: np.ndarray  # int64
    ts_recv: np.ndarray  # int64
    agg_id: np.ndarray  # int64
    first_trade_id: np.ndarray  # int64
    last_trade_id: np.ndarray  # int64
    price: np.ndarray  # float64
    qty: np.ndarray  # float64
    side: np.ndarray  # int8

    DTYPES: ClassVar[dict[str, Any]] = {
        "ts_event": np.int64, "ts_recv": np.int64, "agg_id": np.int64, "first_trade_id": np.int64,
        "last_trade_id": np.int64, "price": np.float64, "qty": np.float64, "side": np.int8
    }


@dataclass(frozen=True)
class MarkPriceColumns(_Columns):
    """Perpetual mark price, index price and funding (Binance `markPriceUpdate`).

    `funding_rate` is the rate of the next settlement (0.0001 = 0.01%), `next_funding_time` the
    settlement time in ns; `estimated_settle_price` is NaN where the venue does not send it.
    """

    ts_event: np.ndarray  # int64
    ts_recv: np.ndarray  # int64
    mark_price: np.ndarray  # float64
    index_price: np.ndarray  # float64
    estimated_settle_price: np.ndarray  # float64
    funding_rate: np.ndarray  # float64
    next_funding_time: np.ndarray  # int64

    DTYPES: ClassVar[dict[str, Any]] = {
        "ts_event": np.int64, "ts_recv": np.int64, "mark_price": np.float64,
        "index_price": np.float64, "estimated_settle_price": np.float64,
        "funding_rate": np.float64, "next_funding_time": np.int64
    }


@dataclass(frozen=True)
class KlineColumns(_Columns):
    """Venue candlesticks as streamed (`kline_<interval>`), open and closed updates alike.

    `ts_open` is the candle start, `ts_close` its end (exclusive: the venue's close time + 1 ms),
    `interval_ns` its length and `closed` the venue's `x` flag (the last update of the candle).
    """

    ts_event: np.ndarray  # int64
    ts_recv: np.ndarray  # int64
    ts_open: np.ndarray  # int64
    ts_close: np.ndarray  # int64
    interval_ns: np.ndarray  # int64
    open: np.ndarray  # float64
    high: np.ndarray  # float64
    low: np.ndarray  # float64
    close: np.ndarray  # float64
    volume: np.ndarray  # float64 (base asset)
    quote_volume: np.ndarray  # float64
    taker_buy_volume: np.ndarray  # float64 (base asset)
    trade_count: np.ndarray  # int64
    closed: np.ndarray  # bool

    DTYPES: ClassVar[dict[str, Any]] = {
        "ts_event": np.int64, "ts_recv": np.int64, "ts_open": np.int64, "ts_close": np.int64,
        "interval_ns": np.int64, "open": np.float64, "high": np.float64, "low": np.float64,
        "close": np.float64, "volume": np.float64, "quote_volume": np.float64,
        "taker_buy_volume": np.float64, "trade_count": np.int64, "closed": np.bool_
    }


@dataclass(frozen=True)
class FeedEvent:
    """A live-feed event that travels in the stream so that a replay sees it too.

    Kinds: "connected", "disconnected", "rollover", "stale" (no data for the symbol for the
    alarm time: new entries are blocked), "fresh" (data flows again), "rest_fallback_started",
    "rest_fallback_stopped", "gap_filled", "gap_unfilled", "resync_snapshot". Rare: one Python
    object each is fine.
    """

    symbol: str
    ts_event: int
    ts_recv: int
    kind: str
    detail: str


@dataclass(frozen=True)
class FeedEventColumns(_Columns):
    """Feed events as columns, for the tape; `MarketChunk.feed_events` holds them as objects."""

    ts_event: np.ndarray  # int64
    ts_recv: np.ndarray  # int64
    kind: np.ndarray  # object (str)
    detail: np.ndarray  # object (str)

    DTYPES: ClassVar[dict[str, Any]] = {
        "ts_event": np.int64, "ts_recv": np.int64, "kind": object, "detail": object
    }

    @staticmethod
    def from_events(events: tuple[FeedEvent, ...]) -> FeedEventColumns:
        return FeedEventColumns(
            ts_event=np.array([event.ts_event for event in events], dtype=np.int64),
            ts_recv=np.array([event.ts_recv for event in events], dtype=np.int64),
            kind=np.array([event.kind for event in events], dtype=object),
            detail=np.array([event.detail for event in events], dtype=object),
        )

    def events(self, symbol: str) -> tuple[FeedEvent, ...]:
        return tuple(
            FeedEvent(symbol, int(ts_event), int(ts_recv), str(kind), str(detail))
            for ts_event, ts_recv, kind, detail in zip(
                self.ts_event.tolist(), self.ts_recv.tolist(), self.kind.tolist(),
                self.detail.tolist(), strict=True)
        )

# Columns every bar carries; book columns are NaN where no synced book was present.
BAR_FIELDS: tuple[str, ...] = (
    "ts_open",
    "ts_close",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "buy_volume",
    "sell_volume",
    "trade_count",
    "vwap",
    "order_flow_imbalance",
    "spread",
    "top_imbalance",
    "depth_bid_5pct",
    "depth_ask_5pct",
)


@dataclass(frozen=True)
class BarColumns:
    """Closed bars of one symbol and timeframe, oldest first, plus indicator columns.

    `ts_open` is the window start and `ts_close` the window end (exclusive): a bar is known at
    `ts_close` in event time, never earlier. Indicator columns (named by `IndicatorSpec.columns`)
    are NaN until warmed up.
    """

    timeframe: str
    columns: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        missing = [name for name in BAR_FIELDS if name not in self.columns]
        if missing:
            raise ValueError(f"BarColumns({self.timeframe}): missing columns {missing}")
        _check_lengths(f"BarColumns({self.timeframe})", self.columns)

    def __len__(self) -> int:
        return len(self.columns["ts_close"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @staticmethod
    def concat(frames: Sequence[BarColumns]) -> BarColumns:
        """Bars of one timeframe in order, with the columns of the first non-empty frame."""
        filled = [frame for frame in frames if len(frame)] or list(frames[:1])
        if len(filled) == 1:
            return filled[0]
        names = filled[0].columns.keys()
        return BarColumns(filled[0].timeframe, {
            name: np.concatenate([frame.columns[name] for frame in filled]) for name in names})


@dataclass(frozen=True)
class DeadLetter:
    """A bad input row routed aside with its reason, never dropped silently."""

    stage: str  # e.g. "parse_frames", "validate_trades", "sync_book"
    reason: str  # short machine-friendly reason, e.g. "nan_price", "duplicate_trade_id"
    detail: str  # human explanation naming what was wrong and where
    source: str  # where it came from: "file.gz:line 123", "tape:trades row 55"
    symbol: str | None = None
    ts_event: int | None = None
    ts_recv: int | None = None
    payload: str = ""  # the raw row or frame, truncated to 2,000 characters


@dataclass(frozen=True)
class MarketChunk:
    """Raw events of one symbol as read from a tape or parsed from frames, in arrival order."""

    symbol: str
    sequence: int
    trades: TradeColumns
    deltas: BookDeltaColumns = field(default_factory=BookDeltaColumns.empty)
    snapshots: BookSnapshotColumns = field(default_factory=BookSnapshotColumns.empty)
    quotes: QuoteColumns = field(default_factory=QuoteColumns.empty)
    agg_trades: AggTradeColumns = field(default_factory=AggTradeColumns.empty)
    marks: MarkPriceColumns = field(default_factory=MarkPriceColumns.empty)
    klines: KlineColumns = field(default_factory=KlineColumns.empty)
    feed_events: tuple[FeedEvent, ...] = ()
    dead_letters: tuple[DeadLetter, ...] = ()
    end_of_stream: bool = False


@dataclass(frozen=True)
class BookEvent:
    """A book-sync event worth journaling: synced, gap, crossed book, stale snapshot, resync."""

    symbol: str
    ts_event: int
    kind: str  # "synced", "gap", "crossed", "stale_snapshot", "invalid_update",
    # "invalid_snapshot", "resync_requested" (see dataflows/book.py)
    detail: str


@dataclass(frozen=True)
class FeatureBatch:
    """What a SymbolActor receives: one symbol's slice of event time with its closed bars.

    `trades` are the valid trades of the slice (for fills and stop checks); `bars` maps each
    timeframe to the bars that closed in this slice (`ts_close <= watermark`). `marks` are the
    valid mark prices and funding rates of a perpetual (for funding), None when there are none.
    Venue klines ride on the tape only for now: bars are always folded from trades.
    """

    symbol: str
    sequence: int
    watermark: int
    trades: TradeColumns
    bars: dict[str, BarColumns]
    quotes: QuoteColumns | None = None
    marks: MarkPriceColumns | None = None
    depth: DepthSamples | None = None
    book_events: tuple[BookEvent, ...] = ()
    feed_events: tuple[FeedEvent, ...] = ()
    end_of_stream: bool = False
