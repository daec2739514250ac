"""The bundled Uniswap v3 day as a DEX tape and the CEX tape derived from it, for DEX-led runs."""

from __future__ import annotations

from pathlib import Path

from engine.dex.derived_tape import cex_tape_from_dex
from storage.dex_tape import DexPool
from storage.importers.uniswap_v3 import import_uniswap_v3
from tests.conftest import BUNDLED_DATA, REPO_ROOT

DAY = BUNDLED_DATA / "uniswap-v3" / (
    "ethereum-0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640-2024-01-05.raw.csv.gz")
POOL_CONFIG = REPO_ROOT / "configs" / "dex" / "uniswap_v3_usdc_weth_005.yaml"
PLAN_FIELDS = (
    "id", "timestamp", "pair_symbol", "signal_type", "predicted_reward", "actual_reward",
    "dex_price", "cex_price", "dex_orderflow_imbalance", "cex_orderbook_depth_5pct",
    "market_regime", "data_latency_ms", "execution_latency_ms", "estimated_slippage_pct",
    "actual_slippage_pct",
)


def dex_and_cex_tapes(root: Path) -> tuple[Path, Path]:
    """The real day's DEX tape and its derived ETHUSDT tape under `root`."""
    dex, cex = root / "dex", root / "cex"
    import_uniswap_v3([DAY], dex, DexPool.load(POOL_CONFIG))
    cex_tape_from_dex(dex, cex, "ETHUSDT")
    return dex, cex
