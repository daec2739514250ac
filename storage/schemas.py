"""Arrow schemas of the recorded tape and of the journal tables.

Tape tables mirror the columnar batches in `engine.batches` plus a `symbol` column. Journal tables
each have a stable `key` column, unique within a run, so that a replay resumed after a crash can
write again without duplicates (the journal ignores rows whose key it already holds).
"""

from __future__ import annotations

import pyarrow as pa

# ---------------------------------------------------------------- tape

TRADES = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts_event", pa.int64()),
        ("ts_recv", pa.int64()),
        ("trade_id", pa.int64()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
        ("side", pa.int8()),
    ]
)

BOOK_DELTAS = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts_event", pa.int64()),
        ("ts_recv", pa.int64()),
        ("first_update_id", pa.int64()),
        ("final_update_id", pa.int64()),
        ("prev_final_update_id", pa.int64()),
        ("side", pa.int8()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
    ]
)

BOOK_SNAPSHOTS = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts_event", pa.int64()),
        ("ts_recv", pa.int64()),
        ("last_update_id", pa.int64()),
        ("side", pa.int8()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
    ]
)

BEST_BID_ASK = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts_event", pa.int64()),
        ("ts_recv", pa.int64()),
        ("update_id", pa.int64()),
        ("bid_price", pa.float64()),
        ("bid_qty", pa.float64()),
        ("ask_price", pa.float64()),
        ("ask_qty", pa.float64()),
    ]
)

BARS = pa.schema(
    [
        ("symbol", pa.string()),
        ("timeframe", pa.string()),
        ("ts_open", pa.int64()),
        ("ts_close", pa.int64()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("buy_volume", pa.float64()),
        ("sell_volume", pa.float64()),
        ("trade_count", pa.int64()),
        ("vwap", pa.float64()),
        ("order_flow_imbalance", pa.float64()),
        ("spread", pa.float64()),
        ("top_imbalance", pa.float64()),
        ("depth_bid_5pct", pa.float64()),
        ("depth_ask_5pct", pa.float64()),
    ]
)

AGG_TRADES = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts_event", pa.int64()),
        ("ts_recv", pa.int64()),
        ("agg_id", pa.int64()),
        ("first_trade_id", pa.int64()),
        ("last_trade_id", pa.int64()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
        ("side", pa.int8()),
    ]
)

MARK_PRICES = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts_event", pa.int64()),
        ("ts_recv", pa.int64()),
        ("mark_price", pa.float64()),
        ("index_price", pa.float64()),
        ("estimated_settle_price", pa.float64()),
        ("funding_rate", pa.float64()),
        ("next_funding_time", pa.int64()),
    ]
)

# Venue candlesticks as streamed (open and closed updates), not the dataflow's own bars.
VENUE_KLINES = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts_event", pa.int64()),
        ("ts_recv", pa.int64()),
        ("ts_open", pa.int64()),
        ("ts_close", pa.int64()),
        ("interval_ns", pa.int64()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("quote_volume", pa.float64()),
        ("taker_buy_volume", pa.float64()),
        ("trade_count", pa.int64()),
        ("closed", pa.bool_()),
    ]
)

# The live feed's own events (stale, fresh, reconnects, gap-fills), kept so a replay sees them.
FEED_EVENTS = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts_event", pa.int64()),
        ("ts_recv", pa.int64()),
        ("kind", pa.string()),
        ("detail", pa.string()),
    ]
)

