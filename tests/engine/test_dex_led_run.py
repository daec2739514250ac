"""The DEX-led plan end to end on the real Uniswap v3 day: the pool's swaps joined to a CEX tape
derived from them, Phase A signals scored by the online regression, Phase B after 50 labels.

Replays with the learner on journal the same twice, in process and on Ray actors; every field of
the plan's `signals` schema is a value or a NULL with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from engine.config import RunConfig, load_config
from engine.runtime import run_replay
from storage.journal import read_table
from tests.conftest import REPO_ROOT
from tests.support.dex import PLAN_FIELDS, dex_and_cex_tapes
from tests.support.metrics import scrape

pytestmark = pytest.mark.slow
TABLES = ("signals", "risk_decisions", "orders", "fills", "trades", "equity", "dead_letters",
          "model_events")


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return dex_and_cex_tapes(tmp_path_factory.mktemp("dex_led"))


def _config(dex_tape: Path, **update: object) -> RunConfig:
    config = load_config(REPO_ROOT / "configs" / "dex_led.yaml")
    dex = config.dex
    assert dex is not None
    pools = tuple(pool.model_copy(update={"tape": str(dex_tape)}) for pool in dex.pools)
    return config.model_copy(update={"dex": dex.model_copy(update={"pools": pools}), **update})


def _plan_rows(journal: Path) -> list[dict[str, object]]:
    with duckdb.connect(str(journal), read_only=True) as connection:
        relation = connection.sql("SELECT * FROM plan_signals ORDER BY id")
        names = [column[0] for column in relation.description]
        return [dict(zip(names, row, strict=True)) for row in relation.fetchall()]


def _same_journals(first: Path, second: Path) -> None:
    for table in TABLES:
        assert read_table(first, table, deterministic_only=True) == read_table(
            second, table, deterministic_only=True), table


def test_the_plan_runs_on_the_real_day_twice_alike_with_every_field_explained(
        day: tuple[Path, Path], tmp_path: Path) -> None:
    dex_tape, cex_tape = day
    config = _config(dex_tape)
    first = run_replay([cex_tape], config, tmp_path / "a.duckdb", in_process=True,
                       metrics_port=0)
    second = run_replay([cex_tape], config, tmp_path / "b.duckdb", in_process=True)
    _same_journals(first.journal_path, second.journal_path)
    # the maintenance agent re-tuned the thresholds every 2 hours once 4 had passed, and said so
    # in the journal and the metrics
    events = read_table(first.journal_path, "model_events", deterministic_only=True)
    retunes = [row for row in events if row[3] == "retune"]
    assert len(retunes) >= 9 and all("thresholds" in str(row[5]) for row in retunes)
    metrics = scrape(int(first.timings["metrics_port"]))
    assert metrics["ats_threshold_retunes_total"] == len(retunes)

    rows = _plan_rows(first.journal_path)
    assert len(rows) > 300
    for row in rows:
        reasons = json.loads(str(row["null_reasons"])) if row["null_reasons"] else {}
        for field in PLAN_FIELDS:
            assert field in row
            assert (row[field] is not None) != (field in reasons), (field, row)
    # what the day gives: DEX price and flow, a derived CEX price, a model's prediction for
    # every signal, a label for all but the last 20 minutes', a regime after the warm-up
    assert all(row["dex_price"] and row["cex_price"] == row["dex_price"] for row in rows)
    assert all(row["predicted_reward"] is not None for row in rows)
    labelled = [row for row in rows if row["actual_reward"] is not None]
    assert len(rows) - 20 <= len(labelled) < len(rows)
    assert sum(row["market_regime"] is not None for row in rows) > 0.9 * len(rows)
    assert all(row["dex_orderflow_imbalance"] is not None for row in rows)
    # Phase B started after 50 labels; the derived tape has no receive times, so the latency
    # rule refuses every entry that reaches risk, and each row says so
    with duckdb.connect(str(first.journal_path), read_only=True) as connection:
        phases = [row[0] for row in connection.sql(
            "SELECT details->>'$.phase' FROM signals ORDER BY ts_event, key").fetchall()]
        refusals = {row[0] for row in connection.sql(
            "SELECT DISTINCT rule FROM risk_decisions").fetchall()}
    assert phases[0] == "A" and phases[-1] == "B" and phases.count("A") >= 50
    assert refusals == {"latency_compensation"}
    reasons = json.loads(str(rows[0]["null_reasons"]))
    assert "no receive times" in reasons["data_latency_ms"]
    assert "no CEX order book" in reasons["cex_orderbook_depth_5pct"]


@pytest.mark.usefixtures("ray_session")
def test_on_ray_actors_the_plan_trades_and_journals_as_in_process(
        day: tuple[Path, Path], tmp_path: Path) -> None:
    """Without the plan's risk profile the entries fill: execution latency and slippage are
    journaled, and Ray actors journal exactly what the in-process run does."""
    dex_tape, cex_tape = day
    config = _config(dex_tape, risk=RunConfig().risk)
    on_ray = run_replay([cex_tape], config.model_copy(update={"actors": "ray"}),
                        tmp_path / "ray.duckdb", workers=2)
    in_process = run_replay([cex_tape], config, tmp_path / "local.duckdb", in_process=True)
    _same_journals(on_ray.journal_path, in_process.journal_path)
    filled = [row for row in _plan_rows(on_ray.journal_path)
              if row["execution_latency_ms"] is not None]
    assert len(filled) > 5
    assert all(row["actual_slippage_pct"] is not None and row["estimated_slippage_pct"]
               is not None for row in filled)


def test_a_live_run_refuses_dex_pools_before_starting_anything(tmp_path: Path) -> None:
    from engine.runtime import run_live

    config = _config(tmp_path / "no-such-tape")
    with pytest.raises(ValueError, match="replay only"):
        run_live(["ETHUSDT"], config, tmp_path / "journal.duckdb")
    assert not (tmp_path / "journal.duckdb").exists()
