"""The feature dataflow: market chunks in, per-symbol feature batches and dead letters out.

Reads top to bottom as named steps. Every item is a columnar chunk of one symbol (DESIGN.md's
performance rule); per-symbol state (validator, book, open bars, indicators) is carried by
`stateful_map` steps keyed on the symbol. Bad and late rows leave through their own stream,
`dead_letters`, to the journal.

Event time is handled inside the steps rather than by Bytewax's EventClock windows: a chunk holds
thousands of events spanning many windows, so windows are folded vectorised per chunk with the
open bar carried in state, and the watermark is the last accepted event time of the symbol.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source

from dataflows.dex_join import DexChunk, join_dex
from dataflows.sinks import SUPERVISOR_PARTITION, SupervisorSink
from dataflows.steps import (
    StagedChunk,
    compute_indicators,
    fold_bars,
    sync_book,
    validate_events,
)
from engine.batches import FeatureBatch, MarketChunk
from engine.indicator_spec import IndicatorSpec


def journal_rows(staged: StagedChunk) -> list[dict[str, list[dict[str, Any]]]]:
    """Dead letters, book events and feed events of a chunk as journal rows with stable keys."""
    prefix = f"{staged.symbol}:{staged.chunk.sequence}"
    dead_letters = [
        {
            "key": f"{prefix}:{index}",
            "stage": letter.stage,
            "reason": letter.reason,
            "detail": letter.detail,
            "source": letter.source,
            "symbol": letter.symbol or staged.symbol,
            "ts_event": letter.ts_event,
            "ts_recv": letter.ts_recv,
            "payload": letter.payload[:2000],
        }
        for index, letter in enumerate(staged.dead_letters)
    ]
    book_events = [
        {
            "key": f"{prefix}:{index}",
            "ts_event": event.ts_event,
            "symbol": event.symbol,
            "kind": event.kind,
            "detail": event.detail,
        }
        for index, event in enumerate(staged.book_events)
    ]
    feed_events = [
        {
            "key": f"{prefix}:{index}",
            "ts_event": event.ts_event,
            "ts_recv": event.ts_recv,
            "symbol": event.symbol,
            "kind": event.kind,
            "detail": event.detail,
        }
        for index, event in enumerate(staged.chunk.feed_events)
    ]
    if not dead_letters and not book_events and not feed_events:
        return []
    return [{"dead_letters": dead_letters, "book_events": book_events,
             "feed_events": feed_events}]


def build_flow(
    source: Source[MarketChunk],
    sink: SupervisorSink,
    *,
    timeframes: tuple[str, ...],
    indicators: tuple[IndicatorSpec, ...],
    depth_levels: int = 20,
    name: str = "ats_features",
    dex_source: Source[DexChunk] | None = None,
    dex_symbols: frozenset[str] = frozenset(),
) -> Dataflow:
    """The flow of the module docs; with `dex_source`, the pairs of `dex_symbols` also get their
    pool's DEX features as bar columns (`dataflows.dex_join`)."""
    flow = Dataflow(name)
    chunks = op.input("read_market_data", flow, source)
    keyed = op.key_on("key_by_symbol", chunks, lambda chunk: chunk.symbol)
    staged = op.map_value("stage_chunk", keyed, lambda chunk: StagedChunk(chunk=chunk))
    validated = op.stateful_map("validate_events", staged, validate_events)
    synced = op.stateful_map(
        "sync_book", validated, partial(sync_book, depth_levels=depth_levels)
    )
    folded = op.stateful_map("fold_bars", synced, partial(fold_bars, timeframes=timeframes))

    dead_letters = op.flat_map_value("dead_letters", folded, journal_rows)
    features = op.stateful_map(
        "compute_indicators", folded, partial(compute_indicators, specs=indicators)
    )
    if dex_source is not None:
        dex_chunks = op.input("read_dex_tape", flow, dex_source)
        dex_keyed = op.key_on("key_dex_by_cex_symbol", dex_chunks, lambda chunk: chunk.symbol)
        joined = op.stateful_map(
            "join_dex", op.merge("cex_and_dex", features, dex_keyed),
            partial(join_dex, dex_symbols=dex_symbols),
        )
        features = op.flat_map_value("release_joined", joined, lambda batches: batches)

    def to_supervisor_features(item: tuple[str, FeatureBatch]) -> tuple[str, Any]:
        return SUPERVISOR_PARTITION, ("features", item[1])

    def to_supervisor_journal(item: tuple[str, Any]) -> tuple[str, Any]:
        return SUPERVISOR_PARTITION, ("journal", item[1])

    outputs = op.merge(
        "merge_outputs",
        op.map("route_features", features, to_supervisor_features),
        op.map("route_dead_letters", dead_letters, to_supervisor_journal),
    )
    op.output("to_supervisor", outputs, sink)
    return flow
