"""The DEX join on the real Uniswap v3 day: what a bar sees of the pool never depends on how the
two streams interleave, never includes an event at or after its close, and equals the features
computed over the whole day at once (trimming the held history loses nothing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataflows.dex_join import DexChunk, DexJoinState, DexTapeSource, dex_chunks, join_dex
from dataflows.steps import StagedChunk, compute_indicators, fold_bars, validate_events
from engine.batches import BAR_FIELDS, BarColumns, FeatureBatch
from engine.dex.features import DexColumns, dex_features
from storage.dex_tape import read_dex_tape
from storage.tape import TapeReader
from tests.support.dex import dex_and_cex_tapes

HOUR = 3_600_000_000_000
SYMBOLS = frozenset({"ETHUSDT"})


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return dex_and_cex_tapes(tmp_path_factory.mktemp("dex_join"))


def _batches(cex: Path) -> list[FeatureBatch]:
    states: list[object] = [None, None, None]
    batches = []
    for chunk in TapeReader(cex).iter_chunks(2_000, HOUR):
        states[0], staged = validate_events(states[0], StagedChunk(chunk=chunk))  # type: ignore[arg-type]
        states[1], staged = fold_bars(states[1], staged, timeframes=("1m", "5m"))  # type: ignore[arg-type]
        states[2], batch = compute_indicators(states[2], staged, specs=())  # type: ignore[arg-type]
        batches.append(batch)
    return batches


def _join(items: list[FeatureBatch | DexChunk]) -> list[FeatureBatch]:
    state = None
    released: list[FeatureBatch] = []
    for item in items:
        state, out = join_dex(state, item, dex_symbols=SYMBOLS)
        released.extend(out)
    return released


def _bars(batches: list[FeatureBatch], timeframe: str) -> dict[str, np.ndarray]:
    frames = [batch.bars[timeframe].columns for batch in batches if len(batch.bars[timeframe])]
    return {name: np.concatenate([frame[name] for frame in frames]) for name in frames[0]}


def test_interleavings_release_the_same_bars_with_the_whole_days_features(
        day: tuple[Path, Path]) -> None:
    dex_path, cex_path = day
    batches = _batches(cex_path)
    chunks = list(dex_chunks(dex_path, "ETHUSDT", HOUR))
    assert len(batches) > 3 and len(chunks) > 20
    alternating: list[FeatureBatch | DexChunk] = []
    for index in range(max(len(batches), len(chunks))):
        alternating.extend(batches[index:index + 1])
        alternating.extend(chunks[index:index + 1])
    orders = {"dex_first": [*chunks, *batches], "cex_first": [*batches, *chunks],
              "alternating": alternating}
    released = {name: _join(items) for name, items in orders.items()}
    first = released["dex_first"]
    assert [batch.sequence for batch in first] == [batch.sequence for batch in batches]
    for timeframe in ("1m", "5m"):
        expected = _bars(first, timeframe)
        for name in ("cex_first", "alternating"):
            got = _bars(released[name], timeframe)
            assert got.keys() == expected.keys()
            for column in expected:
                np.testing.assert_array_equal(got[column], expected[column], err_msg=column)
    # the same values as the features over the whole day, one nanosecond before each close
    dex = read_dex_tape(dex_path)
    whole = dex_features(DexColumns.from_tables(dex.swaps, dex.liquidity),
                         _bars(first, "1m")["ts_close"].astype(np.int64) - 1)
    bars = _bars(first, "1m")
    for name, values in whole.items():
        np.testing.assert_array_equal(bars[f"dex_{name}"], values, err_msg=name)
    assert np.isfinite(bars["dex_imbalance_30s"]).sum() > 100


def test_a_block_stamped_at_the_close_is_not_seen_by_that_bar(day: tuple[Path, Path]) -> None:
    dex_path, _ = day
    state = DexJoinState(joined=True)
    for chunk in dex_chunks(dex_path, "ETHUSDT", HOUR):
        state.on_dex(chunk)
    assert state.history is not None
    swap_ts, price = state.history.swap_ts, state.history.price
    # blocks where the price moved: a bar closing exactly at one must see the price before it
    moved = np.flatnonzero((np.diff(price) != 0) & (np.diff(swap_ts) > 0))[:50] + 1
    closes = swap_ts[moved]
    frame = BarColumns("1m", {name: np.zeros(len(closes)) for name in BAR_FIELDS}
                       | {"ts_close": closes, "ts_open": closes - 60_000_000_000})
    seen = state._with_dex(frame).columns
    np.testing.assert_array_equal(seen["dex_price"], price[moved - 1])
    assert np.all(seen["dex_price"] != price[moved])


def test_a_pair_without_a_pool_passes_straight_through(day: tuple[Path, Path]) -> None:
    _, cex_path = day
    batches = _batches(cex_path)
    state = None
    for batch in batches:
        state, out = join_dex(state, batch, dex_symbols=frozenset({"BTCUSDT"}))
        assert out == [batch]


def test_a_missing_dex_tape_fails_before_the_run_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"DEX tape of ETHUSDT .*not a DEX tape"):
        DexTapeSource({"ETHUSDT": tmp_path / "nowhere"}, HOUR)
