"""`ats journal`: read-only SQL, exports (CSV, Parquet, tax CSV) and the diff of two journals of
the same stream, on replays of the bundled klines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.config import EmaCrossConfig, RunConfig, load_config
from engine.runtime import REPO_ROOT, run_replay
from storage.journal_tools import TAX_COLUMNS, diff, query, split_symbol
from tests.support.kline_tape import kline_tape

pytestmark = pytest.mark.slow


def _config(slow_period: int = 20) -> RunConfig:
    config = load_config(REPO_ROOT / "configs" / "ema_cross.yaml")
    assert isinstance(config.strategy, EmaCrossConfig)
    return config.model_copy(update={"strategy": config.strategy.model_copy(
        update={"slow_period": slow_period})})


@pytest.fixture(scope="module")
def journals(tmp_path_factory: pytest.TempPathFactory, klines_csv: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("journals")
    tape = kline_tape(klines_csv, root / "tape", minutes=3 * 1440)
    return {name: run_replay([tape], config, root / f"{name}.duckdb", in_process=True
                             ).journal_path
            for name, config in (("a", _config()), ("again", _config()), ("b", _config(21)))}


def test_sql_is_read_only_and_errors_name_the_journal(journals: dict[str, Path]) -> None:
    names, rows = query(journals["a"], "SELECT count(*) AS fills FROM fills")
    assert names == ["fills"] and rows[0][0] > 10
    with pytest.raises(ValueError, match=r"a\.duckdb"):
        query(journals["a"], "DELETE FROM fills")
    assert query(journals["a"], "SELECT count(*) FROM fills")[1] == rows
    with pytest.raises(FileNotFoundError, match="no such journal"):
        query(journals["a"].with_name("missing.duckdb"), "SELECT 1")


def test_exports_write_every_table_and_a_tax_csv(journals: dict[str, Path],
                                                 tmp_path: Path) -> None:
    assert main(["journal", "export", str(journals["a"]), "--format", "parquet", "--out",
                 str(tmp_path / "parquet")]) == 0
    fills = pq.read_table(tmp_path / "parquet" / "fills.parquet")
    with duckdb.connect(str(journals["a"]), read_only=True) as connection:
        count, fees = connection.execute("SELECT count(*), sum(fee) FROM fills").fetchone()  # type: ignore[misc]
    assert fills.num_rows == count
    assert main(["journal", "export", str(journals["a"]), "--out", str(tmp_path / "csv")]) == 0
    assert (tmp_path / "csv" / "signals.csv").read_text().startswith("key,run_id,symbol")
    assert main(["journal", "export", str(journals["a"]), "--format", "tax", "--out",
                 str(tmp_path / "tax")]) == 0
    with (tmp_path / "tax" / "tax.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == TAX_COLUMNS and len(rows) == count
    assert {row["type"] for row in rows} == {"buy", "sell"}
    assert {(row["asset"], row["currency"]) for row in rows} == {("BTC", "USDT")}
    assert rows[0]["date"].endswith("Z") and rows[0]["date"][:2] == "20"
    assert sum(float(row["fee"]) for row in rows) == pytest.approx(fees)


def test_a_replay_against_itself_has_no_differences(journals: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    report = diff(journals["a"], journals["again"])
    assert report["identical"] and report["first_difference_ts"] is None
    assert report["tables"]["fills"]["matched"] > 10
    assert main(["journal", "diff", str(journals["a"]), str(journals["again"])]) == 0
    assert capsys.readouterr().out.startswith("identical")


def test_a_one_parameter_change_shows_the_changed_fills(journals: dict[str, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    report = diff(journals["a"], journals["b"])  # slow EMA 20 against 21
    fills = report["tables"]["fills"]
    assert not report["identical"]
    assert fills["only_a"] and fills["only_b"]  # crossings moved: fills at other times
    assert report["pnl"]["realized_pnl"]["difference"] != 0
    first = min(row[1] for row in fills["only_a"] + fills["only_b"])
    assert report["first_difference_ts"] <= first
    assert main(["journal", "diff", str(journals["a"]), str(journals["b"]), "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["tables"]["fills"]["matched"] == fills["matched"]


def test_symbols_split_into_base_and_quote() -> None:
    assert split_symbol("BTCUSDT") == ("BTC", "USDT")
    assert split_symbol("ETHBTC") == ("ETH", "BTC")
    assert split_symbol("BTC-USD-SWAP") == ("BTC", "USD")
    with pytest.raises(ValueError, match="XYZ"):
        split_symbol("XYZ")


def test_the_report_prints_the_performance_metrics(journals: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(journals["a"])]) == 0
    printed = capsys.readouterr().out
    for label in ("Sharpe (daily, x sqrt 365)", "Sortino", "profit factor", "information ratio",
                  "equal-weighted buy-and-hold of BTCUSDT"):
        assert label in printed
