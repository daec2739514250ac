"""The DEX tape: one AMM pool's swaps and liquidity events, as Parquet columns.

A directory holds `swaps.parquet`, `liquidity.parquet`, `dex.json` (the pool, the sources, row
counts, time span, dead-letter counts) and `dead_letters.csv`. It is written atomically: into a
temporary sibling directory, then renamed, so a failed import leaves nothing at the target.

Prices are the pool's, in human units: `price` is the quote token per base token (USDC per WETH
for the USDC/WETH pool), from sqrtPriceX96 and the tokens' decimals. Integers wider than 64 bits
(amounts, sqrtPriceX96, liquidity) keep their exact decimal text in `*_raw` columns beside float
columns for analysis. Event time is the block's timestamp; events of one block keep their chain
order in `block_number`, `log_index`.

Swap columns: ts_event, block_number, log_index, tx_hash, sender, recipient, amount0, amount1,
amount0_raw, amount1_raw, sqrt_price_x96, price, tick, liquidity, liquidity_raw, base_amount,
quote_amount, side (+1: the taker bought the base token from the pool, -1: sold it to the pool).

Liquidity columns: ts_event, block_number, log_index, tx_hash, kind (mint, burn, collect),
account (the position's owner for a burn or collect, the caller for a mint: what raw and
decoded logs both carry), tick_lower, tick_upper, amount (the position's liquidity: + minted,
- burned, 0 for a collect), amount_raw, amount0, amount1, amount0_raw, amount1_raw, in_range
(the range held the pool's tick of the last swap before it), pool_liquidity (the pool's
active liquidity after the event; NaN before the first swap of the tape tells it).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from storage.importers.session import DeadLetterLog

FORMAT = "ats-dex-tape"
VERSION = 1

SWAP_SCHEMA = pa.schema([
    ("ts_event", pa.int64()), ("block_number", pa.int64()), ("log_index", pa.int64()),
    ("tx_hash", pa.string()), ("sender", pa.string()), ("recipient", pa.string()),
    ("amount0", pa.float64()), ("amount1", pa.float64()), ("amount0_raw", pa.string()),
    ("amount1_raw", pa.string()), ("sqrt_price_x96", pa.string()), ("price", pa.float64()),
    ("tick", pa.int32()), ("liquidity", pa.float64()), ("liquidity_raw", pa.string()),
    ("base_amount", pa.float64()), ("quote_amount", pa.float64()), ("side", pa.int8()),
])

LIQUIDITY_SCHEMA = pa.schema([
    ("ts_event", pa.int64()), ("block_number", pa.int64()), ("log_index", pa.int64()),
    ("tx_hash", pa.string()), ("kind", pa.string()), ("account", pa.string()),
    ("tick_lower", pa.int32()), ("tick_upper", pa.int32()), ("amount", pa.float64()),
    ("amount_raw", pa.string()), ("amount0", pa.float64()), ("amount1", pa.float64()),
    ("amount0_raw", pa.string()), ("amount1_raw", pa.string()), ("in_range", pa.bool_()),
    ("pool_liquidity", pa.float64()),
])


class Token(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    symbol: str = Field(min_length=1)
    decimals: int = Field(ge=0, le=36)


class DexPool(BaseModel):
    """An AMM pool: where it lives, its two tokens, and which one prices are quoted in."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    chain: str = "ethereum"
    protocol: Literal["uniswap-v3"] = "uniswap-v3"
    address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    token0: Token
    token1: Token
    fee_bps: float = Field(ge=0, description="the pool's fee tier in bps (5 for 0.05%)")
    base: str = Field(description="the token prices are per unit of (WETH in USDC/WETH)")
    symbol: str = Field(min_length=1, description="the DEX tape's symbol, e.g. WETHUSDC")

    @model_validator(mode="after")
    def _base_is_a_token(self) -> DexPool:
        if self.base not in (self.token0.symbol, self.token1.symbol):
            raise ValueError(f"base {self.base!r} is neither token0 {self.token0.symbol!r} nor "
                             f"token1 {self.token1.symbol!r}")
        return self

    @property
    def base_is_token1(self) -> bool:
        return self.base == self.token1.symbol

    @classmethod
    def load(cls, path: str | Path) -> DexPool:
        """A pool from YAML; errors name the file and the key."""
        try:
            return cls.model_validate(yaml.safe_load(Path(path).read_text()))
        except (OSError, yaml.YAMLError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None


@dataclass(frozen=True)
class DexTape:
    """A DEX tape read back: its metadata and both tables."""

    path: Path
    meta: dict[str, Any]
    swaps: pa.Table
    liquidity: pa.Table

    @property
    def pool(self) -> DexPool:
        return DexPool.model_validate(self.meta["pool"])


def write_dex_tape(out: Path, pool: DexPool, swaps: pa.Table, liquidity: pa.Table,
                   meta: dict[str, Any], dead_letters: DeadLetterLog) -> Path:
    """Write the tape atomically (temporary sibling, then rename); refuses an existing target."""
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex}"
    temp.mkdir()
    try:
        pq.write_table(swaps.cast(SWAP_SCHEMA), temp / "swaps.parquet")
        pq.write_table(liquidity.cast(LIQUIDITY_SCHEMA), temp / "liquidity.parquet")
        dead_letters.publish(temp / "dead_letters.csv")
        document = {"format": FORMAT, "version": VERSION, "pool": pool.model_dump(), **meta}
        (temp / "dex.json").write_text(json.dumps(document, indent=2, sort_keys=True))
        for name in ("swaps.parquet", "liquidity.parquet", "dex.json", "dead_letters.csv"):
            with open(temp / name, "rb") as handle:
                os.fsync(handle.fileno())
        os.rename(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return out


def read_dex_tape(path: str | Path) -> DexTape:
    """Read a DEX tape directory; a clear error when it is not one."""
    root = Path(path)
    try:
        meta = json.loads((root / "dex.json").read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{root} is not a DEX tape (dex.json: {error})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{root}: dex.json has format {meta.get('format')!r} version "
                         f"{meta.get('version')!r}; expected {FORMAT!r} {VERSION}")
    swaps = pq.read_table(root / "swaps.parquet", schema=SWAP_SCHEMA)
    liquidity = pq.read_table(root / "liquidity.parquet", schema=LIQUIDITY_SCHEMA)
    return DexTape(root, meta, swaps, liquidity)
