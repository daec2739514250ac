"""The dataflow's exit: one sink partition that hands items to the run's Supervisor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

SUPERVISOR_PARTITION = "supervisor"
ResyncCallback = Callable[[str], None]


class _SupervisorPartition(StatefulSinkPartition[tuple[str, Any], None]):
    def __init__(self, supervisor: Any, on_resync: ResyncCallback | None) -> None:
        self._supervisor = supervisor
        self._on_resync = on_resync

    def write_batch(self, values: list[tuple[str, Any]]) -> None:
        for kind, payload in values:
            if kind == "features":
                self._supervisor.on_features(payload)
                continue
            if self._on_resync is not None:
                for event in payload.get("book_events", ()):
                    if event.get("kind") == "resync_requested":
                        self._on_resync(event["symbol"])
            self._supervisor.on_journal_rows(payload)

    def snapshot(self) -> None:
        return None


class SupervisorSink(FixedPartitionedSink[tuple[str, Any], None]):
    """A single partition, so exactly one worker talks to the Supervisor whatever `-w` is.

    Items are `("supervisor", (kind, payload))` with kind "features" (a FeatureBatch) or
    "journal" (rows by table from the dataflow: dead letters, book and feed events). In live
    mode `on_resync(symbol)` is called for every book resync request, so the feed fetches a
    fresh snapshot; a replay waits for the next snapshot on its tape instead.
    """

    def __init__(self, supervisor: Any, on_resync: ResyncCallback | None = None) -> None:
        self._supervisor = supervisor
        self._on_resync = on_resync

    def list_parts(self) -> list[str]:
        return [SUPERVISOR_PARTITION]

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> _SupervisorPartition:
        return _SupervisorPartition(self._supervisor, self._on_resync)