# 1-minute klines as imported from CSV (storage/klines.py), before they become BARS rows.
KLINES = pa.schema(
    [
        ("ts_open", pa.int64()),
        ("ts_close", pa.int64()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("quote_volume", pa.float64()),
        ("trade_count", pa.int64()),
    ]
)

TAPE_TABLES: dict[str, pa.Schema] = {
    "trades": TRADES,
    "book_deltas": BOOK_DELTAS,
    "book_snapshots": BOOK_SNAPSHOTS,
    "best_bid_ask": BEST_BID_ASK,
    "agg_trades": AGG_TRADES,
    "mark_prices": MARK_PRICES,
    "venue_klines": VENUE_KLINES,
    "feed_events": FEED_EVENTS,
}

# ---------------------------------------------------------------- journal

_F = pa.float64()
_I = pa.int64()
_S = pa.string()
_B = pa.bool_()

JOURNAL_TABLES: dict[str, pa.Schema] = {
    "signals": pa.schema(
        [
            ("key", _S), ("run_id", _S), ("symbol", _S), ("strategy", _S), ("ts_event", _I),
            ("timeframe", _S), ("direction", pa.int8()), ("score", _F), ("reason", _S),
            ("signal_type", _S), ("acted", _B), ("reference_price", _F),
            ("predicted_reward", _F), ("actual_reward", _F), ("dex_price", _F),
            ("cex_price", _F), ("dex_orderflow_imbalance", _F), ("order_flow_imbalance", _F),
            ("top_imbalance", _F), ("depth_bid_5pct", _F), ("depth_ask_5pct", _F),
            ("regime", _S), ("data_latency_ms", _F), ("execution_latency_ms", _F),
            ("estimated_slippage_bps", _F), ("actual_slippage_bps", _F), ("details", _S),
            ("null_reasons", _S),
        ]
    ),
    # What a signal learner's maintenance agent did: drift alerts, retrains, re-tunes.
    "model_events": pa.schema(
        [("key", _S), ("run_id", _S), ("ts_event", _I), ("symbol", _S), ("kind", _S),
         ("model", _S), ("detail", _S)]
    ),
    "risk_decisions": pa.schema(
        [
            ("key", _S), ("run_id", _S), ("ts_event", _I), ("symbol", _S), ("intent_id", _S),
            ("signal_id", _S), ("side", pa.int8()), ("intent_kind", _S), ("reduce_only", _B),
            ("requested_qty", _F), ("approved_qty", _F), ("approved", _B), ("rule", _S),
            ("reason", _S), ("equity", _F), ("portfolio_heat", _F), ("open_positions", _I),
            ("gross_leverage", _F), ("daily_pnl", _F), ("rules_applied", _S),
        ]
    ),
    # What risk rules asked for beyond a decision: alerts, halts, flattens (engine.rules).
    "risk_events": pa.schema(
        [("key", _S), ("run_id", _S), ("ts_event", _I), ("symbol", _S), ("rule", _S),
         ("kind", _S), ("reason", _S)]
    ),
    "orders": pa.schema(
        [
            ("key", _S), ("run_id", _S), ("ts_event", _I), ("symbol", _S), ("order_id", _S),
            ("client_order_id", _S), ("venue_order_id", _S), ("intent_id", _S), ("side", pa.int8()),
            ("order_type", _S), ("quantity", _F), ("price", _F), ("filled_qty", _F),
            ("state", _S), ("reason", _S),
        ]
    ),
    "fills": pa.schema(
        [
            ("key", _S), ("run_id", _S), ("ts_event", _I), ("symbol", _S), ("order_id", _S),
            ("side", pa.int8()), ("quantity", _F), ("price", _F), ("reference_price", _F),
            ("fee", _F), ("liquidity", _S), ("slippage_bps", _F), ("latency_ms", _F),
        ]
    ),
    "trades": pa.schema(
        [
            ("key", _S), ("run_id", _S), ("symbol", _S), ("side", pa.int8()), ("entry_ts", _I),
            ("exit_ts", _I), ("entry_price", _F), ("exit_price", _F), ("quantity", _F),
            ("pnl", _F), ("fees", _F), ("funding", _F), ("return_pct", _F),
            ("initial_risk", _F), ("r_multiple", _F), ("mfe", _F), ("mae", _F),
            ("mfe_ts", _I), ("mae_ts", _I),
            ("exit_reason", _S), ("entry_signal_id", _S), ("entry_score", _F),
        ]
    ),
    "positions": pa.schema(
        [
            ("key", _S), ("run_id", _S), ("ts_event", _I), ("symbol", _S), ("quantity", _F),
            ("avg_price", _F), ("mark_price", _F), ("realized_pnl", _F), ("unrealized_pnl", _F),
            ("stop_price", _F),
        ]
    ),
    "equity": pa.schema(
        [
            ("key", _S), ("run_id", _S), ("ts_event", _I), ("equity", _F), ("realized_pnl", _F),
            ("unrealized_pnl", _F), ("fees", _F), ("portfolio_heat", _F), ("gross_leverage", _F),
            ("open_positions", _I), ("drawdown", _F), ("funding", _F),
        ]
    ),
    # Perpetual funding settlements on a position (engine.funding); amount > 0: the account paid.
    "funding": pa.schema(
        [
            ("key", _S), ("run_id", _S), ("ts_event", _I), ("symbol", _S), ("sequence", _I),
            ("position", _F), ("mark_price", _F), ("rate", _F), ("amount", _F),
        ]
    ),
    "features": pa.schema(
        [("key", _S), ("run_id", _S)] + [field for field in BARS] + [("indicators", _S)]
    ),
    "book_events": pa.schema(
        [("key", _S), ("run_id", _S), ("ts_event", _I), ("symbol", _S), ("kind", _S),
         ("detail", _S)]
    ),
    # Live execution (engine.execution): reconciliation differences, kill, watchdog, countdown.
    "execution_events": pa.schema(
        [("key", _S), ("run_id", _S), ("ts_event", _I), ("symbol", _S), ("kind", _S),
         ("detail", _S)]
    ),
    # Operator commands over the control channel (engine.control): who, when (wall clock ns
    # and the engine's event time when known), what, and the result; refusals too, never a token.
    "control_events": pa.schema(
        [("key", _S), ("run_id", _S), ("ts_wall", _I), ("ts_event", _I), ("who", _S),
         ("command", _S), ("argument", _S), ("result", _S), ("detail", _S)]
    ),
    "feed_events": pa.schema(
        [("key", _S), ("run_id", _S), ("ts_event", _I), ("ts_recv", _I), ("symbol", _S),
         ("kind", _S), ("detail", _S)]
    ),
    "dead_letters": pa.schema(
        [
            ("key", _S), ("run_id", _S), ("stage", _S), ("reason", _S), ("detail", _S),
            ("source", _S), ("symbol", _S), ("ts_event", _I), ("ts_recv", _I), ("payload", _S),
        ]
    ),
    "runs": pa.schema(
        [
            ("key", _S), ("run_id", _S), ("started_at", pa.timestamp("us", tz="UTC")),
            ("finished_at", pa.timestamp("us", tz="UTC")), ("mode", _S), ("input_path", _S),
            ("data_hash", _S), ("config", _S), ("code_version", _S), ("workers", _I),
            ("summary", _S),
        ]
    ),
}

# Columns that differ between two otherwise identical runs; determinism checks ignore them.
NONDETERMINISTIC_COLUMNS: frozenset[str] = frozenset({"run_id", "started_at", "finished_at"})

# The DEX-led plan's `signals` schema, by its own names, as a view over the journal's table:
# depth within 5% is both sides' (NULL unless both are known), slippage in percent. Why a field
# is NULL is in `null_reasons`.
JOURNAL_VIEWS: dict[str, str] = {
    "plan_signals": """
        SELECT key AS id, ts_event AS "timestamp", symbol AS pair_symbol, signal_type,
               direction, acted,
               predicted_reward, actual_reward, dex_price, cex_price,
               dex_orderflow_imbalance,
               depth_bid_5pct + depth_ask_5pct AS cex_orderbook_depth_5pct,
               regime AS market_regime, data_latency_ms, execution_latency_ms,
               estimated_slippage_bps / 100 AS estimated_slippage_pct,
               actual_slippage_bps / 100 AS actual_slippage_pct,
               null_reasons, run_id
        FROM signals
    """,
}
