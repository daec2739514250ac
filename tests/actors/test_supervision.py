"""A symbol actor killed mid-replay is brought back by the supervisor from its checkpoint, with
its online learner, and the run journals exactly what an uninterrupted run does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from actors.supervisor import Supervisor
from engine.config import LearningConfig, RunConfig, SupervisionConfig
from engine.runtime import run_replay
from storage.journal import read_table
from storage.schemas import JOURNAL_TABLES
from tests.engine.test_runtime import _competing_config
from tests.support.metrics import scrape
from tests.support.tapes import two_symbol_tape

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def _journal(path: Path) -> dict[str, list[tuple[object, ...]]]:
    return {table: read_table(path, table, deterministic_only=True)
            for table in JOURNAL_TABLES if table != "runs"}


def _kill_on_call(monkeypatch: pytest.MonkeyPatch, symbol: str, call: int) -> list[int]:
    """Kill `symbol`'s actor right after its `call`-th step is sent (the step is in flight)."""
    original = Supervisor._call
    sent: list[int] = []

    def kill_after(self: Supervisor, state: Any, item: Any, granted: int) -> Any:
        ref = original(self, state, item, granted)
        if state is self._symbols[symbol]:
            sent.append(1)
            if len(sent) == call:
                ray.kill(state.actor, no_restart=True)
        return ref

    monkeypatch.setattr(Supervisor, "_call", kill_after)
    return sent


def test_a_killed_actor_with_its_learner_comes_back_and_the_journal_is_unchanged(
        tmp_path: Path, klines_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tape = two_symbol_tape(klines_csv, tmp_path / "tape", minutes=240)
    config: RunConfig = _competing_config(batch_rows=20_000).model_copy(update={
        "learning": LearningConfig(model="lr", target="reward_score", horizon="15m",
                                   phase_b_after=5, candidate_threshold=0.0),
        "supervision": SupervisionConfig(checkpoint_every=3, max_restarts=1)})
    straight = run_replay([tape], config, tmp_path / "straight.duckdb", 1, in_process=True)
    sent = _kill_on_call(monkeypatch, "ETHUSDT", call=8)
    restarted = run_replay([tape], config, tmp_path / "restarted.duckdb", 1, metrics_port=0)
    assert len(sent) > 8, "the kill came before the end of the replay"
    assert scrape(int(restarted.timings["metrics_port"]))["ats_actor_restarts_total"] == 1
    assert restarted.summary["pauses"] > 0, "the horizon must bind across the restart"
    journal = _journal(restarted.journal_path)
    assert journal == _journal(straight.journal_path)
    signals = str(journal["signals"])
    assert "predicted_reward" in signals and '"phase":"B"' in signals
    assert restarted.summary["portfolio"] == straight.summary["portfolio"]


def test_an_actor_dying_more_often_than_allowed_fails_the_run(
        tmp_path: Path, klines_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tape = two_symbol_tape(klines_csv, tmp_path / "tape", minutes=60)
    config = _competing_config(batch_rows=20_000).model_copy(
        update={"supervision": SupervisionConfig(max_restarts=0)})
    _kill_on_call(monkeypatch, "BTCUSDT", call=2)
    with pytest.raises(RuntimeError, match="BTCUSDT died and is not restarted"):
        run_replay([tape], config, tmp_path / "journal.duckdb", 1)
