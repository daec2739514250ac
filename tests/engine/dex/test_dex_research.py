"""DEX features, Phase A signals and reward labels on the real Uniswap v3 day: features at a time
never change when later swaps are removed; labels follow their formula; signals carry every
field of the plan's schema, each NULL with its reason."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.compute as pc
import pytest

from engine.dex.dataset import DexPlanConfig, learning_rows, signal_set
from engine.dex.features import DexColumns, dex_features
from engine.dex.labels import reward_scores
from engine.dex.signals import PhaseAConfig, phase_a
from storage.dex_tape import DexPool, DexTape, read_dex_tape
from storage.importers.uniswap_v3 import import_uniswap_v3
from tests.conftest import BUNDLED_DATA, REPO_ROOT
from tests.support.dex import PLAN_FIELDS

DAY = BUNDLED_DATA / "uniswap-v3" / (
    "ethereum-0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640-2024-01-05.raw.csv.gz")
POOL = DexPool.load(REPO_ROOT / "configs" / "dex" / "uniswap_v3_usdc_weth_005.yaml")
MINUTE = 60_000_000_000


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> DexTape:
    out = tmp_path_factory.mktemp("dex") / "tape"
    import_uniswap_v3([DAY], out, POOL)
    return read_dex_tape(out)


def test_features_at_a_time_ignore_everything_later(tape: DexTape) -> None:
    columns = DexColumns.from_tables(tape.swaps, tape.liquidity)
    at = columns.block_times()
    whole = dex_features(columns, at)
    cut = int(at[len(at) // 2])
    early_swaps = tape.swaps.filter(pc.less_equal(tape.swaps["ts_event"], cut))
    early_liquidity = tape.liquidity.filter(pc.less_equal(tape.liquidity["ts_event"], cut))
    early = dex_features(DexColumns.from_tables(early_swaps, early_liquidity),
                         at[at <= cut])
    for name, values in early.items():
        np.testing.assert_array_equal(values, whole[name][: len(values)], err_msg=name)
    assert np.nanmax(np.abs(whole["imbalance_30s"])) <= 1.0
    # the first block has two swaps: its price is the second's
    assert np.isfinite(whole["liquidity"][-1]) and whole["price"][0] == pytest.approx(
        2269.7594, abs=1e-3)


def test_reward_score_follows_its_formula() -> None:
    price_ts = np.asarray([0, 1, 2, 3, 30], np.int64) * MINUTE
    price = np.asarray([100.0, 101.0, 103.0, 99.0, 200.0])
    labels = reward_scores(np.asarray([0, 0, 20 * MINUTE], np.int64), np.asarray([1, -1, 1]),
                           np.asarray([100.0, 100.0, 99.0]), price_ts, price,
                           horizon_ns=20 * MINUTE, decay_per_minute=0.1)
    # long: best 103 two minutes in; short: best 99 three minutes in; the last runs past the data
    assert labels.reward_score[0] == pytest.approx(0.03 * math.exp(-0.2))
    assert labels.reward_score[1] == pytest.approx(0.01 * math.exp(-0.3))
    assert math.isnan(labels.reward_score[2])
    assert labels.reason == ["", "", "horizon runs past the end of the data"]
    assert list(labels.ready_ts) == [20 * MINUTE, 20 * MINUTE, 40 * MINUTE]


def test_detectors_fire_and_confirm() -> None:
    features = {
        "imbalance_30s": np.asarray([0.9, -0.8, 0.9, 0.1, np.nan]),
        "volume_30s": np.asarray([1e6, 1e6, 10.0, 1e6, 1e6]),
        "liquidity_velocity": np.asarray([0.2, 0.0, 0.0, 0.3, 0.0]),
        "liquidity_acceleration": np.asarray([0.0, 0.0, 0.0, 0.0, 0.0]),
        "volume_ratio": np.asarray([5.0, 1.0, 1.0, 1.0, 9.0]),
        "price_change_30s": np.asarray([0.0001, 0.01, 0.0, 0.0, 0.0]),
    }
    signals = phase_a(features, PhaseAConfig())
    # row 2: too little volume; row 3: liquidity alone has no direction; row 4: no imbalance
    assert list(signals.index) == [0, 1]
    assert list(signals.direction) == [1, -1]
    assert signals.signal_type == ["imbalance+liquidity+absorption", "imbalance"]
    assert list(signals.confirmations) == [3, 1]


def test_signal_set_fills_every_plan_field_or_explains_it(tape: DexTape) -> None:
    config = DexPlanConfig()
    table = signal_set(tape.swaps, tape.liquidity, "WETHUSDC", config)
    assert table.num_rows > 1_000
    assert set(PLAN_FIELDS) <= set(table.column_names)
    for row in table.to_pylist():
        reasons = json.loads(row["null_reasons"])
        for name in PLAN_FIELDS:
            assert row[name] is not None or reasons.get(name), (name, row["id"])
        assert row["cex_source"] == "derived_from_dex"
    timestamps = table.column("timestamp").to_pylist()
    assert timestamps == sorted(timestamps)
    rows = learning_rows(table)
    assert len(rows) == sum(value is not None for value in table.column("actual_reward").
                            to_pylist())
    assert all(ready - ts == config.horizon_ns for ts, ready, _, _ in rows)
    assert all(math.isfinite(value) for _, _, features, _ in rows for value in features.values())
    again = signal_set(tape.swaps, tape.liquidity, "WETHUSDC", config)
    assert json.dumps(again.to_pylist()) == json.dumps(table.to_pylist())  # NaN-aware
