"""The run journal: one DuckDB file per run, written by a single writer in batched Arrow appends.

Every table has a primary `key`; appends use INSERT OR IGNORE, so a replay resumed after a crash
(Bytewax recovery is at-least-once) writes no duplicates. Rows arrive as plain dicts from the
engine; the writer adds `run_id`, converts them to Arrow with the table's schema and inserts them
in one statement per table and flush.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from storage.schemas import JOURNAL_TABLES, JOURNAL_VIEWS, NONDETERMINISTIC_COLUMNS

_DUCK_TYPES: dict[pa.DataType, str] = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int8(): "TINYINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


class JournalError(RuntimeError):
    """A row or table does not fit the journal's schema; the message names table and column."""


def _ddl(table: str, schema: pa.Schema) -> str:
    columns = []
    for field in schema:
        duck_type = _DUCK_TYPES.get(field.type)
        if duck_type is None:
            raise JournalError(f"journal table {table}: unsupported column type {field.type}")
        suffix = " PRIMARY KEY" if field.name == "key" else ""
        columns.append(f'"{field.name}" {duck_type}{suffix}')
    return f'CREATE TABLE IF NOT EXISTS "{table}" ({", ".join(columns)})'


def _clean(value: Any) -> Any:
    """Map float NaN to NULL so DuckDB aggregates skip unknowns instead of propagating NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class JournalWriter:
    """Buffers rows per table and inserts them into DuckDB when a buffer fills or on flush."""

    def __init__(self, path: Path | str, run_id: str, flush_rows: int = 50_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.flush_rows = flush_rows
        self._connection = duckdb.connect(str(self.path))
        for table, schema in JOURNAL_TABLES.items():
            self._run(_ddl(table, schema))
        for view, query in JOURNAL_VIEWS.items():
            self._run(f'CREATE VIEW IF NOT EXISTS "{view}" AS {query}')
        self._buffers: dict[str, list[pa.Table]] = {table: [] for table in JOURNAL_TABLES}
        self._buffered_rows: dict[str, int] = dict.fromkeys(JOURNAL_TABLES, 0)
        self.rows_written: dict[str, int] = dict.fromkeys(JOURNAL_TABLES, 0)
        self._closed = False

    def append(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Queue rows for `table`. Rows are converted to Arrow here, so a row that does not fit
        raises JournalError (naming table and column) from the call that produced it."""
        if self._closed:
            raise JournalError(f"journal {self.path.name} is closed; cannot append to {table}")
        schema = JOURNAL_TABLES.get(table)
        if schema is None:
            raise JournalError(f"unknown journal table {table!r}; known: {sorted(JOURNAL_TABLES)}")
        names = set(schema.names)
        rows = list(rows)
        if not rows:
            return
        for row in rows:
            unknown = set(row) - names
            if unknown:
                raise JournalError(f"journal table {table}: unknown columns {sorted(unknown)}")
            if "key" not in row:
                raise JournalError(f"journal table {table}: row has no stable 'key': {dict(row)}")
        columns = {
            name: [self.run_id] * len(rows)
            if name == "run_id"
            else [_clean(row.get(name)) for row in rows]
            for name in schema.names
        }
        try:
            arrow_table = pa.Table.from_pydict(columns, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise JournalError(f"journal table {table}: rows do not fit schema: {error}") from None
        self._buffers[table].append(arrow_table)
        self._buffered_rows[table] += len(rows)
        if self._buffered_rows[table] >= self.flush_rows:
            self._flush_table(table)

    def append_many(self, rows_by_table: Mapping[str, Iterable[Mapping[str, Any]]]) -> None:
        for table, rows in rows_by_table.items():
            self.append(table, rows)

    def _flush_table(self, table: str) -> None:
        buffer = self._buffers[table]
        if not buffer:
            return
        staged = pa.concat_tables(buffer)
        self._connection.register("staged_rows", staged)
        try:
            before = self._count(table)
            self._run(f'INSERT OR IGNORE INTO "{table}" SELECT * FROM staged_rows')
            self.rows_written[table] += self._count(table) - before
        finally:
            self._connection.unregister("staged_rows")
        buffer.clear()
        self._buffered_rows[table] = 0

    def _run(self, sql: str) -> None:
        """Execute a statement and consume its result (DuckDB 2.0 requires it)."""
        self._connection.execute(sql).fetchall()

    def _count(self, table: str) -> int:
        rows = self._connection.execute(f'SELECT count(*) FROM "{table}"').fetchall()
        return int(rows[0][0])

    def flush(self) -> None:
        for table in JOURNAL_TABLES:
            self._flush_table(table)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._run("CHECKPOINT")
        self._connection.close()
        self._closed = True

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def export_parquet(journal_path: Path | str, out_dir: Path | str) -> list[Path]:
    """Write every journal table to `<out_dir>/<table>.parquet`, rows ordered by key."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with duckdb.connect(str(journal_path), read_only=True) as connection:
        for table in JOURNAL_TABLES:
            arrow_table = connection.sql(f'SELECT * FROM "{table}" ORDER BY key').to_arrow_table()
            target = out / f"{table}.parquet"
            pq.write_table(arrow_table, target)
            written.append(target)
    return written


def read_table(
    journal_path: Path | str, table: str, *, deterministic_only: bool = False
) -> list[tuple[Any, ...]]:
    """All rows of a journal table ordered by key; optionally without run-specific columns."""
    if table not in JOURNAL_TABLES:
        raise JournalError(f"unknown journal table {table!r}")
    names = [
        name
        for name in JOURNAL_TABLES[table].names
        if not (deterministic_only and name in NONDETERMINISTIC_COLUMNS)
    ]
    column_list = ", ".join(f'"{name}"' for name in names)
    with duckdb.connect(str(journal_path), read_only=True) as connection:
        return connection.execute(
            f'SELECT {column_list} FROM "{table}" ORDER BY key'
        ).fetchall()


def table_counts(journal_path: Path | str) -> dict[str, int]:
    with duckdb.connect(str(journal_path), read_only=True) as connection:
        counts = {}
        for table in JOURNAL_TABLES:
            rows = connection.execute(f'SELECT count(*) FROM "{table}"').fetchall()
            counts[table] = int(rows[0][0])
        return counts


def to_json(value: Any) -> str:
    """Stable JSON for journal text columns (sorted keys, no NaN)."""
    return json.dumps(value, sort_keys=True, default=str, allow_nan=False)
