"""Journal rows for the `features` table: the bars a strategy decided on, with its indicators.

Only the strategy's primary timeframe is journaled (a sample, not every 1-second bar), so a
user can see in DuckDB exactly what each decision saw.
"""

from __future__ import annotations

import json
import math
from typing import Any

from engine.batches import BAR_FIELDS, BarColumns, FeatureBatch


def _number(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def feature_rows(symbol: str, bars: BarColumns) -> list[dict[str, Any]]:
    """One row per bar: every bar field, plus indicator columns as a JSON object."""
    indicator_names = sorted(name for name in bars.columns if name not in BAR_FIELDS)
    as_lists = {name: values.tolist() for name, values in bars.columns.items()}
    rows = []
    for index in range(len(bars)):
        row: dict[str, Any] = {name: _number(as_lists[name][index]) for name in BAR_FIELDS}
        row["trade_count"] = int(row["trade_count"])
        row["key"] = f"{symbol}:{bars.timeframe}:{row['ts_close']}"
        row["symbol"] = symbol
        row["timeframe"] = bars.timeframe
        row["indicators"] = json.dumps(
            {name: _number(as_lists[name][index]) for name in indicator_names}, sort_keys=True
        )
        rows.append(row)
    return rows


def add_feature_rows(journal: dict[str, list[dict[str, Any]]], symbol: str,
                     batch: FeatureBatch | None, timeframe: str | None) -> None:
    """Append the `timeframe` bars of `batch` to a step's journal rows (nothing when None)."""
    if batch is None or timeframe is None or timeframe not in batch.bars:
        return
    bars = batch.bars[timeframe]
    if len(bars):
        journal.setdefault("features", []).extend(feature_rows(symbol, bars))
