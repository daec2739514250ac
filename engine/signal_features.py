"""The features of a signal for an online learner, and the names of the DEX columns on bars.

Kept apart from `engine.signal_learner` so the engine can build them without importing River.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

DEX_PREFIX = "dex_"  # bar columns of the pair's DEX pool (dataflows.dex_join)
FEATURE_PREFIXES = (DEX_PREFIX,)
BAR_FEATURES = ("order_flow_imbalance", "top_imbalance")
_LEVELS = ("dex_price", "dex_liquidity", "dex_volume_10s", "dex_volume_30s")  # not scale-free


def signal_features(direction: int, bar: Mapping[str, float],
                    details: Mapping[str, object]) -> dict[str, float]:
    """The sample of a signal: scale-free numbers only (price levels and raw volumes are left
    out or logged), missing and non-finite values dropped."""
    features: dict[str, float] = {"direction": float(direction)}
    for name, value in bar.items():
        if name.startswith(FEATURE_PREFIXES) or name in BAR_FEATURES:
            if name in _LEVELS:
                if name.startswith("dex_volume") and value >= 0:
                    features[f"log_{name}"] = math.log1p(value)
                continue
            features[name] = value
    confirmations = details.get("confirmations")
    if isinstance(confirmations, int | float):
        features["confirmations"] = float(confirmations)
    clipped = {name: max(-1.0, min(1.0, value)) if "liquidity_" in name else value
               for name, value in features.items()}
    return {name: float(value) for name, value in clipped.items() if math.isfinite(value)}
