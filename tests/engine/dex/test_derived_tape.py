"""The CEX tape derived from the real Uniswap v3 day: one trade per swap, in chain order, and
marked derived so it never passes for CEX data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.dex.derived_tape import CEX_SOURCE, derived_trades
from storage.dex_tape import read_dex_tape
from storage.tape import TapeReader
from tests.support.dex import dex_and_cex_tapes


def test_every_swap_is_one_trade_in_chain_order_and_the_tape_says_derived(
        tmp_path: Path) -> None:
    dex_path, cex_path = dex_and_cex_tapes(tmp_path)
    swaps = read_dex_tape(dex_path).swaps
    reader = TapeReader(cex_path)
    assert reader.symbols == ["ETHUSDT"]
    assert reader.metadata["synthetic"] is True
    assert reader.metadata["cex_source"] == CEX_SOURCE
    assert reader.metadata["pool"]["symbol"] == "WETHUSDC"
    trades = reader.read_table("trades")
    assert trades.num_rows == swaps.num_rows > 5_000
    ts = trades.column("ts_event").to_numpy()
    assert np.all(np.diff(ts) > 0)  # swaps of one block keep their order, 1 us apart
    assert np.array_equal(ts, trades.column("ts_recv").to_numpy())  # no latency invented
    order = np.lexsort((swaps.column("log_index").to_numpy(),
                        swaps.column("block_number").to_numpy()))
    assert np.allclose(trades.column("price").to_numpy(), swaps.column("price").to_numpy()[order])
    assert np.allclose(trades.column("qty").to_numpy(),
                       np.abs(swaps.column("base_amount").to_numpy()[order]))
    assert set(trades.column("side").to_pylist()) == {-1, 1}


def test_a_swap_without_a_price_is_refused_and_named() -> None:
    swaps = pa.table({"ts_event": [1_000, 1_000], "block_number": [7, 7], "log_index": [3, 9],
                      "price": [2_000.0, float("nan")], "base_amount": [1.0, -2.0],
                      "side": pa.array([-1, 1], pa.int8())})
    with pytest.raises(ValueError, match="block 7 log 9"):
        derived_trades(swaps)
