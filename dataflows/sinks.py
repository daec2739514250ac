"""The dataflow's exit: one sink partition that hands items to the run's Supervisor."""

from __future__ import annotations

from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

SUPERVISOR_PARTITION = "supervisor"


class _SupervisorPartition(StatefulSinkPartition[tuple[str, Any], None]):
    def __init__(self, supervisor: Any) -> None:
        self._supervisor = supervisor

    def write_batch(self, values: list[tuple[str, Any]]) -> None:
        for kind, payload in values:
            if kind == "features":
                self._supervisor.on_features(payload)
            else:
                self._supervisor.on_journal_rows(payload)

    def snapshot(self) -> None:
        return None


class SupervisorSink(FixedPartitionedSink[tuple[str, Any], None]):
    """A single partition, so exactly one worker talks to the Supervisor whatever `-w` is.

    Items are `("supervisor", (kind, payload))` with kind "features" (a FeatureBatch) or
    "journal" (rows by table from the dataflow: dead letters and book events).
    """

    def __init__(self, supervisor: Any) -> None:
        self._supervisor = supervisor

    def list_parts(self) -> list[str]:
        return [SUPERVISOR_PARTITION]

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> _SupervisorPartition:
        return _SupervisorPartition(self._supervisor)
