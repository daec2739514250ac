"""End to end: real captures and tapes through the Bytewax features, Ray actors and the journal."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from engine.config import RunConfig, load_config, parse_config
from engine.runtime import SAMPLE_CONFIG, run_replay
from storage.journal import read_table
from storage.schemas import JOURNAL_TABLES
from tests.support.metrics import scrape
from tests.support.tapes import corrupted_capture, read_capture_lines, two_symbol_tape

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def _journal_tables(journal: Path) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: read_table(journal, table, deterministic_only=True)
        for table in JOURNAL_TABLES
        if table != "runs"
    }


def test_sample_replay_runs_the_whole_pipeline(tmp_path: Path, spot_captures: list[Path]) -> None:
    result = run_replay(None, None, tmp_path / "journal.duckdb", 1, metrics_port=0)
    summary = result.summary
    metrics = scrape(int(result.timings["metrics_port"]))
    assert metrics["ats_events_total"] == summary["events"]
    assert metrics["ats_bars_total"] == summary["bars"]
    assert metrics["ats_signals_total"] == summary["signals"] > 0
    assert metrics["ats_fills_total"] == summary["fills"] > 0
    assert metrics["ats_rejected_intents_total"] == summary["rejected_intents"]
    assert metrics["ats_dead_letters_total"] == summary["dead_letters"]
    assert metrics["ats_batch_latency_seconds_count"] >= 1
    lines = read_capture_lines(spot_captures)
    trades = sum(1 for line in lines if "@trade" in line[:80])
    assert summary["events"] > trades > 19_000
    assert summary["bars"] > 600  # one-second bars of 11 minutes, plus the longer ones
    assert summary["dead_letters"] == 0
    assert summary["symbols"] == ["BTCUSDT"]
    with duckdb.connect(str(result.journal_path), read_only=True) as connection:
        run = connection.execute("SELECT data_hash, config, mode FROM runs").fetchall()
        kinds = connection.execute("SELECT kind FROM book_events").fetchall()
    assert len(run) == 1 and len(run[0][0]) == 64 and run[0][2] == "replay"
    assert load_config(SAMPLE_CONFIG).model_dump_json() == run[0][1]
    assert ("synced",) in kinds and ("gap",) not in kinds


def _competing_config(batch_rows: int) -> RunConfig:
    """Two symbols, one position slot: who gets it depends on correct cross-symbol ordering."""
    return parse_config(
        {
            "name": "determinism",
            "timeframes": ["1m", "5m"],
            "strategy": {"kind": "ema_cross", "timeframe": "1m", "fast_period": 5,
                         "slow_period": 12, "quantity": 0.5},
            "risk": {"max_open_positions": 1},
            "replay": {"batch_rows": batch_rows, "batch_duration": "30m"},
        }
    )


def test_replays_are_deterministic_across_runs_and_workers(
    tmp_path: Path, klines_csv: Path
) -> None:
    tape = two_symbol_tape(klines_csv, tmp_path / "tape", minutes=240)
    config = _competing_config(batch_rows=40_000)
    results = [
        run_replay([tape], config, tmp_path / f"journal-{name}.duckdb", workers)
        for name, workers in (("a", 1), ("b", 1), ("c", 2))
    ]
    assert all(result.summary["pauses"] > 0 for result in results), "horizon never bound"
    journals = [result.journal_path for result in results]
    first = _journal_tables(journals[0])
    assert len(first["signals"]) > 20
    rejected = [row for row in first["risk_decisions"] if row[10] is False]
    assert rejected, "the single position slot should make some entries lose"
    assert {row[2] for row in first["risk_decisions"]} == {"BTCUSDT", "ETHUSDT"}
    for other in journals[1:]:
        assert _journal_tables(other) == first


def test_in_process_engine_journals_exactly_what_the_actors_journal(
    tmp_path: Path, klines_csv: Path
) -> None:
    tape = two_symbol_tape(klines_csv, tmp_path / "tape", minutes=240)
    config = _competing_config(batch_rows=40_000)
    on_ray = run_replay([tape], config, tmp_path / "ray.duckdb", 1)
    in_process = run_replay([tape], config, tmp_path / "local.duckdb", 1, in_process=True)
    assert "ray_start_s" not in in_process.timings
    assert in_process.summary["pauses"] > 0, "the horizon must bind in process too"
    local = _journal_tables(in_process.journal_path)
    assert len(local["risk_decisions"]) > 10
    assert local == _journal_tables(on_ray.journal_path)
    assert in_process.summary["portfolio"] == on_ray.summary["portfolio"]


def test_bad_input_completes_and_every_bad_row_is_journaled(
    tmp_path: Path, spot_captures: list[Path]
) -> None:
    capture = tmp_path / "corrupted.gz"
    injected = corrupted_capture(spot_captures, capture)
    result = run_replay(
        [capture], load_config(SAMPLE_CONFIG), tmp_path / "journal.duckdb", 1, metrics_port=0
    )
    reasons = result.summary["dead_letter_reasons"]
    metrics = scrape(int(result.timings["metrics_port"]))
    assert metrics["ats_dead_letters_total"] == result.summary["dead_letters"] >= 5
    assert metrics["ats_book_resyncs_total"] == 1
    for reason, count in injected.items():
        assert reasons.get(reason) == count, (reason, reasons)
    with duckdb.connect(str(result.journal_path), read_only=True) as connection:
        kinds = [row[0] for row in connection.execute(
            "SELECT kind FROM book_events ORDER BY ts_event, key"
        ).fetchall()]
        details = connection.execute(
            "SELECT detail, source FROM dead_letters WHERE reason = 'invalid_price'"
        ).fetchall()
    assert kinds.count("gap") == 1
    gap = kinds.index("gap")
    assert "synced" in kinds[:gap] and "synced" in kinds[gap:]
    assert all(detail and source for detail, source in details)


def test_capture_replay_is_identical_with_one_and_two_workers(tmp_path: Path) -> None:
    config = load_config(SAMPLE_CONFIG)
    journals = [
        run_replay(None, config, tmp_path / f"journal-{workers}.duckdb", workers).journal_path
        for workers in (1, 2)
    ]
    first = _journal_tables(journals[0])
    assert first["fills"] and first["features"] and first["book_events"]
    assert _journal_tables(journals[1]) == first


def test_a_failing_run_keeps_its_journal_and_stops_its_actors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    from actors.supervisor import Supervisor

    original = Supervisor.on_features
    seen: list[int] = []

    def fail_on_second_batch(self: Supervisor, batch: object) -> None:
        seen.append(1)
        if len(seen) == 2:
            raise RuntimeError("injected failure in the sink")
        original(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Supervisor, "on_features", fail_on_second_batch)
    journal = tmp_path / "journal.duckdb"
    with pytest.raises(Exception, match="injected failure"):
        run_replay(None, load_config(SAMPLE_CONFIG), journal, 1)
    with duckdb.connect(str(journal), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM book_events").fetchall()[0][0] >= 1
    names = {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
             if isinstance(actor, dict)}
    assert not any(name.startswith(("journal-sample", "risk-sample")) for name in names)


def test_an_imported_tape_replays_exactly_like_its_capture(
    tmp_path: Path, spot_captures: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main
    from storage.tape import capture_to_tape

    capture_to_tape(spot_captures, tmp_path / "tape")
    config = load_config(SAMPLE_CONFIG)
    from_capture = run_replay(spot_captures, config, tmp_path / "capture.duckdb", 1)
    from_tape = run_replay([tmp_path / "tape"], config, tmp_path / "tape.duckdb", 1)
    assert from_tape.summary["events"] == from_capture.summary["events"]
    assert _journal_tables(from_tape.journal_path) == _journal_tables(from_capture.journal_path)

    assert main(["report", str(from_tape.journal_path)]) == 0
    report = capsys.readouterr().out
    summary = from_tape.summary
    assert f"{summary['events']:,}" in report and f"{summary['bars']:,}" in report


@pytest.mark.parametrize("capture, symbols, has_trades, dead_letters", [
    # Coinbase's 2021 ticker carries no sizes: validation fails those quotes closed.
    ("COINBASE.ws.28.0", {"BANDGBP", "BANDBTC", "CRVEUR", "DASHBTC", "NMREUR", "NUGBP",
                          "SKLBTC", "SKLGBP", "SKLUSD", "YFIBTC"}, True, 107),
    ("KRAKEN.ws.50.0", None, False, 0),  # this capture subscribed to books only
    ("OKX.ws.1.0", {"BTCUSD-220527", "UNIUSD-SWAP", "BTCUSDT"}, True, 0),
])
def test_other_venues_replay_through_the_same_pipeline(
        tmp_path: Path, multi_venue_dir: Path, capture: str, symbols: set[str] | None,
        has_trades: bool, dead_letters: int) -> None:
    """A cryptofeed capture of another venue replays by its file name's venue, with the same
    normalized tape, book and bars as a Binance one, and nothing dead-lettered."""
    config = parse_config({"name": "venue", "timeframes": ["1s", "1m"],
                           "strategy": {"kind": "ema_cross", "timeframe": "1s",
                                        "fast_period": 3, "slow_period": 5, "quantity": 0.01}})
    result = run_replay([multi_venue_dir / capture], config, tmp_path / "journal.duckdb")
    assert result.summary["dead_letters"] == dead_letters
    assert (result.summary["bars"] > 0) == has_trades
    if symbols is not None:
        assert set(result.summary["symbols"]) == symbols
    with duckdb.connect(str(result.journal_path), read_only=True) as connection:
        kinds = {row[0] for row in connection.execute("SELECT kind FROM book_events").fetchall()}
    assert "synced" in kinds
