"""Prometheus metrics of a run, served on `/metrics` while the run is live.

Counters live in the driver process: actors return their counts with each step result and the
coordinator adds them here, so one endpoint shows the whole run without per-event calls.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

COUNTER_NAMES: tuple[str, ...] = (
    "events",
    "bars",
    "signals",
    "intents",
    "orders",
    "fills",
    "rejected_intents",
    "approved_intents",
    "round_trips",
    "dead_letters",
    "book_resyncs",
    "feed_events",
    "stale_alarms",
    "live_frames",
    "reconnects",
    "drift_alerts",
    "model_retrains",
    "model_swaps",
    "threshold_retunes",
    "actor_restarts",
)


@dataclass
class RunMetrics:
    """One registry per run so tests and concurrent runs never share counters."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.counters: dict[str, Counter] = {
            name: Counter(f"ats_{name}", f"ATS {name.replace('_', ' ')}", registry=self.registry)
            for name in COUNTER_NAMES
        }
        self.batch_latency = Histogram(
            "ats_batch_latency_seconds",
            "Wall time from a feature batch leaving the dataflow to its step result",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.receive_to_feature = Histogram(
            "ats_receive_to_feature_seconds",
            "Live: wall time from a frame's receipt to its feature batch reaching the actors",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
            registry=self.registry,
        )
        self.feed_pending = Gauge(
            "ats_feed_pending_frames", "Live: frames received but not yet parsed",
            registry=self.registry,
        )
        self.totals: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._lock = threading.Lock()

    def add(self, name: str, amount: int) -> None:
        if amount <= 0:
            return
        self.counters[name].inc(amount)
        with self._lock:  # live runs count from two threads
            self.totals[name] += amount

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Start the /metrics HTTP endpoint; returns the bound port (0 picks a free one)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return int(server.server_port)
