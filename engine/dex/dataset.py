"""A DEX tape to the DEX-led plan's labelled signals: features, Phase A signals, reward scores.

`signal_set` evaluates the features at every block with a swap, keeps the Phase A signals, and
labels each with its reward score. The rows carry every field of the plan's `signals` schema;
a field with no value is NULL and `null_reasons` (JSON) says why. For a day without a recorded
CEX tape the CEX price is the DEX price, and `cex_source` says "derived_from_dex".

`LEARNING_FEATURES` are the columns the Phase B regression reads, plus the signal's market regime
one-hot (`regime_<name>`, from `online_ml.regime` over the pool's 1-minute closes); `learning_rows`
turns a set into `(ts, ready_ts, features, target)` rows for `online_ml`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from engine.dex.features import DexColumns, dex_features
from engine.dex.labels import reward_scores
from engine.dex.signals import PhaseAConfig, phase_a
from engine.timeframes import parse_duration_ns
from online_ml.regime import REGIMES, RegimeConfig, RegimeDetector

LEARNING_FEATURES = (
    "direction", "confirmations", "imbalance_10s", "imbalance_30s", "log_volume_ratio",
    "price_change_10s", "price_change_30s", "liquidity_velocity", "liquidity_acceleration",
    "log_volume_30s",
)
# Heavy tails tamed for online learners: a volume burst can be 1,000x its average and the pool's
# liquidity can jump 7x in a minute (just-in-time liquidity); logs and clips keep one such
# sample from throwing a linear model's weights off.
_CLIPPED = {"liquidity_velocity": 1.0, "liquidity_acceleration": 1.0}
_NULL_REASONS = {
    "predicted_reward": "phase A signal: no model prediction yet",
    "cex_orderbook_depth_5pct": "no CEX order book recorded for this day; the CEX side is "
                                "derived from DEX prices",
    "market_regime": "fewer than the detector's warm-up minutes of prices before the signal",
    "data_latency_ms": "historical chain logs carry block time only, no receive time",
    "execution_latency_ms": "research set: no order was sent",
    "estimated_slippage_pct": "research set: no order size to estimate slippage for",
    "actual_slippage_pct": "research set: no order was sent",
}


class DexPlanConfig(BaseModel):
    """The DEX-led plan's research settings: detectors, label horizon and decay, the pair."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    phase_a: PhaseAConfig = Field(default_factory=PhaseAConfig)
    horizon: str = Field("20m", description="T: a signal is labelled this long after it")
    decay_per_minute: float = Field(0.05, ge=0, description="k of exp(-k t), t in minutes")
    pair_symbol: str = Field("ETHUSDT", description="the CEX pair the DEX pool leads")
    regime: RegimeConfig = Field(default_factory=RegimeConfig,
                                 description="online regime of the pool's 1-minute closes")

    @property
    def horizon_ns(self) -> int:
        return parse_duration_ns(self.horizon)


def signal_set(swaps: Any, liquidity: Any, pool_symbol: str, config: DexPlanConfig) -> pa.Table:
    """Labelled Phase A signals of one pool (module docs), in time order."""
    columns = DexColumns.from_tables(swaps, liquidity)
    at = columns.block_times()
    features = dex_features(columns, at)
    signals = phase_a(features, config.phase_a)
    index = signals.index
    ts = at[index]
    price = features["price"][index]
    labels = reward_scores(ts, signals.direction, price, columns.swap_ts, columns.price,
                           config.horizon_ns, config.decay_per_minute)
    window = config.phase_a.imbalance_window_s
    rows: dict[str, Any] = {
        "id": [f"{pool_symbol}:{int(t)}:{n}" for n, t in enumerate(ts)],
        "timestamp": ts, "pair_symbol": [config.pair_symbol] * len(ts),
        "signal_type": signals.signal_type,
        "predicted_reward": [None] * len(ts),
        "actual_reward": [None if math.isnan(v) else float(v) for v in labels.reward_score],
        "dex_price": price, "cex_price": price, "cex_source": ["derived_from_dex"] * len(ts),
        "dex_orderflow_imbalance": features[f"imbalance_{window}s"][index],
        "cex_orderbook_depth_5pct": [None] * len(ts),
        "market_regime": minute_regimes(columns.swap_ts, columns.price, ts, config.regime),
        "data_latency_ms": [None] * len(ts), "execution_latency_ms": [None] * len(ts),
        "estimated_slippage_pct": [None] * len(ts), "actual_slippage_pct": [None] * len(ts),
        "direction": signals.direction, "confirmations": signals.confirmations,
        "ready_ts": labels.ready_ts, "minutes_to_favorable": labels.minutes_to_favorable,
    }
    for name in LEARNING_FEATURES:
        if name == "log_volume_30s":
            rows[name] = np.log1p(features["volume_30s"][index])
        elif name == "log_volume_ratio":
            rows[name] = np.log1p(features["volume_ratio"][index])
        elif name in _CLIPPED:
            rows[name] = np.clip(features[name][index], -_CLIPPED[name], _CLIPPED[name])
        elif name not in rows:
            rows[name] = features[name][index]
    reasons = []
    for label_reason, regime in zip(labels.reason, rows["market_regime"], strict=True):
        why = dict(_NULL_REASONS)
        if label_reason:
            why["actual_reward"] = label_reason
        if regime is not None:
            del why["market_regime"]
        reasons.append(json.dumps(why, sort_keys=True))
    rows["null_reasons"] = reasons
    return pa.table(rows)


def minute_regimes(price_ts: np.ndarray, price: np.ndarray, at: np.ndarray,
                   config: RegimeConfig) -> list[str | None]:
    """The online regime of 1-minute closes as of each time in `at`: the regime after the last
    minute that had ended by then (None while the detector warms up). One update per minute."""
    minute = price_ts // 60_000_000_000
    ends = np.flatnonzero(np.diff(minute, append=minute[-1] + 1) != 0) if len(minute) else (
        np.empty(0, np.int64))
    closes_ts = (minute[ends] + 1) * 60_000_000_000  # a minute is known once it has ended
    detector = RegimeDetector(config)
    regimes = [detector.update(float(value)) for value in price[ends]]
    known = np.searchsorted(closes_ts, at, "right") - 1
    return [None if index < 0 or regimes[index] == "warming_up" else regimes[index]
            for index in known]


def learning_rows(table: pa.Table) -> list[tuple[int, int, dict[str, float], float]]:
    """(ts, ready_ts, features, reward) of the labelled rows; NaN features are left out."""
    data = {name: table.column(name).to_pylist() for name in (
        "timestamp", "ready_ts", "actual_reward", "market_regime", *LEARNING_FEATURES)}
    rows = []
    for position, target in enumerate(data["actual_reward"]):
        if target is None:
            continue
        features = {name: float(data[name][position]) for name in LEARNING_FEATURES
                    if data[name][position] is not None and math.isfinite(data[name][position])}
        regime = data["market_regime"][position]
        if regime is not None:  # dense one-hot: a scaler sees no variance in a lone 1.0
            features.update({f"regime_{name}": float(name == regime) for name in REGIMES
                             if name != "warming_up"})
        rows.append((int(data["timestamp"][position]), int(data["ready_ts"][position]),
                     features, float(target)))
    return rows
