"""Rows of the `signals` journal table, held until each signal's outcome is known.

A signal's row is emitted once: when it is not acted on (the strategy did not ask to, the position
already matched, or risk rejected the entry), or when its entry order fills, so that the
execution latency (fill time minus signal time) and the estimated and actual slippage can be
filled in. Actual slippage is measured against the signal's reference price (the bar close), so it
includes the drift during the order's latency. At the end of a stream, signals whose orders never
filled are emitted as acted with empty execution columns.

With `labelled=True` (a run that scores its signals, `engine.signal_learner`) a row also waits for
its label, `actual_reward`, known only a horizon after the signal: it is emitted once both the
outcome and the label are in, or at the end of the stream without a label.

Every empty column of the DEX-led plan's schema is explained in `null_reasons` (JSON: column to
why), so a NULL is never ambiguous.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.matching import slippage_bps
from engine.strategies.base import Signal, details_json
from engine.types import Fill

DEX_IMBALANCE = "dex_imbalance_30s"  # the plan's DEX order-flow imbalance column

_NS_PER_MS = 1_000_000


@dataclass
class _OpenSignal:
    row: dict[str, Any]
    details: dict[str, object]
    direction: int
    reference_price: float
    ts_event: int
    order_id: str | None = None
    done: bool = False  # the outcome is known; waiting for the label only
    labelled: bool = False
    null_reasons: dict[str, str] = field(default_factory=dict)


class SignalLedger:
    """Signals of one symbol awaiting their outcome; picklable."""

    def __init__(self, symbol: str, strategy: str, labelled: bool = False) -> None:
        self.symbol = symbol
        self.strategy = strategy
        self.labelled = labelled
        self._open: dict[str, _OpenSignal] = {}
        self._by_order: dict[str, str] = {}

    def open(
        self,
        signal_id: str,
        signal: Signal,
        timeframe: str,
        ts_event: int,
        reference_price: float,
        bar: dict[str, float],
        regime: str | None = None,
    ) -> None:
        details_in = signal.details or {}
        row: dict[str, Any] = {
            "key": signal_id,
            "symbol": self.symbol,
            "strategy": self.strategy,
            "ts_event": ts_event,
            "timeframe": timeframe,
            "direction": int(signal.direction),
            "score": math.nan if signal.score is None else float(signal.score),
            "reason": signal.reason,
            "acted": False,
            "reference_price": reference_price,
            "signal_type": str(details_in.get("signal_type", signal.reason)),
            "predicted_reward": _number(details_in.get("predicted_reward",
                                                       details_in.get("predicted_return"))),
            "actual_reward": None,
            "dex_price": _number(bar.get("dex_price")),
            "dex_orderflow_imbalance": _number(bar.get(DEX_IMBALANCE)),
            "cex_price": reference_price,
            "order_flow_imbalance": bar.get("order_flow_imbalance", math.nan),
            "top_imbalance": bar.get("top_imbalance", math.nan),
            "depth_bid_5pct": bar.get("depth_bid_5pct", math.nan),
            "depth_ask_5pct": bar.get("depth_ask_5pct", math.nan),
            "regime": regime,
            "data_latency_ms": _number(bar.get("data_latency_ms")),
            "execution_latency_ms": None,
            "estimated_slippage_bps": None,
            "actual_slippage_bps": None,
            "details": None,
            "null_reasons": None,
        }
        details = dict(signal.details) if signal.details is not None else {}
        self._open[signal_id] = _OpenSignal(
            row, details, int(signal.direction), reference_price, ts_event
        )

    def resolve(self, signal_id: str, acted: bool, note: str = "") -> dict[str, Any] | None:
        """Finish a signal's row now (not acted on, or acted without a fill to wait for); None
        while it still waits for its label."""
        entry = self._open[signal_id]
        if entry.order_id is not None:
            self._by_order.pop(entry.order_id, None)
        if note:
            entry.details["outcome"] = note
        return self._finish(signal_id, entry, acted)

    def await_fill(self, signal_id: str, order_id: str, estimated_slippage_bps: float) -> None:
        """The signal's entry order was sent; its row waits for the fill."""
        entry = self._open[signal_id]
        entry.order_id = order_id
        entry.row["estimated_slippage_bps"] = (
            estimated_slippage_bps if math.isfinite(estimated_slippage_bps) else None
        )
        self._by_order[order_id] = signal_id

    def rename_order(self, order_id: str, new_order_id: str) -> None:
        """The signal waiting on `order_id` now waits on `new_order_id` (a market fallback)."""
        signal_id = self._by_order.pop(order_id, None)
        if signal_id is not None:
            self._by_order[new_order_id] = signal_id
            self._open[signal_id].order_id = new_order_id

    def resolve_order(self, order_id: str, note: str) -> dict[str, Any] | None:
        """The row of the signal whose entry order was rejected by the venue, if any."""
        signal_id = self._by_order.get(order_id)
        return None if signal_id is None else self.resolve(signal_id, acted=False, note=note)

    def on_fill(self, fill: Fill) -> dict[str, Any] | None:
        """The row of the signal this fill executed, if any (and labelled, when labels are
        awaited)."""
        signal_id = self._by_order.pop(fill.order_id, None)
        if signal_id is None:
            return None
        entry = self._open[signal_id]
        entry.row["execution_latency_ms"] = (fill.ts_event - entry.ts_event) / _NS_PER_MS
        entry.row["actual_slippage_bps"] = slippage_bps(
            entry.direction, fill.price, entry.reference_price
        )
        return self._finish(signal_id, entry, acted=True)

    def label(self, signal_id: str, reward: float | None,
              reason: str = "") -> dict[str, Any] | None:
        """The signal's realised reward (None: not computable, `reason` says why); its row if
        the outcome was already known."""
        entry = self._open.get(signal_id)
        if entry is None or entry.labelled:
            return None
        entry.labelled = True
        entry.row["actual_reward"] = _number(reward)
        if entry.row["actual_reward"] is None:
            entry.null_reasons["actual_reward"] = reason or "no reward could be computed"
        if not entry.done:
            return None
        del self._open[signal_id]
        return self._row(entry)

    def close_all(self) -> list[dict[str, Any]]:
        """End of stream: every unfinished row, in the order opened; signals still waiting for
        a fill count as acted, labels still to come stay empty and say why."""
        rows = []
        for entry in self._open.values():
            if not entry.done:
                entry.row["acted"] = True
                entry.done = True
            if self.labelled and not entry.labelled:
                entry.null_reasons.setdefault(
                    "actual_reward", "the stream ended before the signal's horizon passed")
            rows.append(self._row(entry))
        self._open.clear()
        self._by_order.clear()
        return rows

    def _finish(self, signal_id: str, entry: _OpenSignal, acted: bool) -> dict[str, Any] | None:
        entry.row["acted"] = acted
        entry.done = True
        if self.labelled and not entry.labelled:
            return None  # the label completes it
        del self._open[signal_id]
        return self._row(entry)

    def _row(self, entry: _OpenSignal) -> dict[str, Any]:
        row = entry.row
        row["details"] = details_json(entry.details) if entry.details else None
        outcome = str(entry.details.get("outcome", "acted" if row["acted"] else "not acted"))
        reasons = {_PLAN_NAMES.get(column, column):
                   entry.null_reasons.get(column) or default(outcome, self.labelled)
                   for column, default in _NULL_DEFAULTS.items() if _is_null(row, column)}
        row["null_reasons"] = json.dumps(reasons, sort_keys=True) if reasons else None
        return row


