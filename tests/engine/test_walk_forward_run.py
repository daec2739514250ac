"""`ats walkforward` on the bundled klines: candidates replayed as Ray tasks give the same report
as one after the other, every window is reported, and bad parameters are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.cli_research import parse_param
from engine.config import load_config
from engine.runtime import REPO_ROOT
from engine.walk_forward_run import candidates, run_walk_forward, with_overrides
from tests.support.kline_tape import kline_tape

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]
PARAMS = {"strategy.fast_period": [5, 10], "strategy.slow_period": [20, 30]}


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory, klines_csv: Path) -> Path:
    return kline_tape(klines_csv, tmp_path_factory.mktemp("wf") / "tape", minutes=8 * 1440)


def test_parallel_and_sequential_runs_report_the_same_windows(tape: Path,
                                                              tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "configs" / "ema_cross.yaml")
    settings = {"in_sample": "3d", "out_of_sample": "1d", "step": "1d"}
    parallel = run_walk_forward(tape, config, PARAMS, out=tmp_path, **settings)
    sequential = run_walk_forward(tape, config, PARAMS, parallel=False, **settings)
    assert parallel["windows"] == sequential["windows"]
    assert len(parallel["windows"]) == 4  # 8 days: in-sample 3, out-of-sample 1, step 1
    for row in parallel["windows"]:
        assert set(row["in_sample_sharpes"]) == {
            f"strategy.fast_period={fast}, strategy.slow_period={slow}"
            for fast in (5, 10) for slow in (20, 30)}
        assert row["best"] in row["in_sample_sharpes"]
    written = json.loads((tmp_path / "walkforward.json").read_text())
    assert written["accepted"] == parallel["accepted"]
    assert len(written["candidates"]) == 4


def test_the_command_prints_every_window_and_the_verdict(
        tape: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walkforward", "--tape", str(tape), "--config",
                 str(REPO_ROOT / "configs" / "ema_cross.yaml"), "--param",
                 "strategy.slow_period=20,30", "--in-sample", "3d", "--out-of-sample", "2d",
                 "--step", "2d", "--sequential"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("  window ") == 2  # windows at days 0 and 2 (the data ends before 8)
    assert "of 2 windows hold 70% of their in-sample Sharpe" in printed


def test_candidates_and_overrides_are_checked() -> None:
    assert len(candidates(PARAMS)) == 4
    assert candidates(PARAMS, "random", samples=2, seed=1) == candidates(
        PARAMS, "random", samples=2, seed=1)
    assert len(candidates(PARAMS, "random", samples=9)) == 4
    config = load_config(REPO_ROOT / "configs" / "ema_cross.yaml")
    assert with_overrides(config, {"strategy.fast_period": 7}).strategy.fast_period == 7  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="no key 'fastest'"):
        with_overrides(config, {"strategy.fastest": 7})
    with pytest.raises(ValueError, match="fast_period"):
        with_overrides(config, {"strategy.fast_period": 0})
    assert parse_param("strategy.stop_atr=1,1.5,x") == ("strategy.stop_atr", [1, 1.5, "x"])
    with pytest.raises(ValueError, match="key=value1,value2"):
        parse_param("strategy.stop_atr")


def test_bayesian_search_is_seeded_and_replays_each_candidate_once(tape: Path) -> None:
    config = load_config(REPO_ROOT / "configs" / "ema_cross.yaml")
    settings = {"in_sample": "3d", "out_of_sample": "1d", "step": "1d",
                "search": "bayesian", "samples": 3, "seed": 5}
    first = run_walk_forward(tape, config, PARAMS, **settings)  # type: ignore[arg-type]
    again = run_walk_forward(tape, config, PARAMS, **settings)  # type: ignore[arg-type]
    assert first["windows"] == again["windows"]
    labels = [candidate["label"] for candidate in first["candidates"]]
    assert len(labels) == len(set(labels)) <= 4  # a candidate is replayed once
    assert len(first["windows"]) == 4
    for row in first["windows"]:
        assert row["best"] in labels and set(row["in_sample_sharpes"]) == set(labels)
