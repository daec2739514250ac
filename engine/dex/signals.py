"""Phase A of the DEX-led plan: rule-based signals from DEX order flow, over feature columns.

Three detectors, evaluated at each time of the features (`engine.dex.features`):
- `imbalance`: takers bought (or sold) at least `imbalance_threshold` of the base volume over
  the imbalance window, on at least `min_window_volume` of quote volume. Directional.
- `liquidity`: the pool's active liquidity moved at least `liquidity_velocity_threshold` in a
  minute, or its velocity changed by `liquidity_acceleration_threshold` (liquidity arriving or
  leaving ahead of a move). A confirmation, not a direction.
- `absorption`: volume at least `volume_ratio_threshold` times its recent average while the price
  moved at most `flat_price_bps`: size is being absorbed. Takes the imbalance's direction.

A signal is emitted where at least `min_confirmations` detectors fire and a direction is known;
`confirmations` (1 to 3) is its strength, `signal_type` names the detectors ("imbalance+liquidity").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DETECTORS = ("imbalance", "liquidity", "absorption")


class PhaseAConfig(BaseModel):
    """Thresholds of the Phase A detectors (re-optimised by the maintenance agent later)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    imbalance_window_s: int = Field(30, ge=10, le=30, description="10 to 30 s")
    imbalance_threshold: float = Field(0.6, gt=0, le=1)
    min_window_volume: float = Field(50_000.0, ge=0, description="quote volume in the window")
    liquidity_velocity_threshold: float = Field(0.05, gt=0, description="relative, per minute")
    liquidity_acceleration_threshold: float = Field(0.05, gt=0)
    volume_ratio_threshold: float = Field(3.0, gt=1)
    flat_price_bps: float = Field(5.0, ge=0)
    min_confirmations: int = Field(1, ge=1, le=3)


@dataclass(frozen=True)
class PhaseASignals:
    """Emitted signals, one row per index: where they fired and what fired."""

    index: np.ndarray  # positions in the evaluated times
    direction: np.ndarray  # +1 long, -1 short
    confirmations: np.ndarray
    signal_type: list[str]

    def __len__(self) -> int:
        return len(self.index)


def phase_a(features: Mapping[str, np.ndarray], config: PhaseAConfig) -> PhaseASignals:
    """The signals of the module docs over the feature columns."""
    window = config.imbalance_window_s
    imbalance = features[f"imbalance_{window}s"]
    volume = features[f"volume_{window}s"]
    with np.errstate(invalid="ignore"):
        fired_imbalance = (np.abs(imbalance) >= config.imbalance_threshold) & (
            volume >= config.min_window_volume)
        fired_liquidity = (
            np.abs(features["liquidity_velocity"]) >= config.liquidity_velocity_threshold) | (
            np.abs(features["liquidity_acceleration"]) >= config.liquidity_acceleration_threshold)
        fired_absorption = (features["volume_ratio"] >= config.volume_ratio_threshold) & (
            np.abs(features[f"price_change_{window}s"]) * 1e4 <= config.flat_price_bps)
    fired = np.stack([fired_imbalance, fired_liquidity, fired_absorption])
    direction = np.where(np.isfinite(imbalance), np.sign(imbalance), 0.0).astype(np.int8)
    direction = np.where(fired_imbalance | fired_absorption, direction, 0).astype(np.int8)
    confirmations = fired.sum(axis=0)
    emitted = np.flatnonzero((confirmations >= config.min_confirmations) & (direction != 0))
    names = np.asarray(DETECTORS)
    types = ["+".join(names[fired[:, row]]) for row in emitted]
    return PhaseASignals(emitted, direction[emitted], confirmations[emitted], types)
