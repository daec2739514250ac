"""`entry.order_type: limit` on the bundled sample: entries rest at the touch, are repriced once,
then given up or completed at market; fills are maker fills; reservations never leak; the
journal is the same from run to run."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from engine.config import EntryConfig, LimitEntryConfig, RunConfig, load_config
from engine.runtime import SAMPLE_CONFIG, RunResult, run_replay
from storage.journal import read_table
from storage.schemas import JOURNAL_TABLES

pytestmark = pytest.mark.slow

_COMPARED = ("orders", "fills", "trades", "signals", "risk_decisions", "equity")


def _config(fallback: str) -> RunConfig:
    limit = LimitEntryConfig(reprice_after="2s", give_up_after="4s", fallback=fallback)
    return load_config(SAMPLE_CONFIG).model_copy(
        update={"entry": EntryConfig(order_type="limit", limit=limit)})


def _replay(fallback: str, journal: Path) -> RunResult:
    return run_replay(None, _config(fallback), journal, in_process=True)


def _rows(journal: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(journal), read_only=True) as connection:
        return connection.sql(sql).fetchall()


def _final_open_positions(journal: Path) -> int:
    (count,) = _rows(journal, "select count(*) from (select symbol, sum(side * quantity) q "
                              "from fills group by symbol) where abs(q) > 1e-9")[0]
    return int(count)


def test_limit_entries_rest_reprice_give_up_and_replay_identically(tmp_path: Path) -> None:
    first = _replay("cancel", tmp_path / "a.duckdb")
    second = _replay("cancel", tmp_path / "b.duckdb")
    for table in _COMPARED:
        assert table in JOURNAL_TABLES
        assert read_table(first.journal_path, table, deterministic_only=True) == read_table(
            second.journal_path, table, deterministic_only=True), table
    journal = first.journal_path
    entries = _rows(journal, "select count(distinct order_id) from orders "
                             "where order_type = 'limit'")[0][0]
    assert entries >= 10
    assert _rows(journal, "select count(*) from orders where reason like 'reprice%'")[0][0] > 0
    liquidity = dict(_rows(journal, "select liquidity, count(*) from fills group by all"))
    assert liquidity.get("maker", 0) > 0
    gave_up = _rows(journal, """
        select o.order_id, count(f.key) from orders o left join fills f using (order_id)
        where o.state = 'canceled' and o.order_type = 'limit' group by o.order_id""")
    assert gave_up, "some entries were never filled within 4 s and were given up"
    unfilled = [order_id for order_id, fills in gave_up if fills == 0]
    outcomes = _rows(journal, "select count(*) from signals where "
                              "json_extract_string(details, '$.outcome') = 'limit_entry: gave up'")
    assert outcomes[0][0] == len(unfilled)
    # no reservation outlives its order: risk's open positions are the journal's
    assert first.summary["portfolio"]["open_positions"] == _final_open_positions(journal)


def test_market_fallback_completes_what_the_limit_did_not(tmp_path: Path) -> None:
    result = _replay("market", tmp_path / "fallback.duckdb")
    journal = result.journal_path
    fallbacks = _rows(journal, "select distinct order_id from orders where order_type = 'market' "
                               "and order_id like '%m'")
    assert fallbacks
    for (order_id,) in fallbacks:
        limit_id = str(order_id)[:-1]
        (state,) = _rows(journal, f"select state from orders where order_id = '{limit_id}' "
                                  "order by ts_event desc, key desc limit 1")[0]
        assert state == "canceled"
        intent = _rows(journal, "select approved_qty from risk_decisions where intent_id = "
                                f"replace('{limit_id}', ':o', ':i')")[0][0]
        filled = _rows(journal, "select coalesce(sum(quantity), 0) from fills where order_id in "
                                f"('{limit_id}', '{order_id}')")[0][0]
        assert filled == pytest.approx(intent, rel=1e-9), "limit plus fallback fill the intent"
    assert result.summary["portfolio"]["open_positions"] == _final_open_positions(journal)
