"""`ats experiment` on the real Uniswap v3 day: seeded and reproducible (in parallel Ray tasks as
one after the other), predictions made before their labels are known, every output written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import online_ml.experiment as experiment
from engine.experiment_run import run_experiment
from online_ml.experiment import run_model
from online_ml.learner import DelayedLearner
from storage.dex_tape import DexPool
from storage.importers.uniswap_v3 import import_uniswap_v3
from tests.conftest import BUNDLED_DATA, REPO_ROOT

pytestmark = pytest.mark.slow

DAY = BUNDLED_DATA / "uniswap-v3" / (
    "ethereum-0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640-2024-01-05.tick.csv.gz")


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dex") / "tape"
    pool = DexPool.load(REPO_ROOT / "configs" / "dex" / "uniswap_v3_usdc_weth_005.yaml")
    import_uniswap_v3([DAY], out, pool)
    return out


def _outputs(out: Path) -> tuple[list[dict[str, str]], list[dict[str, object]]]:
    with (out / "metrics.csv").open() as handle:
        metrics = list(csv.DictReader(handle))
    return metrics, pq.read_table(out / "predictions.parquet").to_pylist()


def test_experiment_is_reproducible_and_writes_everything(tape: Path, tmp_path: Path) -> None:
    first = run_experiment(tape, ["lr", "htr", "arf"], "reward_score", tmp_path / "a",
                           parallel=False)
    run_experiment(tape, ["lr", "htr", "arf"], "reward_score", tmp_path / "b", parallel=False)
    assert _outputs(tmp_path / "a") == _outputs(tmp_path / "b")
    metrics, predictions = _outputs(tmp_path / "a")
    assert [row["model"] for row in metrics] == ["linear", "hoeffding_tree", "adaptive_forest"]
    assert len(predictions) == 3 * first["labelled"] and first["labelled"] > 1_500
    assert all(float(row["mae"]) < 0.01 for row in metrics)
    assert (tmp_path / "a" / "rolling_error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "a" / "experiment.json").read_text())
    assert summary["cex_source"] == "derived_from_dex" and summary["seed"] == 7
    assert pq.read_table(tmp_path / "a" / "signals.parquet").num_rows == first["signals"]
    with pytest.raises(FileExistsError):
        run_experiment(tape, ["lr"], "reward_score", tmp_path / "a", parallel=False)
    with pytest.raises(ValueError, match="learns reward_score"):
        run_experiment(tape, ["lr"], "pnl", tmp_path / "c", parallel=False)


def test_parallel_ray_tasks_give_the_sequential_result(ray_session: None, tape: Path,
                                                      tmp_path: Path) -> None:
    run_experiment(tape, ["lr", "arf"], "reward_score", tmp_path / "ray", parallel=True)
    run_experiment(tape, ["lr", "arf"], "reward_score", tmp_path / "seq", parallel=False)
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "seq")


def test_each_prediction_is_made_before_its_label_is_learned(
        monkeypatch: pytest.MonkeyPatch) -> None:
    learned_at: list[tuple[int, float]] = []
    clock: list[DelayedLearner] = []

    class Recording:
        def predict_one(self, x: dict[str, float]) -> float:
            return 0.0

        def learn_one(self, x: dict[str, float], y: float) -> None:
            learned_at.append((clock[0].clock, x["t"]))

    original = experiment.DelayedLearner

    def recording_learner(model: object, horizon_ns: int) -> DelayedLearner:
        learner = original(Recording(), horizon_ns)
        clock.append(learner)
        return learner

    monkeypatch.setattr(experiment, "DelayedLearner", recording_learner)
    samples = [(t, t + 10, {"t": float(t)}, float(t)) for t in range(0, 50, 3)]
    run = run_model(samples, "linear")
    assert len(run.prediction) == len(samples)
    assert learned_at and all(now >= t + 10 for now, t in learned_at)