def _is_null(row: dict[str, Any], column: str) -> bool:
    if column == "depth_5pct":
        bid, ask = row["depth_bid_5pct"], row["depth_ask_5pct"]
        return not (math.isfinite(bid) and math.isfinite(ask))
    value = row[column]
    return value is None or (isinstance(value, float) and not math.isfinite(value))


# `null_reasons` speaks the plan's names (the `plan_signals` view of `storage.schemas`).
_PLAN_NAMES = {"depth_5pct": "cex_orderbook_depth_5pct", "regime": "market_regime",
               "estimated_slippage_bps": "estimated_slippage_pct",
               "actual_slippage_bps": "actual_slippage_pct"}

# Why a column of the plan's schema is empty, when nothing more specific was noted.
_NULL_DEFAULTS: dict[str, Callable[[str, bool], str]] = {
    "predicted_reward": lambda outcome, labelled: "no model predicted this signal",
    "actual_reward": lambda outcome, labelled: (
        "not labelled" if labelled else "the run does not label signals (learning.target)"),
    "dex_price": lambda outcome, labelled: "the pair has no DEX pool in this run, or the pool "
                                           "had no swap yet",
    "dex_orderflow_imbalance": lambda outcome, labelled: "no DEX swap in the imbalance window",
    "depth_5pct": lambda outcome, labelled: "no CEX order book in the data",
    "regime": lambda outcome, labelled: "the regime detector is still warming up",
    "data_latency_ms": lambda outcome, labelled: "the data has no receive times "
                                                 "(ts_recv = ts_event)",
    "execution_latency_ms": lambda outcome, labelled: f"no fill: {outcome}",
    "estimated_slippage_bps": lambda outcome, labelled: f"no order sent: {outcome}",
    "actual_slippage_bps": lambda outcome, labelled: f"no fill: {outcome}",
}


def _number(value: object) -> float | None:
    """A finite number for a nullable column, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
