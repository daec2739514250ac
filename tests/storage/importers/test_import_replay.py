"""An imported Binance public-data tape replays through the whole pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from importer_inputs import binance_trade_lines, table_columns, write_lines

from engine.config import load_config
from engine.runtime import SAMPLE_CONFIG, run_replay
from storage.importers import import_binance_public
from storage.journal import read_table

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def test_an_imported_trades_tape_replays(tmp_path: Path, spot_capture_tape: Path) -> None:
    trades = table_columns(spot_capture_tape, "trades")
    source = write_lines(tmp_path / "BTCUSDT-trades-2024-08-08",
                         binance_trade_lines(trades, "spot", "us"), "zip")
    imported = import_binance_public([source], tmp_path / "tape")

    result = run_replay([imported.path], load_config(SAMPLE_CONFIG), tmp_path / "journal.duckdb",
                        1)
    summary = result.summary
    assert summary["symbols"] == ["BTCUSDT"]
    assert summary["events"] == imported.rows["trades"] == 19_904
    assert summary["dead_letters"] == 0
    assert summary["bars"] > 600  # 11 minutes of 1-second bars (and the 1-minute trend)
    assert len(read_table(result.journal_path, "features")) > 0
    runs = read_table(result.journal_path, "runs", deterministic_only=True)
    assert len(runs) == 1 and "replay" in runs[0]
