"""A light trade tape from the bundled 1-minute klines: four trades a bar (open, high, low, close,
in the order the bar's direction suggests), so a month replays in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.batches import MarketChunk, TradeColumns
from storage.klines import read_klines_csv
from storage.tape import TapeWriter


def kline_tape(klines_csv: Path, out: Path, symbol: str = "BTCUSDT",
               minutes: int | None = None) -> Path:
    klines = read_klines_csv(klines_csv)
    if minutes is not None:
        klines = klines.slice(0, minutes)
    columns = {name: klines.column(name).to_numpy() for name in (
        "ts_open", "open", "high", "low", "close", "volume")}
    rising = columns["close"] >= columns["open"]
    second = np.where(rising, columns["low"], columns["high"])
    third = np.where(rising, columns["high"], columns["low"])
    price = np.stack([columns["open"], second, third, columns["close"]], axis=1).ravel()
    offsets = np.array([1, 15, 30, 59]) * 1_000_000_000
    ts = (columns["ts_open"].astype(np.int64)[:, None] + offsets[None, :]).ravel()
    qty = np.repeat(np.maximum(columns["volume"] / 4, 1e-8), 4)
    side = np.tile(np.array([1, -1, 1, -1], np.int8), len(columns["open"]))
    trades = TradeColumns(ts_event=ts, ts_recv=ts.copy(),
                          trade_id=np.arange(1, len(ts) + 1, dtype=np.int64),
                          price=price.astype(np.float64), qty=qty.astype(np.float64), side=side)
    with TapeWriter(out, synthetic=True, source=f"tests: 4 trades per kline of {klines_csv.name}"
                    ) as writer:
        writer.write_chunk(MarketChunk(symbol=symbol, sequence=0, trades=trades))
    return out
