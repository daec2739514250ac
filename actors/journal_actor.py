"""JournalActor: the single DuckDB writer of a run (DESIGN.md: one writer process per file)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ray

from storage.journal import JournalWriter


@ray.remote(max_restarts=0)
class JournalActor:
    """Owns the JournalWriter. `append_many` is idempotent (rows carry stable keys)."""

    def __init__(self, path: str, run_id: str) -> None:
        self._writer = JournalWriter(Path(path), run_id)

    def append_many(self, rows_by_table: Mapping[str, Iterable[Mapping[str, Any]]]) -> None:
        self._writer.append_many(rows_by_table)

    def flush(self) -> dict[str, int]:
        self._writer.flush()
        return dict(self._writer.rows_written)

    def close(self) -> dict[str, int]:
        self._writer.close()
        return dict(self._writer.rows_written)
