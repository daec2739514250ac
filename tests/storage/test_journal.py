from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pytest

from storage.journal import JournalError, JournalWriter, export_parquet, read_table, table_counts


def _fill(key: str, price: float) -> dict[str, object]:
    return {"key": key, "ts_event": 1, "symbol": "BTCUSDT", "order_id": "o1", "side": 1,
            "quantity": 0.5, "price": price, "reference_price": price, "fee": 0.1,
            "liquidity": "taker", "slippage_bps": math.nan, "latency_ms": 50.0}


def test_appends_are_idempotent_by_key(tmp_path: Path) -> None:
    path = tmp_path / "journal.duckdb"
    with JournalWriter(path, "run-1") as writer:
        writer.append("fills", [_fill("f1", 100.0), _fill("f2", 101.0)])
        writer.flush()
        writer.append("fills", [_fill("f1", 999.0), _fill("f3", 102.0)])  # f1 replayed
    rows = read_table(path, "fills")
    assert [row[0] for row in rows] == ["f1", "f2", "f3"]
    assert rows[0][7] == 100.0  # the first write of a key wins
    assert table_counts(path)["fills"] == 3


def test_nan_is_stored_as_null(tmp_path: Path) -> None:
    path = tmp_path / "journal.duckdb"
    with JournalWriter(path, "run-1") as writer:
        writer.append("fills", [_fill("f1", 100.0)])
    with duckdb.connect(str(path), read_only=True) as connection:
        value = connection.execute("SELECT slippage_bps FROM fills").fetchone()
    assert value == (None,)


def test_bad_rows_name_table_and_column(tmp_path: Path) -> None:
    with JournalWriter(tmp_path / "journal.duckdb", "run-1") as writer:
        with pytest.raises(JournalError, match="unknown journal table 'fill'"):
            writer.append("fill", [{"key": "x"}])
        with pytest.raises(JournalError, match=r"fills: unknown columns \['colour'\]"):
            writer.append("fills", [{**_fill("f1", 1.0), "colour": "red"}])
        with pytest.raises(JournalError, match="no stable 'key'"):
            writer.append("fills", [{"price": 1.0}])
        with pytest.raises(JournalError, match="fills: rows do not fit schema"):
            writer.append("fills", [{**_fill("f1", 1.0), "price": "not a number"}])
        writer.append("fills", [_fill("f2", 1.0)])
    assert table_counts(tmp_path / "journal.duckdb")["fills"] == 1


def test_export_parquet_writes_every_table(tmp_path: Path) -> None:
    path = tmp_path / "journal.duckdb"
    with JournalWriter(path, "run-1") as writer:
        writer.append("fills", [_fill("f2", 1.0), _fill("f1", 2.0)])
    written = export_parquet(path, tmp_path / "parquet")
    names = {file.stem for file in written}
    assert {"fills", "signals", "risk_decisions", "runs", "dead_letters"} <= names
    import pyarrow.parquet as pq

    fills = pq.read_table(tmp_path / "parquet" / "fills.parquet")
    assert fills.column("key").to_pylist() == ["f1", "f2"]
