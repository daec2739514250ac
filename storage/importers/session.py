"""One import run: the tape being written, the dead-letter report, and the checks of bad rows.

The dead-letter report: every row an importer skips becomes a `DeadLetter` (stage, reason, detail
naming file, line and column, the raw line as payload). All of them are written, as they occur,
to a CSV (`dead_letters.csv`: file, line, stage, reason, detail, symbol, payload) that ends up in
the tape directory beside `tape.json`; `tape.json` holds their count and the count per reason.
The importer returns the same counts and the first `DEAD_LETTERS_KEPT` letters in memory, so a
file full of bad rows cannot exhaust memory.

Atomicity: the tape is written by `storage.tape.TapeWriter` into a temporary directory; a failed
import aborts it and removes the report, leaving nothing at the target.
"""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa

from engine.batches import DeadLetter, MarketChunk, TradeColumns
from storage.importers.csv_blocks import CsvBlock, null_mask
from storage.tape import TapeWriter

DEAD_LETTER_FILE = "dead_letters.csv"
DEAD_LETTER_COLUMNS = ("file", "line", "stage", "reason", "detail", "symbol", "payload")
DEAD_LETTERS_KEPT = 1000
SUMMARY_DEAD_LETTERS = 20


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote: the tape, its rows per table, per-file facts and the dead letters.

    `dead_letters` holds the first `DEAD_LETTERS_KEPT`; all `dead_letter_count` are in
    `dead_letter_file`.
    """

    path: Path
    symbols: list[str]
    rows: dict[str, int]
    files: list[dict[str, Any]]
    dead_letter_count: int
    dead_letter_reasons: dict[str, int]
    dead_letter_file: Path
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (what `ats import` prints), with the first dead letters."""
        return {
            "path": str(self.path),
            "symbols": self.symbols,
            "rows": self.rows,
            "files": self.files,
            "dead_letter_count": self.dead_letter_count,
            "dead_letter_reasons": self.dead_letter_reasons,
            "dead_letter_file": str(self.dead_letter_file),
            "dead_letters": [
                {"source": letter.source, "reason": letter.reason, "detail": letter.detail}
                for letter in self.dead_letters[:SUMMARY_DEAD_LETTERS]
            ],
        }


