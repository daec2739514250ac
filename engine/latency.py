"""Receive-to-feature and receive-to-decision latency of a live run, per frame.

A frame's receive time (`ts_recv`, wall clock ns, stamped by the feed when the socket read
returned) travels with its rows through the dataflow. When the feature batch holding those rows
reaches the supervisor, `features` records now - ts_recv for each row; when the symbol's actor
has run the strategy and risk on that batch, `decisions` records it again. Trades and quotes
carry one row per frame, so these are per-frame latencies. Kept in NumPy arrays, summarised as
percentiles by `summary`.
"""

from __future__ import annotations

import time

import numpy as np

from engine.batches import FeatureBatch


def receive_times(batch: FeatureBatch) -> np.ndarray:
    """Receive times of the frames behind a batch's trades and quotes."""
    parts = [batch.trades.ts_recv]
    if batch.quotes is not None:
        parts.append(batch.quotes.ts_recv)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


class LatencyRecorder:
    """Collects per-frame latencies in nanoseconds, from `since_ns` on (warm-up excluded)."""

    def __init__(self, since_ns: int = 0) -> None:
        self.since_ns = since_ns
        self._feature: list[np.ndarray] = []
        self._decision: list[np.ndarray] = []

    def _take(self, received: np.ndarray, into: list[np.ndarray]) -> None:
        now = time.time_ns()
        kept = received[received >= self.since_ns]
        if len(kept):
            into.append(now - kept)

    def features(self, received: np.ndarray) -> None:
        self._take(received, self._feature)

    def decisions(self, received: np.ndarray) -> None:
        self._take(received, self._decision)

    @staticmethod
    def _percentiles(parts: list[np.ndarray]) -> dict[str, float]:
        if not parts:
            return {"count": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
        values = np.concatenate(parts) / 1e6
        p50, p99 = np.percentile(values, [50, 99])
        return {"count": len(values), "p50_ms": float(p50), "p99_ms": float(p99),
                "max_ms": float(values.max())}

    def summary(self) -> dict[str, dict[str, float]]:
        return {"receive_to_feature": self._percentiles(self._feature),
                "receive_to_decision": self._percentiles(self._decision)}
