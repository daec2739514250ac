"""The maintenance agent: drift alerts on a changed error, a retrained model swapped in only when
it beats the current one on a holdout, and Phase A thresholds re-tuned on the real Uniswap day."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from engine.dex.dataset import DexPlanConfig
from engine.dex.features import DexColumns
from engine.dex.tuning import DEFAULT_GRID, tune_phase_a
from online_ml.learner import LearnedSample
from online_ml.maintenance import DriftMonitor, retrain, tune_thresholds
from online_ml.models import make_regressor
from storage.dex_tape import DexPool, read_dex_tape
from storage.importers.uniswap_v3 import import_uniswap_v3
from tests.conftest import BUNDLED_DATA, REPO_ROOT


def test_drift_monitor_alerts_when_the_error_changes() -> None:
    rng = random.Random(3)
    monitor = DriftMonitor("linear", delta=0.002)
    alerts = []
    for step in range(2_000):
        error = rng.gauss(0.0, 0.001) + (0.01 if step >= 1_000 else 0.0)
        alert = monitor.observe(LearnedSample(str(step), step, step + 10, 0.0, error))
        if alert is not None:
            alerts.append(alert)
    assert alerts and all(alert.ts_event >= 1_000 for alert in alerts)
    row = alerts[0].row()
    assert row["kind"] == "drift" and "ADWIN" in row["detail"] and row["model"] == "linear"


def _samples(count: int, slope: float) -> list[tuple[int, int, dict[str, float], float]]:
    rng = random.Random(5)
    out = []
    for step in range(count):
        x = rng.uniform(-1, 1)
        out.append((step * 10, step * 10 + 5, {"x": x}, slope * x + rng.gauss(0, 0.01)))
    return out


def test_retrain_swaps_only_a_better_model() -> None:
    samples = _samples(600, 2.0)
    stale = {ts: -2.0 * features["x"] for ts, _, features, _ in samples}  # learned the old sign
    decision = retrain(make_regressor("linear"), stale, samples, "linear")
    assert decision.swapped and decision.fresh_mae < decision.current_mae
    assert decision.holdout_samples == 120 and decision.train_samples == 480
    assert "swapped in" in decision.row(0, "linear")["detail"]
    current = object()
    perfect = {ts: target for ts, _, _, target in samples}
    kept = retrain(current, perfect, samples, "linear")
    assert not kept.swapped and kept.model is current
    assert "kept the current model" in kept.row(0, "linear")["detail"]


def test_tune_thresholds_picks_the_best_point_with_enough_signals() -> None:
    rewards = np.asarray([0.1] * 10 + [0.05] * 40 + [-0.02] * 50)
    def keep(point: dict[str, float]) -> np.ndarray:
        return np.arange(100) < point["first"]
    result = tune_thresholds({"first": (10, 50, 100)}, keep, rewards, min_signals=30)
    assert result is not None and result.best == {"first": 50} and result.signals_kept == 50
    assert result.points_scored == 3
    assert tune_thresholds({"first": (10,)}, keep, rewards, min_signals=30) is None


@pytest.mark.slow
def test_phase_a_retuning_on_the_real_day_beats_or_matches_the_defaults(
        tmp_path: Path) -> None:
    pool = DexPool.load(REPO_ROOT / "configs" / "dex" / "uniswap_v3_usdc_weth_005.yaml")
    day = BUNDLED_DATA / "uniswap-v3" / (
        "ethereum-0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640-2024-01-05.tick.csv.gz")
    import_uniswap_v3([day], tmp_path / "tape", pool)
    tape = read_dex_tape(tmp_path / "tape")
    columns = DexColumns.from_tables(tape.swaps, tape.liquidity)
    config = DexPlanConfig()
    since = int(columns.swap_ts[0]) + 12 * 3_600_000_000_000  # the latest 12 hours
    tuned = tune_phase_a(columns, config, since)
    assert tuned is not None
    new_config, result = tuned
    defaults = {"imbalance_threshold": (config.phase_a.imbalance_threshold,),
                "volume_ratio_threshold": (config.phase_a.volume_ratio_threshold,),
                "min_confirmations": (config.phase_a.min_confirmations,)}
    baseline = tune_phase_a(columns, config, since, grid=defaults)
    assert baseline is not None
    assert result.mean_reward >= baseline[1].mean_reward
    assert result.points_scored == int(np.prod([len(v) for v in DEFAULT_GRID.values()]))
    assert new_config.imbalance_threshold in DEFAULT_GRID["imbalance_threshold"]
    assert tune_phase_a(columns, config, since) == tuned  # deterministic
