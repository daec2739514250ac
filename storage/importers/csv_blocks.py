"""Large CSV files (plain, gzip or a zip holding one file) read as blocks of whole lines.

Procedure:
- Compression is detected from the first bytes, not the name: `PK\\x03\\x04` is a zip archive
  (it must hold exactly one file), `\\x1f\\x8b` is gzip, anything else is plain text.
- The decompressed bytes are read `BLOCK_BYTES` at a time and cut after the last newline, so a
  block holds whole lines and the number of the first line of every block is known.
- Each block is parsed by `pyarrow.csv.read_csv` with explicit column types (the fast path, one
  call per block, single-threaded, no Python object per row). A header line of the column names
  is put in front of every block: with it (and one thread) pyarrow reports the physical row
  number of a row whose field count is wrong, and such rows are set aside with their line
  numbers instead of failing the block.
- A value that does not convert makes pyarrow reject the whole block. The block is then parsed
  again with every column as text and each column converted on its own: values that do not parse
  become null and are flagged, so one bad value costs only its row.
- Empty values are null. Blank lines are rows of nulls (so they count as lines and are reported).

Line numbers are physical, 1-based, counting a header line if the file has one. A read error of
the compressed data (truncated gzip, bad zip CRC) raises `ImportFormatError` naming the file and
the last line read.
"""

from __future__ import annotations

import gzip
import zipfile
import zlib
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

BLOCK_BYTES = 16 << 20
PAYLOAD_LIMIT = 2000
TRUE_VALUES = ["true", "True", "TRUE"]
FALSE_VALUES = ["false", "False", "FALSE"]
_FLOAT_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?(nan|inf|infinity)$"
_INT_PATTERN = r"^-?[0-9]+$"
_READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile)


class ImportFormatError(ValueError):
    """A file cannot be imported at all; the message names the file and what was expected."""


def _open_zip_member(path: Path) -> IO[bytes]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ImportFormatError(
            f"{path.name}: not a readable zip archive ({error}); expected a zip holding one CSV"
        ) from None
    members = [info for info in archive.infolist() if not info.is_dir()]
    if len(members) != 1:
        names = [info.filename for info in members]
        archive.close()
        raise ImportFormatError(
            f"{path.name}: zip archive holds {len(members)} files {names}; expected exactly one CSV"
        )
    try:
        return archive.open(members[0])
    except (zipfile.BadZipFile, OSError, NotImplementedError) as error:
        archive.close()
        raise ImportFormatError(
            f"{path.name}: cannot open {members[0].filename}: {error}"
        ) from None


def open_decompressed(path: Path) -> tuple[IO[bytes], str]:
    """The file's decompressed bytes as a stream, and the compression found ("zip", "gzip",
    "none"). Raises `ImportFormatError` for a missing file or an unreadable archive."""
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic.startswith(b"PK\x03\x04") or magic.startswith(b"PK\x05\x06"):
        return _open_zip_member(path), "zip"
    if magic.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.open(path, "rb")), "gzip"
    return open(path, "rb"), "none"


def read_first_line(path: Path) -> str:
    """The first line of the decompressed file as text (UTF-8, byte-order mark removed).

    Raises `ImportFormatError` for an empty file or one that is not text.
    """
    stream, compression = open_decompressed(path)
    try:
        with stream:
            start = stream.read(64 * 1024)
    except _READ_ERRORS as error:
        raise ImportFormatError(f"{path.name}: cannot read {compression} data: {error}") from None
    if not start.strip():
        raise ImportFormatError(f"{path.name}: empty file; expected CSV rows")
    line = start.split(b"\n", 1)[0].rstrip(b"\r")
    if b"\x00" in start or (b"\n" not in start and len(start) == 64 * 1024):
        raise ImportFormatError(f"{path.name}: not a text CSV file (binary data or no line ends)")
    try:
        return line.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise ImportFormatError(f"{path.name}: not a text CSV file (line 1 is not UTF-8)") from None


