"""Block reader: line numbers stay physical across blocks, bad values cost only their row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from importer_inputs import binance_trade_lines, table_columns, take, write_lines

from storage.importers.csv_blocks import ImportFormatError, iter_blocks, read_first_line

NAMES = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match")
TYPES = {"id": pa.int64(), "price": pa.float64(), "time": pa.int64(),
         "is_buyer_maker": pa.bool_()}


def _read(path: Path, block_bytes: int, header: bool = False
          ) -> tuple[list[int], dict[str, list], list[tuple[int, str]], list[int]]:
    """Lines of the parsed rows, their columns, the skipped rows and the unparsable rows."""
    lines: list[int] = []
    columns: dict[str, list] = {name: [] for name in TYPES}
    skipped: list[tuple[int, str]] = []
    unparsable: list[int] = []
    for block in iter_blocks(path, NAMES, TYPES, skip_header=header, block_bytes=block_bytes):
        lines.extend(block.line_of(row) for row in range(len(block)))
        for name in TYPES:
            columns[name].extend(block.table.column(name).to_pylist())
        skipped.extend(block.skipped)
        bad = np.zeros(len(block), dtype=bool)
        for mask in block.unparsable.values():
            bad |= mask
        unparsable.extend(block.line_of(int(row)) for row in np.flatnonzero(bad))
    return lines, columns, skipped, unparsable


@pytest.mark.parametrize("block_bytes", [97, 1000, 1 << 20])
@pytest.mark.parametrize("container", ["csv", "gz", "zip"])
def test_rows_and_line_numbers_do_not_depend_on_blocks(
    tmp_path: Path, spot_capture_tape: Path, block_bytes: int, container: str
) -> None:
    trades = take(table_columns(spot_capture_tape, "trades"), slice(0, 400))
    lines = binance_trade_lines(trades, "spot", "ms")
    lines[9] = lines[9] + ",9"  # a wrong field count
    lines[19] = lines[19].replace(lines[19].split(",")[1], "x1", 1)  # an unparsable price
    lines[29] = ""  # a blank line: a row of nulls
    lines[399] = lines[399] + "\r"  # CRLF on the last line, which has no newline either
    text = "\ufeff" + "\n".join(lines)
    path = write_lines(tmp_path / "trades", [text], container)

    found_lines, columns, skipped, unparsable = _read(path, block_bytes)
    assert found_lines == [line for line in range(1, 401) if line != 10]
    assert skipped == [(10, lines[9])]
    assert unparsable == [20]
    kept = np.array([row for row in range(400) if row != 9])
    expected_ids = trades["trade_id"][kept].tolist()
    expected_ids[28] = None  # the blank line (line 30) after the skipped row
    assert columns["id"] == expected_ids
    prices = trades["price"][kept].tolist()
    prices[18], prices[28] = None, None
    assert columns["price"] == prices
    assert columns["time"][-1] == trades["ts_event"][-1] // 1_000_000


def test_a_header_line_is_skipped_and_counted(tmp_path: Path, spot_capture_tape: Path) -> None:
    trades = take(table_columns(spot_capture_tape, "trades"), slice(0, 50))
    path = write_lines(tmp_path / "trades", [",".join(NAMES),
                                             *binance_trade_lines(trades, "spot", "ms")], "gz")
    assert read_first_line(path) == ",".join(NAMES)
    found_lines, columns, _, _ = _read(path, 200, header=True)
    assert found_lines == list(range(2, 52))
    assert columns["id"] == trades["trade_id"].tolist()


def test_first_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"  \n\n")
    with pytest.raises(ImportFormatError, match=r"empty\.csv: empty file"):
        read_first_line(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("pr\xe9cis,1\n".encode("latin-1"))
    with pytest.raises(ImportFormatError, match=r"latin\.csv: not a text CSV file"):
        read_first_line(latin)
    with pytest.raises(ImportFormatError, match="no such file"):
        read_first_line(tmp_path / "missing.csv")
