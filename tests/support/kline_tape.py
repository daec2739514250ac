"""The bundled klines as a light tape (`engine.synth_ohlc`: four trades a bar) for tests."""

from __future__ import annotations

from pathlib import Path

from engine.synth_ohlc import ohlc_tape


def kline_tape(klines_csv: Path, out: Path, symbol: str = "BTCUSDT",
               minutes: int | None = None) -> Path:
    ohlc_tape(klines_csv, out, symbol, minutes)
    return out
