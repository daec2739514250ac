"""The recorded tape: a directory of Parquet tables plus `tape.json`, written and read in chunks.

Layout of a tape directory:
- `trades.parquet`, `book_deltas.parquet`, `book_snapshots.parquet`, `best_bid_ask.parquet`, with
  the schemas of `storage.schemas.TAPE_TABLES` (a `symbol` column plus the columns of the matching
  `engine.batches` container). Rows are stored in arrival order, never sorted. The writer always
  writes all four (empty ones included); the reader also accepts a missing table as empty.
- `tape.json`: {"format": "ats-tape", "version": 1, "symbols": [...], "synthetic": bool,
  "source": str, "created_by": "ats <version>", "rows": {table: n}, ...caller's extra keys}.

`TapeWriter` writes into a hidden temporary directory beside the target and renames it into place
on `close()`, so a crash never leaves a half-written tape at the target path. `TapeReader` reads
whole columns with pyarrow and cuts them into `MarketChunk`s by slicing NumPy arrays.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.batches import DeadLetter, FeedEventColumns, MarketChunk
from storage.schemas import TAPE_TABLES
from storage.tape_chunks import CONTAINERS, stream_symbol

TAPE_FORMAT = "ats-tape"
TAPE_VERSION = 1
METADATA_FILE = "tape.json"
DEFAULT_ROW_GROUP_ROWS = 1_000_000
COMPRESSION = "zstd"  # measured: smaller and faster to read than snappy here


class TapeError(Exception):
    """A directory is not a readable tape, or a tape cannot be written; names path and cause."""


def ats_version() -> str:
    """The installed ats package version, for `created_by`."""
    try:
        return importlib.metadata.version("ats")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def table_file(name: str) -> str:
    """File name of a tape table inside the tape directory."""
    return f"{name}.parquet"


def _symbol_column(symbol: str, rows: int) -> pa.Array:
    """A string column repeating `symbol`, built from buffers (no Python object per row)."""
    encoded = symbol.encode()
    offsets = np.arange(rows + 1, dtype=np.int32) * len(encoded)
    return pa.StringArray.from_buffers(
        rows, pa.py_buffer(offsets.tobytes()), pa.py_buffer(encoded * rows)
    )


class TapeWriter:
    """Appends `MarketChunk`s to a new tape; `close()` publishes it atomically.

    Use as a context manager: leaving the block normally closes the tape, an exception aborts it
    (the temporary directory is removed and the target is left untouched). The target must not
    exist unless `overwrite=True`. Rows are buffered and written as Parquet row groups of about
    `row_group_rows` rows.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synthetic: bool = False,
        source: str = "",
        extra_metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise TapeError(f"{self.path}: already exists; pass overwrite=True to replace it")
        reserved = {"format", "version", "symbols", "synthetic", "source", "created_by", "rows"}
        clashes = sorted(reserved & set(extra_metadata or {}))
        if clashes:
            raise TapeError(f"{self.path}: extra_metadata may not set reserved keys {clashes}")
        self.synthetic = synthetic
        self.source = source
        self.extra_metadata = dict(extra_metadata or {})
        self.overwrite = overwrite
        self.row_group_rows = row_group_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._temp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._pending: dict[str, list[pa.Table]] = {name: [] for name in TAPE_TABLES}
        self._pending_rows: Counter[str] = Counter()
        self.rows: Counter[str] = Counter({name: 0 for name in TAPE_TABLES})
        self.symbols: dict[str, None] = {}
        self._finished = False

    def __enter__(self) -> TapeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write_chunk(self, chunk: MarketChunk) -> None:
        """Append the rows of one chunk (its dead letters are not part of the tape)."""
        if self._finished:
            raise TapeError(f"{self.path}: write_chunk after close/abort")
        self.symbols[chunk.symbol] = None
        for name, (attribute, _) in CONTAINERS.items():
            columns = getattr(chunk, attribute)
            if len(columns) == 0:
                continue
            if attribute == "feed_events":  # objects in the chunk, columns on the tape
                columns = FeedEventColumns.from_events(columns)
            schema = TAPE_TABLES[name]
            try:
                arrays = [_symbol_column(chunk.symbol, len(columns))]
                arrays += [
                    pa.array(values, type=schema.field(key).type)
                    for key, values in columns.as_dict().items()
                ]
                table = pa.Table.from_arrays(arrays, schema=schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                raise TapeError(
                    f"{self.path}: {chunk.symbol} chunk {chunk.sequence} does not fit the "
                    f"{name} schema: {error}"
                ) from error
            self._pending[name].append(table)
            self._pending_rows[name] += len(table)
            self.rows[name] += len(table)
            if self._pending_rows[name] >= self.row_group_rows:
                self._flush(name)

    def _flush(self, name: str) -> None:
        if not self._pending[name]:
            return
        writer = self._writers.get(name)
        if writer is None:
            writer = pq.ParquetWriter(
                self._temp / table_file(name),
                TAPE_TABLES[name],
                use_dictionary=["symbol"],
                compression=COMPRESSION,
            )
            self._writers[name] = writer
        writer.write_table(pa.concat_tables(self._pending[name]), self.row_group_rows)
        self._pending[name] = []
        self._pending_rows[name] = 0

    def metadata(self) -> dict[str, Any]:
        """The `tape.json` content as it stands now."""
        return {
            "format": TAPE_FORMAT,
            "version": TAPE_VERSION,
            "symbols": list(self.symbols),
            "synthetic": self.synthetic,
            "source": self.source,
            "created_by": f"ats {ats_version()}",
            "rows": dict(self.rows),
            **self.extra_metadata,
        }

    def close(self) -> Path:
        """Finish every table, write `tape.json` and move the tape into place; returns its path."""
        if self._finished:
            return self.path
        try:
            for name in TAPE_TABLES:
                self._flush(name)
                writer = self._writers.pop(name, None)
                if writer is not None:
                    writer.close()
                else:
                    pq.write_table(TAPE_TABLES[name].empty_table(), self._temp / table_file(name))
            text = json.dumps(self.metadata(), indent=2, sort_keys=False)
            (self._temp / METADATA_FILE).write_text(text + "\n")
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._finished = True
        return self.path

    def _publish(self) -> None:
        """Rename the finished temporary directory onto the target path."""
        previous: Path | None = None
        if self.path.exists():
            if not self.overwrite:
                raise TapeError(f"{self.path}: appeared while writing; not overwriting it")
            parent = self.path.parent
            previous = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=parent))
            previous.rmdir()
            self.path.rename(previous)
        self._temp.rename(self.path)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far; the target path is left as it was."""
        for writer in self._writers.values():
            try:
                writer.close()
            except Exception:  # closing a broken writer must not mask the original error
                pass
        self._writers.clear()
        shutil.rmtree(self._temp, ignore_errors=True)
        self._finished = True


def _check_schema(path: Path, name: str, schema: pa.Schema) -> None:
    expected = TAPE_TABLES[name]
    found = {field.name: field.type for field in schema}
    problems = []
    for field in expected:
        if field.name not in found:
            problems.append(f"missing column {field.name!r}")
        elif found[field.name] != field.type and not (
            pa.types.is_dictionary(found[field.name])
            and found[field.name].value_type == field.type
        ):
            problems.append(f"column {field.name!r} is {found[field.name]}, expected {field.type}")
    extra = [column for column in found if column not in expected.names]
    if extra:
        problems.append(f"unexpected columns {extra}")
    if problems:
        raise TapeError(f"{path / table_file(name)}: wrong {name} schema: {'; '.join(problems)}")


class TapeReader:
    """Reads a tape directory; `iter_chunks` yields per-symbol `MarketChunk`s of ts_recv ranges.

    Opening checks `tape.json` and every table's schema and raises `TapeError` naming the path and
    what is wrong. Tables are read whole (pyarrow, multi-threaded) on each `iter_chunks` call.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise TapeError(f"{self.path}: not a tape: no such directory")
        metadata_path = self.path / METADATA_FILE
        if not metadata_path.is_file():
            raise TapeError(f"{self.path}: not a tape: {METADATA_FILE} is missing")
        try:
            metadata = json.loads(metadata_path.read_text())
        except (OSError, ValueError) as error:
            raise TapeError(f"{metadata_path}: unreadable tape metadata: {error}") from error
        if not isinstance(metadata, dict) or metadata.get("format") != TAPE_FORMAT:
            raise TapeError(f"{metadata_path}: not a tape: 'format' is not {TAPE_FORMAT!r}")
        if metadata.get("version") != TAPE_VERSION:
            raise TapeError(
                f"{metadata_path}: tape version {metadata.get('version')!r} is not supported "
                f"(this ats reads version {TAPE_VERSION})"
            )
        symbols = metadata.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise TapeError(f"{metadata_path}: 'symbols' must be a list of strings")
        self.metadata: dict[str, Any] = metadata
        self.symbols: list[str] = symbols
        for name in TAPE_TABLES:
            file = self.path / table_file(name)
            if file.exists():
                try:
                    schema = pq.read_schema(file)
                except (OSError, pa.ArrowInvalid) as error:
                    raise TapeError(f"{file}: unreadable Parquet file: {error}") from error
                _check_schema(self.path, name, schema)

    def read_table(self, name: str, symbols: Sequence[str] | None = None) -> pa.Table:
        """One tape table in stored order, all symbols or only `symbols` (filtered while reading,
        so a partition per symbol does not read the others' rows); a missing table is empty."""
        if name not in TAPE_TABLES:
            raise TapeError(
                f"{self.path}: unknown tape table {name!r}; tables: {list(TAPE_TABLES)}"
            )
        file = self.path / table_file(name)
        if not file.exists():
            return TAPE_TABLES[name].empty_table()
        row_filter = None
        if symbols is not None and set(symbols) != set(self.symbols):
            row_filter = [("symbol", "in", list(symbols))]
        try:
            return pq.read_table(file, read_dictionary=["symbol"], filters=row_filter)
        except (OSError, pa.ArrowInvalid) as error:
            raise TapeError(f"{file}: unreadable Parquet file: {error}") from error

    def iter_chunks(
        self,
        batch_rows: int,
        batch_duration_ns: int,
        symbols: Sequence[str] | None = None,
    ) -> Iterator[MarketChunk]:
        """Yield chunks symbol by symbol (tape order), each covering a consecutive ts_recv range.

        A chunk holds at most `batch_rows` trades and spans less than `batch_duration_ns` of
        ts_recv, together with the book and quote rows of the same ts_recv range. It starts at
        the earliest unread row of any table, so gaps make no empty chunks. `sequence` counts
        from 0 per symbol and the last chunk of a symbol has `end_of_stream=True` (a symbol
        without rows gives one empty such chunk).

        Tables are stored in arrival order, so ts_recv should not decrease within a symbol. If it
        does, row order wins: rows are never reordered and the ranges are computed on the running
        maximum of ts_recv, so a late row travels with the rows stored around it.
        """
        if batch_rows < 1 or batch_duration_ns < 1:
            raise ValueError(
                f"iter_chunks({self.path}): batch_rows and batch_duration_ns must be >= 1, "
                f"got {batch_rows} and {batch_duration_ns}"
            )
        wanted = list(self.symbols if symbols is None else symbols)
        unknown = [symbol for symbol in wanted if symbol not in self.symbols]
        if unknown:
            raise TapeError(f"{self.path}: symbols {unknown} not in tape; it has {self.symbols}")
        files = {name: self.path / table_file(name) for name in TAPE_TABLES}
        for symbol in wanted:
            try:
                yield from stream_symbol(
                    symbol, files, TAPE_TABLES, self.symbols, batch_rows, batch_duration_ns
                )
            except (OSError, ValueError, pa.ArrowException) as error:
                raise TapeError(f"{self.path}: cannot read symbol {symbol}: {error}") from error


