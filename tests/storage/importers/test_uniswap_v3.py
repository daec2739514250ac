"""Uniswap v3 pool logs to a DEX tape, on the real USDC/WETH 0.05% day: raw eth_getLogs rows and
demeter-fetch's decoded rows give the same tape; the pool's liquidity tracked through mints and
burns is what the next swap on chain reports; minute sums match the minute file; bad rows are
dead letters."""

from __future__ import annotations

import csv
import gzip
import itertools
from collections import defaultdict
from pathlib import Path

import pytest

from storage.dex_tape import DexPool, DexTape, read_dex_tape
from storage.importers.csv_blocks import ImportFormatError
from storage.importers.uniswap_v3 import import_uniswap_v3
from tests.conftest import BUNDLED_DATA, REPO_ROOT

DAY = BUNDLED_DATA / "uniswap-v3"
STEM = "ethereum-0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640-2024-01-05"
POOL = DexPool.load(REPO_ROOT / "configs" / "dex" / "uniswap_v3_usdc_weth_005.yaml")


def _csv(kind: str) -> list[dict[str, str]]:
    with gzip.open(DAY / f"{STEM}.{kind}.csv.gz", "rt", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[DexTape, DexTape]:
    root = tmp_path_factory.mktemp("dex")
    raw = import_uniswap_v3([DAY / f"{STEM}.raw.csv.gz"], root / "raw", POOL)
    decoded = import_uniswap_v3([DAY / f"{STEM}.tick.csv.gz"], root / "decoded", POOL)
    assert raw.dead_letter_count == decoded.dead_letter_count == 0
    return read_dex_tape(raw.path), read_dex_tape(decoded.path)


def test_raw_and_decoded_logs_give_the_same_tape(tapes: tuple[DexTape, DexTape]) -> None:
    raw, decoded = tapes
    assert raw.swaps.num_rows == 6_046 and raw.liquidity.num_rows == 188
    assert raw.swaps.equals(decoded.swaps)
    assert raw.liquidity.equals(decoded.liquidity)
    kinds = raw.liquidity.column("kind").to_pylist()
    assert (kinds.count("mint"), kinds.count("burn"), kinds.count("collect")) == (54, 69, 65)
    assert raw.meta["pool"]["symbol"] == "WETHUSDC" and raw.pool == POOL


def test_prices_and_sides_follow_the_pool(tapes: tuple[DexTape, DexTape]) -> None:
    swaps = tapes[0].swaps.to_pylist()
    first = swaps[0]  # 0.01 WETH sold to the pool for 22.68611 USDC
    assert (first["base_amount"], first["quote_amount"], first["side"]) == (0.01, -22.68611, -1)
    assert first["price"] == pytest.approx(2269.7458, abs=1e-3)
    assert all(2_150 < swap["price"] < 2_300 for swap in swaps)  # ETH on 2024-01-05
    for swap in swaps:  # the executed price is the pool price within its fee and impact
        if abs(swap["base_amount"]) > 0.1:
            executed = -swap["quote_amount"] / swap["base_amount"]
            assert executed == pytest.approx(swap["price"], rel=0.01)
    times = [(swap["block_number"], swap["log_index"]) for swap in swaps]
    assert times == sorted(times)


def test_pool_liquidity_through_mints_and_burns_is_what_the_next_swap_reports(
        tapes: tuple[DexTape, DexTape]) -> None:
    """The chain states the pool's active liquidity in every Swap event, so the value tracked
    after a mint or burn must equal the next swap's whenever that swap did not cross a tick (it
    stayed in the tick of the swap before the event). demeter-fetch's `total_liquidity` on
    MINT/BURN rows is only the value as of the previous swap: block 18937743 mints 3.7e20 in
    range at tick 199050, and its next swap reports 3.87e20."""
    tape = tapes[0]
    events = sorted(
        [(row["block_number"], row["log_index"], "swap", row["liquidity"], row["tick"])
         for row in tape.swaps.to_pylist()]
        + [(row["block_number"], row["log_index"], row["kind"], row["pool_liquidity"], None)
           for row in tape.liquidity.to_pylist() if row["kind"] != "collect"])
    checked, last_tick = 0, None
    for current, following in itertools.pairwise(events):
        kind, value = current[2], current[3]
        if kind == "swap":
            last_tick = current[4]
        elif following[2] == "swap" and following[4] == last_tick and value == value:
            assert value == following[3], current
            checked += 1
    assert checked > 50
    jit = next(row for row in tape.liquidity.to_pylist()
               if (row["block_number"], row["log_index"]) == (18937743, 2))
    assert jit["in_range"] and jit["pool_liquidity"] == float(386652769664017856909)
    in_range = [row["in_range"] for row in tape.liquidity.to_pylist()]
    assert any(in_range) and not all(in_range)


def test_minute_sums_match_the_minute_file(tapes: tuple[DexTape, DexTape]) -> None:
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    swaps = tapes[0].swaps.to_pylist()
    for swap in swaps:
        minute = swap["ts_event"] // 60_000_000_000
        sums[minute][0] += int(swap["amount0_raw"])
        sums[minute][1] += int(swap["amount1_raw"])
    minutes = _csv("minute")
    matched = 0
    for row in minutes:
        minute = int(row["timestamp"][11:13]) * 60 + int(row["timestamp"][14:16])
        key = swaps[0]["ts_event"] // 60_000_000_000 // 1440 * 1440 + minute
        if key in sums:
            assert sums[key] == [int(row["netAmount0"]), int(row["netAmount1"])], row
            matched += 1
    assert matched == len(sums) > 1_000


def test_bad_rows_are_dead_letters_and_bad_files_fail(tmp_path: Path) -> None:
    with gzip.open(DAY / f"{STEM}.raw.csv.gz", "rt", newline="") as handle:
        lines = handle.read().splitlines()[:4]
    header, swap = lines[0], lines[1]
    flash = swap.replace("0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67",
                         "0xbdbdb71d7860376ba52b25a5028beea23581364a40522f6bcfb86bb1f2dca633")
    short = swap[: swap.rindex(",") + 1] + "0x1234"
    source = tmp_path / "mixed.csv"
    source.write_text("\n".join([header, swap, flash, short, lines[2]]) + "\n")
    result = import_uniswap_v3([source], tmp_path / "tape", POOL)
    assert result.rows == {"swaps": 2, "liquidity": 0}
    assert result.dead_letter_reasons == {"unhandled_event": 1, "bad_data": 1}
    with open(tmp_path / "tape" / "dead_letters.csv") as handle:
        letters = list(csv.DictReader(handle))
    assert [(row["line"], row["reason"]) for row in letters] == [
        ("3", "unhandled_event"), ("4", "bad_data")]
    with pytest.raises(FileExistsError):
        import_uniswap_v3([source], tmp_path / "tape", POOL)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ImportFormatError, match="neither raw eth_getLogs rows"):
        import_uniswap_v3([other], tmp_path / "never", POOL)
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="base 'DAI' is neither"):
        DexPool.model_validate({**POOL.model_dump(), "base": "DAI"})


def test_cli_imports_a_day(tmp_path: Path) -> None:
    from engine.cli import main

    pool = REPO_ROOT / "configs" / "dex" / "uniswap_v3_usdc_weth_005.yaml"
    out = tmp_path / "tape"
    assert main(["import", "uniswap-v3", str(DAY / f"{STEM}.tick.csv.gz"), "--pool", str(pool),
                 "--out", str(out)]) == 0
    assert read_dex_tape(out).meta["rows"] == {"swaps": 6_046, "liquidity": 188}