class CsvBlock:
    """Consecutive rows of one file, parsed: typed columns plus what went wrong where.

    `table` has the requested columns; a value that was missing or did not convert is null, and
    `unparsable[column]` marks the latter. `skipped` holds (line, text) of rows whose field count
    was wrong: they are not in `table`.
    """

    def __init__(self, table: pa.Table, first_line: int, raw: memoryview,
                 skipped_lines: list[int], skipped_text: list[str],
                 unparsable: dict[str, np.ndarray]) -> None:
        self.table = table
        self.first_line = first_line
        self.raw = raw
        self.skipped = list(zip(
            [first_line + line - 1 for line in skipped_lines], skipped_text, strict=True
        ))
        self._skipped_in_block = sorted(skipped_lines)
        self.unparsable = unparsable
        self._line_ends: np.ndarray | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def line_of(self, row: int) -> int:
        """Physical line number of parsed row `row`."""
        # The (row + 1)-th in-block line that was not skipped: a fixed point, reached in a few
        # steps however many rows were skipped.
        line = row + 1
        while True:
            moved = row + 1 + bisect_right(self._skipped_in_block, line)
            if moved == line:
                return self.first_line + line - 1
            line = moved

    def text_of(self, row: int) -> str:
        """The raw text of parsed row `row`, truncated for a dead-letter payload."""
        if self._line_ends is None:
            self._line_ends = np.flatnonzero(np.frombuffer(self.raw, dtype=np.uint8) == 10)
        index = self.line_of(row) - self.first_line
        start = int(self._line_ends[index - 1]) + 1 if index > 0 else 0
        end = int(self._line_ends[index]) if index < len(self._line_ends) else len(self.raw)
        text = bytes(self.raw[start:end]).rstrip(b"\r")
        return text[: PAYLOAD_LIMIT * 4].decode("utf-8", "replace")[:PAYLOAD_LIMIT]


def _header_line(names: Sequence[str]) -> bytes:
    return (",".join(names) + "\n").encode()


def _parse(data: memoryview, names: Sequence[str], types: dict[str, pa.DataType]
           ) -> tuple[pa.Table, list[int], list[str]]:
    """One read_csv call over `data` (a header line, then the block's lines); returns the table
    and the in-block line numbers and texts of the rows skipped for a wrong field count."""
    skipped_lines: list[int] = []
    skipped_text: list[str] = []

    def on_invalid_row(row: pa_csv.InvalidRow) -> str:
        # Row numbers count the header line put in front of the block.
        skipped_lines.append((row.number or 0) - 1)
        skipped_text.append(row.text[:PAYLOAD_LIMIT])
        return "skip"

    table = pa_csv.read_csv(
        pa.BufferReader(pa.py_buffer(data)),
        # Single-threaded: only then does pyarrow report a skipped row's number (and on two
        # cores it measured faster: 65 ms against 93 ms for a 16 MB block).
        read_options=pa_csv.ReadOptions(use_threads=False),
        parse_options=pa_csv.ParseOptions(
            invalid_row_handler=on_invalid_row, ignore_empty_lines=False
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=types, include_columns=list(types), null_values=[""],
            strings_can_be_null=True, true_values=TRUE_VALUES, false_values=FALSE_VALUES,
        ),
    )
    return table, skipped_lines, skipped_text