def capture_to_tape(
    capture_paths: list[Path],
    out: Path,
    symbol_hint: str | None = None,
    *,
    overwrite: bool = False,
    venue: str | None = None,
) -> dict[str, Any]:
    """Parse raw capture files (in order, as one stream) into a tape at `out`: the project's
    Binance captures, or cryptofeed captures of Binance, Coinbase, OKX or Kraken (`venue`, or
    the venue in a cryptofeed file's name).

    Dead letters are not written into the tape: they are returned in the summary (list under
    "dead_letters", counts by reason under "dead_letter_reasons").
    """
    from dataflows.venues import parse_captures  # storage stays importable without dataflows

    dead_letters: list[DeadLetter] = []
    names = [Path(path).name for path in capture_paths]
    with TapeWriter(
        out,
        synthetic=False,
        source=", ".join(names),
        extra_metadata={"capture_files": names, "symbol_hint": symbol_hint},
        overwrite=overwrite,
    ) as writer:
        paths = [Path(path) for path in capture_paths]
        for chunks, letters in parse_captures(paths, venue, symbol_hint):
            dead_letters.extend(letters)
            for chunk in chunks:
                dead_letters.extend(chunk.dead_letters)
                writer.write_chunk(chunk)
        writer.extra_metadata["dead_letters"] = len(dead_letters)
    return {
        "path": str(out),
        "capture_files": names,
        "symbols": list(writer.symbols),
        "rows": dict(writer.rows),
        "dead_letter_count": len(dead_letters),
        "dead_letter_reasons": dict(Counter(letter.reason for letter in dead_letters)),
        "dead_letters": dead_letters,
    }
