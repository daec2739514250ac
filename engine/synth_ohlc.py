"""A light trade tape from 1-minute bars: four trades a bar, at its open, its extremes and its
close, for research runs over weeks of bars in seconds (walk-forward, Monte Carlo).

The extremes come in the order the bar's direction suggests (a rising bar: open, low, high,
close; a falling one: open, high, low, close), at 1, 15, 30 and 59 seconds into the minute, each
a quarter of the bar's volume, sides alternating. Deterministic. The tape says `synthetic: true`
and `generator: engine.synth_ohlc`: bars at the bar's prices, not the market's trades. Use
`ats synth from-bars` for a tape with every trade of each bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from engine.batches import MarketChunk, TradeColumns

OFFSETS_NS = np.array([1, 15, 30, 59]) * 1_000_000_000


def ohlc_trades(klines: pa.Table) -> TradeColumns:
    """Four trades a bar (module docs) from a `storage.klines.read_klines_csv` table."""
    columns = {name: klines.column(name).to_numpy() for name in (
        "ts_open", "open", "high", "low", "close", "volume")}
    rising = columns["close"] >= columns["open"]
    second = np.where(rising, columns["low"], columns["high"])
    third = np.where(rising, columns["high"], columns["low"])
    price = np.stack([columns["open"], second, third, columns["close"]], axis=1).ravel()
    ts = (columns["ts_open"].astype(np.int64)[:, None] + OFFSETS_NS[None, :]).ravel()
    qty = np.repeat(np.maximum(columns["volume"] / 4, 1e-8), 4)
    side = np.tile(np.array([1, -1, 1, -1], np.int8), len(columns["open"]))
    return TradeColumns(ts_event=ts, ts_recv=ts.copy(),
                        trade_id=np.arange(1, len(ts) + 1, dtype=np.int64),
                        price=price.astype(np.float64), qty=qty.astype(np.float64), side=side)


def ohlc_tape(bars_csv: Path, out: Path, symbol: str = "BTCUSDT",
              minutes: int | None = None) -> dict[str, Any]:
    """Write the light tape of the first `minutes` bars (all by default); returns a summary."""
    from storage.klines import read_klines_csv
    from storage.tape import TapeWriter

    klines = read_klines_csv(bars_csv)
    if minutes is not None:
        if minutes < 1:
            raise ValueError(f"minutes must be >= 1, got {minutes}")
        klines = klines.slice(0, minutes)
    trades = ohlc_trades(klines)
    with TapeWriter(out, synthetic=True, source=Path(bars_csv).name,
                    extra_metadata={"generator": "engine.synth_ohlc", "bars": klines.num_rows}
                    ) as writer:
        writer.write_chunk(MarketChunk(symbol=symbol, sequence=0, trades=trades))
    return {"path": str(out), "symbol": symbol, "bars": klines.num_rows, "trades": len(trades)}
