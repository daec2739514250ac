from __future__ import annotations

import json

import numpy as np

from engine.batches import BAR_FIELDS, BarColumns
from engine.feature_rows import feature_rows
from storage.schemas import JOURNAL_TABLES


def test_rows_fit_the_features_table_and_keep_indicators() -> None:
    columns = {name: np.array([1.0, 2.0]) for name in BAR_FIELDS}
    columns["ts_open"] = np.array([0, 60], dtype=np.int64)
    columns["ts_close"] = np.array([60, 120], dtype=np.int64)
    columns["trade_count"] = np.array([3, 4], dtype=np.int64)
    columns["spread"] = np.array([np.nan, 0.01])
    columns["ema_10"] = np.array([np.nan, 101.5])
    rows = feature_rows("BTCUSDT", BarColumns("1m", columns))
    assert [row["key"] for row in rows] == ["BTCUSDT:1m:60", "BTCUSDT:1m:120"]
    assert rows[0]["spread"] is None and rows[1]["spread"] == 0.01
    assert json.loads(rows[0]["indicators"]) == {"ema_10": None}
    assert json.loads(rows[1]["indicators"]) == {"ema_10": 101.5}
    allowed = set(JOURNAL_TABLES["features"].names)
    assert all(set(row) <= allowed for row in rows)
