"""Hand-built feature batches for engine tests: bars, trades, real 1-minute klines, a gateway.

Indicators are computed here with plain loops, independently of `engine.indicators`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.batches import BAR_FIELDS, BarColumns, FeatureBatch, TradeColumns
from engine.config import RiskConfig
from engine.risk import LocalGateway, PortfolioRisk
from engine.timeframes import NS_PER_MINUTE, NS_PER_SECOND
from engine.types import OrderIntent, PortfolioUpdate, RiskDecision

KLINES = Path(__file__).resolve().parents[2] / "data" / "binance-1m" / "BTCUSDT_1m.csv"
FOREVER = 2**63 - 1


@lru_cache(maxsize=1)
def load_klines() -> dict[str, np.ndarray]:
    """The bundled BTCUSDT 1-minute klines as columns (ts_open/ts_close in ns)."""
    lines = KLINES.read_text().splitlines()[1:]
    fields = [line.split(",") for line in lines]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    millisecond = timedelta(milliseconds=1)
    close_ms = [(datetime.fromisoformat(row[7]) - epoch) // millisecond + 1 for row in fields]
    ts_close = np.array(close_ms, np.int64) * 1_000_000
    return {
        "ts_open": ts_close - NS_PER_MINUTE,
        "ts_close": ts_close,
        "open": np.array([float(row[0]) for row in fields]),
        "high": np.array([float(row[1]) for row in fields]),
        "low": np.array([float(row[2]) for row in fields]),
        "close": np.array([float(row[3]) for row in fields]),
        "volume": np.array([float(row[4]) for row in fields]),
    }


def loop_ema(values: np.ndarray, period: int) -> np.ndarray:
    """EMA seeded with the SMA of the first `period` values (TA-Lib), one value at a time."""
    result = np.full(len(values), np.nan)
    if len(values) < period:
        return result
    alpha = 2.0 / (period + 1)
    current = float(np.mean(values[:period]))
    result[period - 1] = current
    for index in range(period, len(values)):
        current = alpha * values[index] + (1 - alpha) * current
        result[index] = current
    return result


def make_bars(timeframe: str, columns: dict[str, np.ndarray]) -> BarColumns:
    """BarColumns from the given columns; missing BAR_FIELDS are NaN (trade_count 0)."""
    length = len(columns["ts_close"])
    full: dict[str, np.ndarray] = {}
    for name in BAR_FIELDS:
        if name in columns:
            full[name] = np.asarray(columns[name])
        elif name == "trade_count":
            full[name] = np.zeros(length, np.int64)
        else:
            full[name] = np.full(length, np.nan)
    for name, column in columns.items():
        full.setdefault(name, np.asarray(column))
    return BarColumns(timeframe, full)


def make_trades(
    ts: Sequence[int] | np.ndarray,
    price: Sequence[float] | np.ndarray,
    qty: Sequence[float] | np.ndarray | float = 1.0,
) -> TradeColumns:
    ts_array = np.asarray(ts, np.int64)
    quantities = np.broadcast_to(np.asarray(qty, np.float64), ts_array.shape).copy()
    return TradeColumns(
        ts_event=ts_array,
        ts_recv=ts_array.copy(),
        trade_id=np.arange(len(ts_array), dtype=np.int64),
        price=np.asarray(price, np.float64),
        qty=quantities,
        side=np.ones(len(ts_array), np.int8),
    )


def slice_rows(columns: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: column[start:stop] for name, column in columns.items()}


def kline_batches(
    symbol: str,
    bars: dict[str, np.ndarray],
    timeframe: str = "1m",
    bars_per_batch: int = 60,
) -> list[FeatureBatch]:
    """Batches of whole minutes: two trades a bar (the open 1 s in, the close 1 s before the
    end, each half the volume) and the bars that closed in the slice."""
    batches: list[FeatureBatch] = []
    count = len(bars["ts_close"])
    for sequence, start in enumerate(range(0, count, bars_per_batch)):
        stop = min(count, start + bars_per_batch)
        part = slice_rows(bars, start, stop)
        ts = np.empty(2 * (stop - start), np.int64)
        ts[0::2] = part["ts_open"] + NS_PER_SECOND
        ts[1::2] = part["ts_close"] - NS_PER_SECOND
        price = np.empty(len(ts))
        price[0::2] = part["open"]
        price[1::2] = part["close"]
        qty = np.repeat(np.maximum(part["volume"] / 2, 1e-6), 2)
        batches.append(
            FeatureBatch(
                symbol=symbol,
                sequence=sequence,
                watermark=int(part["ts_close"][-1]),
                trades=make_trades(ts, price, qty),
                bars={timeframe: make_bars(timeframe, part)},
            )
        )
    return batches


class RecordingGateway:
    """A LocalGateway over a fresh PortfolioRisk that records every decision."""

    def __init__(
        self,
        risk: PortfolioRisk | None = None,
        initial_equity: float = 100_000.0,
        config: RiskConfig | None = None,
    ) -> None:
        self.risk = risk or PortfolioRisk(config or RiskConfig(), initial_equity)
        self.local = LocalGateway(self.risk)
        self.decisions: list[tuple[OrderIntent, RiskDecision]] = []
        self.updates: list[PortfolioUpdate] = []  # every update handed over with a decision

    def decide(self, intent: OrderIntent, updates: Sequence[PortfolioUpdate]) -> RiskDecision:
        self.updates.extend(updates)
        decision = self.local.decide(intent, updates)
        self.decisions.append((intent, decision))
        return decision


def is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
