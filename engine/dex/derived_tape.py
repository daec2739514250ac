"""A CEX trade tape derived from a DEX tape's swaps, for days with no recorded CEX trades.

The bundled Uniswap v3 day has no CEX tape, yet the DEX-led plan trades a CEX pair. Each swap
becomes one trade of the pair: at the swap's pool price, for its base amount, the taker's side,
at the block's time (swaps of one block are spread 1 microsecond apart in chain order, so their
order survives). Receive times equal event times: a derived trade was never received, and the
engine reads that as "no latency measured".

The tape says what it is: `synthetic: true`, `cex_source: "derived_from_dex"`, the pool and the
DEX tape it came from. A run on it is a research run on DEX prices, never evidence about a CEX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.batches import MarketChunk, TradeColumns
from storage.dex_tape import read_dex_tape

CEX_SOURCE = "derived_from_dex"
_NS_PER_LOG = 1_000  # chain order inside a block, as microseconds after the block's time


def derived_trades(swaps: Any) -> TradeColumns:
    """The trades of the module docs from a DEX tape's `swaps` table, in chain order."""
    def column(name: str) -> np.ndarray:
        return np.asarray(swaps.column(name).to_numpy(zero_copy_only=False))

    block_ts = column("ts_event").astype(np.int64)
    block = column("block_number").astype(np.int64)
    log_index = column("log_index").astype(np.int64)
    order = np.lexsort((log_index, block))
    block_ts, block, log_index = block_ts[order], block[order], log_index[order]
    # position of each swap inside its block: 0, 1, 2...
    first_of_block = np.r_[True, block[1:] != block[:-1]] if len(block) else np.empty(0, bool)
    starts = np.maximum.accumulate(np.where(first_of_block, np.arange(len(block)), 0))
    ts_event = block_ts + (np.arange(len(block)) - starts) * _NS_PER_LOG
    if len(ts_event) > 1 and np.any(np.diff(ts_event) < 0):
        raise ValueError("DEX tape: block times go backwards in block order; the tape is corrupt")
    price = column("price")[order]
    quantity = np.abs(column("base_amount")[order])
    keep = np.isfinite(price) & (price > 0) & np.isfinite(quantity) & (quantity > 0)
    if not np.all(keep):
        bad = int(np.flatnonzero(~keep)[0])
        raise ValueError(f"DEX tape: swap at block {int(block[bad])} log {int(log_index[bad])} "
                         f"has no positive price or amount (price {price[bad]}, base amount "
                         f"{quantity[bad]})")
    return TradeColumns(
        ts_event=ts_event, ts_recv=ts_event.copy(),
        trade_id=np.arange(1, len(ts_event) + 1, dtype=np.int64), price=price.astype(np.float64),
        qty=quantity.astype(np.float64), side=column("side")[order].astype(np.int8))


def cex_tape_from_dex(dex_tape: Path, out: Path, symbol: str, *,
                      overwrite: bool = False) -> dict[str, Any]:
    """Write the derived tape of the module docs for `symbol`; returns a summary."""
    from storage.tape import TapeWriter

    dex = read_dex_tape(dex_tape)
    trades = derived_trades(dex.swaps)
    metadata = {"cex_source": CEX_SOURCE, "pool": dex.pool.model_dump(mode="json"),
                "dex_tape": Path(dex_tape).name, "trades": len(trades),
                "generator": "engine.dex.derived_tape"}
    with TapeWriter(out, synthetic=True, source=f"dex:{dex.pool.symbol}",
                    extra_metadata=metadata, overwrite=overwrite) as writer:
        writer.write_chunk(MarketChunk(symbol=symbol, sequence=0, trades=trades))
    return {"path": str(out), "symbol": symbol, "pool": dex.pool.symbol, "trades": len(trades),
            "first_ts": int(trades.ts_event[0]) if len(trades) else None,
            "last_ts": int(trades.ts_event[-1]) if len(trades) else None,
            "cex_source": CEX_SOURCE}
