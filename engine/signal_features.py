"""The features of a signal for an online learner, and the names of the DEX columns on bars.

Scale-free numbers only, so a model learns relations rather than price levels:
- the pool's order flow: every `dex_*` bar column (`dataflows.dex_join`), volumes as logs,
  liquidity velocity and acceleration clipped to +-1 (a just-in-time mint can move liquidity 7x
  in a minute), the pool's price left out;
- the DEX-CEX spread: log(dex_price / close);
- the CEX book: top-of-book imbalance, depth within 5% (log of both sides) and its imbalance,
  the bar's taker order-flow imbalance;
- data latency in seconds, when the data has receive times;
- the market regime of the pair's 1-minute closes, one-hot (dense: a scaler sees no variance in
  a lone 1.0);
- the signal's direction and its detectors' confirmations.
Missing and non-finite values are left out. Kept apart from `engine.signal_learner` so the
engine can build them without importing River.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from online_ml.regime import REGIMES

DEX_PREFIX = "dex_"  # bar columns of the pair's DEX pool (dataflows.dex_join)
_LEVELS = ("dex_price", "dex_liquidity")  # not scale-free
_LOGGED = ("dex_volume_10s", "dex_volume_30s")
_CLIPPED = ("dex_liquidity_velocity", "dex_liquidity_acceleration")
_BOOK = ("order_flow_imbalance", "top_imbalance")


def signal_features(direction: int, bar: Mapping[str, float], details: Mapping[str, object],
                    regime: str | None = None) -> dict[str, float]:
    """The sample of a signal (module docs)."""
    features: dict[str, float] = {"direction": float(direction)}
    for name, value in bar.items():
        if not name.startswith(DEX_PREFIX) or name in _LEVELS:
            continue
        if name in _LOGGED:
            features[f"log_{name}"] = math.log1p(value) if value >= 0 else math.nan
        elif name in _CLIPPED:
            features[name] = max(-1.0, min(1.0, value))
        else:
            features[name] = value
    close, dex_price = bar.get("close", math.nan), bar.get("dex_price", math.nan)
    if close > 0 and dex_price > 0:
        features["dex_cex_spread"] = math.log(dex_price / close)
    for name in _BOOK:
        features[name] = bar.get(name, math.nan)
    bid, ask = bar.get("depth_bid_5pct", math.nan), bar.get("depth_ask_5pct", math.nan)
    if bid >= 0 and ask >= 0 and bid + ask > 0:
        features["log_depth_5pct"] = math.log1p(bid + ask)
        features["depth_imbalance_5pct"] = (bid - ask) / (bid + ask)
    latency = bar.get("data_latency_ms", math.nan)
    features["data_latency_s"] = latency / 1_000
    if regime is not None:
        features.update({f"regime_{name}": float(name == regime) for name in REGIMES
                         if name != "warming_up"})
    confirmations = details.get("confirmations")
    if isinstance(confirmations, int | float):
        features["confirmations"] = float(confirmations)
    return {name: float(value) for name, value in features.items() if math.isfinite(value)}
