from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import build_parser, main
from storage.tape import TapeReader


def test_replay_of_a_missing_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.gz"
    assert main(["replay", "--tape", str(missing), "--no-progress"]) == 2
    assert f"replay input {missing} does not exist" in capsys.readouterr().err


def test_a_bad_config_names_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("risk:\n  max_leverage: -1\n")
    assert main(["replay", "--config", str(config), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "bad.yaml" in error and "risk.max_leverage" in error


def test_synth_from_bars_writes_a_synthetic_tape(
    tmp_path: Path, klines_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tape"
    code = main(["synth", "from-bars", "--bars", str(klines_csv), "--out", str(out),
                 "--minutes", "5", "--seed", "3"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    reader = TapeReader(out)
    assert reader.metadata["synthetic"] is True
    assert summary["trades"] == reader.metadata["rows"]["trades"] > 0


def test_import_klines_writes_bars(tmp_path: Path, klines_csv: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "bars.parquet"
    assert main(["import", "klines", "--csv", str(klines_csv), "--out", str(out)]) == 0
    bars = pq.read_table(out)
    assert bars.num_rows == 41_761
    assert set(bars.column("timeframe").to_pylist()) == {"1m"}
    assert bars.column("close").to_pylist()[0] == 96440.0


def test_import_klines_of_a_bad_file_names_the_line(
    tmp_path: Path, klines_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = klines_csv.read_text().splitlines()[:5]
    lines[3] = lines[3].replace(lines[3].split(",")[1], "oops", 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    assert main(["import", "klines", "--csv", str(bad), "--out", str(tmp_path / "b.parquet")]) == 2
    error = capsys.readouterr().err
    assert "bad.csv" in error and "line 4" in error


def _real_trades(capture: Path, count: int) -> list[dict]:
    """The first `count` trade frames of a real capture."""
    import gzip

    trades = []
    with gzip.open(capture, "rt") as handle:
        for line in handle:
            if "@trade" in line[:80]:
                trades.append(json.loads(line.partition(" ")[2])["data"])
                if len(trades) == count:
                    return trades
    return trades


def test_import_binance_and_tardis_print_a_json_summary(
    tmp_path: Path, spot_captures: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    trades = _real_trades(spot_captures[0], 40)
    binance = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    binance.write_text("".join(
        f"{t['t']},{t['p']},{t['q']},0,{t['T']},{t['m']},True\n" for t in trades))
    assert main(["import", "binance", str(binance), "--out", str(tmp_path / "b")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"]["trades"] == 40 and summary["symbols"] == ["BTCUSDT"]
    assert summary["dead_letter_count"] == 0 and summary["files"][0]["time_unit"] == "ms"

    tardis = tmp_path / "binance_trades.csv"
    tardis.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n" + "".join(
        f"binance,BTCUSDT,{t['T']}000,{t['E']}000,{t['t']},{'sell' if t['m'] else 'buy'},"
        f"{t['p']},{'nan' if i == 3 else t['q']}\n" for i, t in enumerate(trades)))
    assert main(["import", "tardis", str(tardis), "--out", str(tmp_path / "t")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"]["trades"] == 39 and summary["dead_letter_count"] == 1
    assert summary["dead_letters"][0]["source"] == "binance_trades.csv:line 5"

    bad = tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv"
    bad.write_text("1,2,3\n")
    assert main(["import", "binance", str(bad), "--out", str(tmp_path / "c")]) == 2
    error = capsys.readouterr().err
    assert "BTCUSDT-aggTrades-2024-08-08.csv" in error and "unknown layout" in error
    assert not (tmp_path / "c").exists()


def test_every_documented_command_parses() -> None:
    parser = build_parser()
    for argv in (
        ["replay"],
        ["replay", "--tape", "a.gz", "--tape", "b.gz", "--config", "c.yaml", "--journal", "j",
         "--workers", "2", "--metrics-port", "0", "--dashboard"],
        ["synth", "from-bars", "--bars", "x.csv", "--out", "t", "--minutes", "1440"],
        ["import", "capture", "a.gz", "--out", "t"],
        ["import", "klines", "--csv", "k.csv", "--out", "bars.parquet"],
        ["import", "binance", "BTCUSDT-trades-2024-08-08.zip", "b.csv", "--out", "t",
         "--symbol", "BTCUSDT", "--market", "spot", "--kind", "trades"],
        ["import", "tardis", "trades.csv.gz", "book.csv.gz", "--out", "t"],
        ["report", "journal.duckdb"],
        ["bench", "replay", "--tape", "t", "--strategy", "ema_cross"],
    ):
        assert parser.parse_args(argv).handler is not None
