"""Run summaries read back from a journal: the journal is the source of truth for what happened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb


def _scalar(connection: duckdb.DuckDBPyConnection, sql: str) -> Any:
    rows = connection.execute(sql).fetchall()
    return rows[0][0] if rows else None


def run_record(journal_path: Path | str) -> dict[str, Any]:
    """The journal's `runs` row as a dict (config and summary parsed), or {} before it exists."""
    with duckdb.connect(str(journal_path), read_only=True) as connection:
        rows = connection.execute(
            "SELECT run_id, mode, input_path, data_hash, config, code_version, summary FROM runs"
        ).fetchall()
    if not rows:
        return {}
    run_id, mode, input_path, data_hash, config, code_version, summary = rows[0]
    return {
        "run_id": run_id,
        "mode": mode,
        "input": input_path,
        "data_hash": data_hash,
        "config": json.loads(config) if config else {},
        "code_version": code_version,
        "summary": json.loads(summary) if summary else {},
    }


def initial_equity_in(record: dict[str, Any]) -> float:
    """The initial equity of a `run_record`'s config (100,000 when the journal has no `runs`
    row yet)."""
    return float(record.get("config", {}).get("initial_equity", 100_000.0))


def configured_initial_equity(journal_path: Path | str, given: float | None = None) -> float:
    """`given`, else the run's configured initial equity."""
    return given if given is not None else initial_equity_in(run_record(journal_path))


def journal_summary(journal_path: Path | str, initial_equity: float | None = None
                    ) -> dict[str, Any]:
    """Counts and P&L of a finished run, from its journal tables. The initial equity comes from
    the run's config when not given; events and bars from the run's stored summary."""
    record = run_record(journal_path) if initial_equity is None else {}
    if initial_equity is None:
        initial_equity = initial_equity_in(record)
    with duckdb.connect(str(journal_path), read_only=True) as connection:
        final_equity = _scalar(
            connection, "SELECT equity FROM equity ORDER BY ts_event DESC, key DESC LIMIT 1"
        )
        summary: dict[str, Any] = {
            "signals": _scalar(connection, "SELECT count(*) FROM signals"),
            "approved_intents": _scalar(
                connection, "SELECT count(*) FROM risk_decisions WHERE approved"
            ),
            "rejected_intents": _scalar(
                connection, "SELECT count(*) FROM risk_decisions WHERE NOT approved"
            ),
            "orders": _scalar(connection, "SELECT count(DISTINCT order_id) FROM orders"),
            "fills": _scalar(connection, "SELECT count(*) FROM fills"),
            "round_trips": _scalar(connection, "SELECT count(*) FROM trades"),
            "realized_pnl": float(
                _scalar(connection, "SELECT coalesce(sum(pnl), 0) FROM trades") or 0.0
            ),
            "fees": float(_scalar(connection, "SELECT coalesce(sum(fee), 0) FROM fills") or 0.0),
            "final_equity": float(final_equity) if final_equity is not None else initial_equity,
            "max_drawdown": float(
                _scalar(connection, "SELECT coalesce(max(drawdown), 0) FROM equity") or 0.0
            ),
            "dead_letters": _scalar(connection, "SELECT count(*) FROM dead_letters"),
            "book_events": _scalar(connection, "SELECT count(*) FROM book_events"),
        }
        reasons = connection.execute(
            "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason"
        ).fetchall()
    summary["pnl"] = summary["final_equity"] - initial_equity
    stored = record.get("summary", {})
    for key in ("events", "bars"):
        if key in stored:
            summary[key] = stored[key]
    summary["dead_letter_reasons"] = {reason: count for reason, count in reasons}
    return summary


def count_signals(journal_path: Path | str, strategy: str) -> int:
    """How many signals a strategy journaled (for ema_cross: its crossings)."""
    with duckdb.connect(str(journal_path), read_only=True) as connection:
        rows = connection.execute(
            "SELECT count(*) FROM signals WHERE strategy = ?", [strategy]
        ).fetchall()
    return int(rows[0][0])
