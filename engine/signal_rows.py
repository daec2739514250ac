"""Rows of the `signals` journal table, held until each signal's outcome is known.

A signal's row is emitted once: when it is not acted on (the strategy did not ask to, the position
already matched, or risk rejected the entry), or when its entry order fills, so that the
execution latency (fill time minus signal time) and the estimated and actual slippage can be
filled in. Actual slippage is measured against the signal's reference price (the bar close), so it
includes the drift during the order's latency. Columns the engine cannot know (predicted reward,
DEX price, regime, data latency) stay empty. At the end of a stream, signals whose orders never
filled are emitted as acted with empty execution columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.matching import slippage_bps
from engine.strategies.base import Signal, details_json
from engine.types import Fill

_NS_PER_MS = 1_000_000


@dataclass
class _OpenSignal:
    row: dict[str, Any]
    details: dict[str, object]
    direction: int
    reference_price: float
    ts_event: int
    order_id: str | None = None


class SignalLedger:
    """Signals of one symbol awaiting their outcome; picklable."""

    def __init__(self, symbol: str, strategy: str) -> None:
        self.symbol = symbol
        self.strategy = strategy
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
    ) -> None:
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
            "predicted_reward": _number((signal.details or {}).get("predicted_return")),
            "actual_reward": None,
            "dex_price": None,
            "cex_price": reference_price,
            "order_flow_imbalance": bar.get("order_flow_imbalance", math.nan),
            "top_imbalance": bar.get("top_imbalance", math.nan),
            "depth_bid_5pct": bar.get("depth_bid_5pct", math.nan),
            "depth_ask_5pct": bar.get("depth_ask_5pct", math.nan),
            "regime": None,
            "data_latency_ms": _number(bar.get("data_latency_ms")),
            "execution_latency_ms": None,
            "estimated_slippage_bps": None,
            "actual_slippage_bps": None,
            "details": None,
        }
        details = dict(signal.details) if signal.details is not None else {}
        self._open[signal_id] = _OpenSignal(
            row, details, int(signal.direction), reference_price, ts_event
        )

    def resolve(self, signal_id: str, acted: bool, note: str = "") -> dict[str, Any]:
        """Finish a signal's row now (not acted on, or acted without a fill to wait for)."""
        entry = self._open.pop(signal_id)
        if entry.order_id is not None:
            self._by_order.pop(entry.order_id, None)
        if note:
            entry.details["outcome"] = note
        return self._finish(entry, acted)

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
        """The row of the signal this fill executed, if any."""
        signal_id = self._by_order.pop(fill.order_id, None)
        if signal_id is None:
            return None
        entry = self._open.pop(signal_id)
        entry.row["execution_latency_ms"] = (fill.ts_event - entry.ts_event) / _NS_PER_MS
        entry.row["actual_slippage_bps"] = slippage_bps(
            entry.direction, fill.price, entry.reference_price
        )
        return self._finish(entry, acted=True)

    def close_all(self) -> list[dict[str, Any]]:
        """End of stream: signals still waiting for a fill, as acted, in the order opened."""
        rows = [self._finish(entry, acted=True) for entry in self._open.values()]
        self._open.clear()
        self._by_order.clear()
        return rows

    @staticmethod
    def _finish(entry: _OpenSignal, acted: bool) -> dict[str, Any]:
        row = entry.row
        row["acted"] = acted
        row["details"] = details_json(entry.details) if entry.details else None
        return row


def _number(value: object) -> float | None:
    """A finite number for a nullable column, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