def convert_text(column: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """A text column converted to `target`; returns the values (null where missing or bad) and a
    mask of the values that were present but did not convert."""
    text = column.combine_chunks()
    present = pc.is_valid(text)
    if pa.types.is_string(target):
        return text, np.zeros(len(text), dtype=bool)
    if pa.types.is_boolean(target):
        valid = pc.is_in(text, pa.array(TRUE_VALUES + FALSE_VALUES))
        converted = pc.is_in(pc.if_else(valid, text, None), pa.array(TRUE_VALUES))
        converted = pc.if_else(valid, converted, None)
    else:
        pattern = _FLOAT_PATTERN if pa.types.is_floating(target) else _INT_PATTERN
        valid = pc.match_substring_regex(text, pattern, ignore_case=True)
        kept = pc.if_else(valid, text, None)
        try:
            converted = pc.cast(kept, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. an integer overflowing
            values = []
            for value in kept.to_pylist():
                try:
                    values.append(None if value is None else int(value))
                    if values[-1] is not None and not -(2**63) <= values[-1] < 2**63:
                        values[-1] = None
                except ValueError:
                    values.append(None)
            converted = pa.array(values, type=target)
            valid = pc.is_valid(converted)
    bad = pc.and_(present, pc.invert(pc.fill_null(valid, False)))
    return converted, bad.to_numpy(zero_copy_only=False)


def parse_block(data: memoryview, header_bytes: int, first_line: int, names: Sequence[str],
                types: dict[str, pa.DataType], source: str) -> CsvBlock:
    """Parse `data`: the header line of `names` (`header_bytes` long), then whole lines of the
    file starting at physical line `first_line`, into a `CsvBlock`."""
    raw = data[header_bytes:]
    try:
        table, skipped_lines, skipped_text = _parse(data, names, types)
        unparsable = {name: np.zeros(table.num_rows, dtype=bool) for name in types}
        return CsvBlock(table, first_line, raw, skipped_lines, skipped_text, unparsable)
    except pa.ArrowInvalid:
        pass  # a value did not convert: take the block as text and convert column by column
    text_types = {name: pa.string() for name in types}
    try:
        text_table, skipped_lines, skipped_text = _parse(data, names, text_types)
    except pa.ArrowInvalid as error:
        last = first_line + bytes(raw).count(b"\n") - 1
        raise ImportFormatError(
            f"{source}: lines {first_line}-{last} cannot be parsed as CSV: {error}"
        ) from None
    columns, unparsable = {}, {}
    for name, target in types.items():
        columns[name], unparsable[name] = convert_text(text_table.column(name), target)
    table = pa.table(columns)
    return CsvBlock(table, first_line, raw, skipped_lines, skipped_text, unparsable)


def iter_blocks(path: Path, names: Sequence[str], types: dict[str, pa.DataType], *,
                skip_header: bool, block_bytes: int = BLOCK_BYTES) -> Iterator[CsvBlock]:
    """Parse a CSV file block by block; `names` are all its columns in order, `types` those to
    keep with their types. With `skip_header` the first line is a header and is not parsed."""
    stream, compression = open_decompressed(path)
    header = _header_line(names)
    line = 1

    def read() -> bytes:
        try:
            return stream.read(block_bytes)
        except _READ_ERRORS as error:
            raise ImportFormatError(
                f"{path.name}: cannot read {compression} data after line {line - 1}: {error}"
            ) from None

    with stream:
        pending = read().removeprefix(b"\xef\xbb\xbf")
        if skip_header:
            while b"\n" not in pending:
                data = read()
                if not data:
                    break
                pending += data
            pending = pending.partition(b"\n")[2]
            line = 2
        while True:
            more = read()
            buffer = bytearray(header)
            buffer += pending
            buffer += more
            cut = buffer.rfind(b"\n", len(header)) + 1 if more else len(buffer)
            pending = bytes(buffer[cut:]) if more else b""
            if cut > len(header):
                del buffer[cut:]
                if not buffer.endswith(b"\n"):
                    buffer += b"\n"
                lines = buffer.count(b"\n") - 1
                yield parse_block(memoryview(buffer), len(header), line, names, types,
                                  path.name)
                line += lines
            if not more:
                return


def present_ints(table: pa.Table, name: str) -> np.ndarray:
    """An int64 column as NumPy, nulls as 0 (callers flag nulls themselves)."""
    return table.column(name).fill_null(0).to_numpy().astype(np.int64, copy=False)


def present_floats(table: pa.Table, name: str) -> np.ndarray:
    """A float64 column as NumPy, nulls as NaN."""
    return table.column(name).to_numpy().astype(np.float64, copy=False)


def present_bools(table: pa.Table, name: str) -> np.ndarray:
    """A boolean column as NumPy, nulls as False."""
    return table.column(name).fill_null(False).to_numpy().astype(bool, copy=False)


def null_mask(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).is_null().to_numpy(zero_copy_only=False)