class DeadLetterLog:
    """Appends dead letters to a hidden CSV beside the target until `publish` moves it in."""

    def __init__(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self.temp = target.parent / f".{target.name}.dead-letters-{uuid.uuid4().hex}.csv"
        self._handle = open(self.temp, "x", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(DEAD_LETTER_COLUMNS)
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self.kept: list[DeadLetter] = []

    def add(self, file: str, line: int, letter: DeadLetter) -> None:
        self._writer.writerow(
            (file, line, letter.stage, letter.reason, letter.detail, letter.symbol or "",
             letter.payload)
        )
        self.count += 1
        self.reasons[letter.reason] += 1
        if len(self.kept) < DEAD_LETTERS_KEPT:
            self.kept.append(letter)

    def publish(self, destination: Path) -> None:
        self._handle.close()
        os.replace(self.temp, destination)

    def discard(self) -> None:
        self._handle.close()
        self.temp.unlink(missing_ok=True)


class RowChecks:
    """The problems found in one block's rows; a row with any problem becomes one dead letter.

    `columns` are the file's columns in order, so a problem can quote the field's raw text.
    """

    def __init__(self, block: CsvBlock, columns: Sequence[str], stage: str) -> None:
        self.block = block
        self.columns = list(columns)
        self.stage = stage
        self.bad = np.zeros(len(block), dtype=bool)
        self._problems: list[tuple[np.ndarray, str, str, str]] = []

    def require(self, names: Sequence[str], kinds: dict[str, str]) -> None:
        """Flag missing values and values that did not parse; `kinds` names what each column
        should hold ("a number", "an integer", "true or false")."""
        for name in names:
            unparsable = self.block.unparsable[name]
            missing = null_mask(self.block.table, name) & ~unparsable
            self.flag(missing, "missing_value", name, "is missing")
            self.flag(unparsable, "unparsable_value", name, f"is not {kinds[name]}")

    def flag(self, mask: np.ndarray, reason: str, column: str, what: str) -> None:
        """Rows where `mask` holds have a problem: column `column` `what` (e.g. "is negative")."""
        if mask.any():
            self._problems.append((mask, reason, column, what))
            self.bad |= mask

    def write(self, log: DeadLetterLog, file: str,
              symbols: str | pa.ChunkedArray | None = None) -> None:
        """Route every bad row (and every row with a wrong field count) to `log`, in line order;
        `symbols` is the file's symbol or each row's (a text column)."""
        letters: list[tuple[int, DeadLetter]] = []
        for line, text in self.block.skipped:
            detail = (f"{file}: line {line}: expected {len(self.columns)} fields "
                      f"({','.join(self.columns)}), found {text.count(',') + 1}; row skipped")
            symbol = symbols if isinstance(symbols, str) else None
            letters.append((line, DeadLetter(self.stage, "wrong_field_count", detail,
                                             f"{file}:line {line}", symbol, payload=text)))
        for row in np.flatnonzero(self.bad).tolist():
            line = self.block.line_of(row)
            text = self.block.text_of(row)
            fields = text.split(",")
            parts, reason = [], ""
            for mask, problem, column, what in self._problems:
                if mask[row]:
                    reason = reason or problem
                    position = self.columns.index(column)
                    shown = fields[position] if position < len(fields) else ""
                    parts.append(f"column {column!r} {shown!r} {what}")
            symbol = symbols if isinstance(symbols, str) or symbols is None else (
                symbols[row].as_py())
            detail = f"{file}: line {line}: " + "; ".join(parts) + "; row skipped"
            letters.append((line, DeadLetter(self.stage, reason, detail, f"{file}:line {line}",
                                             symbol.upper() if symbol else None, payload=text)))
        for line, letter in sorted(letters, key=lambda item: item[0]):
            log.add(file, line, letter)


class ImportSession:
    """Writes one tape and its dead-letter report; use as a context manager.

    Leaving the block normally publishes the tape (with `metadata` added to `tape.json`) and the
    report; an exception removes both and leaves the target untouched.
    """

    def __init__(self, out: Path, *, importer: str, files: Sequence[Path],
                 overwrite: bool = False) -> None:
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out}: already exists; choose another --out path")
        names = [path.name for path in files]
        self.out = out
        self.metadata: dict[str, Any] = {"importer": importer, "import_files": names}
        self.files: list[dict[str, Any]] = []
        self.writer = TapeWriter(out, synthetic=False, source=", ".join(names),
                                 overwrite=overwrite)
        try:
            self.log = DeadLetterLog(out)
        except BaseException:
            self.writer.abort()
            raise
        self._sequence: Counter[str] = Counter()
        self.result: ImportResult | None = None

    def __enter__(self) -> ImportSession:
        return self

    def write(self, symbol: str, **columns: Any) -> None:
        """Append one chunk of `symbol`: keyword arguments are `MarketChunk` column fields."""
        if not any(len(value) for value in columns.values()):
            return
        columns.setdefault("trades", TradeColumns.empty())
        self.writer.write_chunk(
            MarketChunk(symbol=symbol, sequence=self._sequence[symbol], **columns)
        )
        self._sequence[symbol] += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc_type is not None:
            self.writer.abort()
            self.log.discard()
            return
        try:
            self.writer.extra_metadata.update({
                **self.metadata,
                "files": self.files,
                "dead_letters": self.log.count,
                "dead_letter_reasons": dict(self.log.reasons),
                "dead_letter_file": DEAD_LETTER_FILE,
            })
            self.writer.close()
        except BaseException:
            self.log.discard()
            raise
        try:
            self.log.publish(self.out / DEAD_LETTER_FILE)
        except BaseException:
            shutil.rmtree(self.out, ignore_errors=True)  # a tape without its report: not kept
            self.log.discard()
            raise
        self.result = ImportResult(
            path=self.out, symbols=list(self.writer.symbols), rows=dict(self.writer.rows),
            files=self.files, dead_letter_count=self.log.count,
            dead_letter_reasons=dict(self.log.reasons),
            dead_letter_file=self.out / DEAD_LETTER_FILE, dead_letters=list(self.log.kept),
        )

    def finished(self) -> ImportResult:
        if self.result is None:
            raise RuntimeError(f"{self.out}: the import did not finish")
        return self.result
