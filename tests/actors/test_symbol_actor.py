"""SymbolActor: checkpoint and restore give the same results as an uninterrupted actor."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from actors.journal_actor import JournalActor
from actors.risk_actor import PortfolioRiskActor
from actors.symbol_actor import SymbolActor
from dataflows.steps import StagedChunk, compute_indicators, fold_bars, validate_events
from engine.batches import FeatureBatch, MarketChunk
from engine.config import RunConfig, parse_config
from engine.symbol_engine import SymbolEngine
from engine.synth import synthesize_trades
from storage.klines import read_klines_csv

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]
FOREVER = 2**63 - 1


def _batches(klines_csv: Path, config: RunConfig) -> list[FeatureBatch]:
    trades = synthesize_trades(read_klines_csv(klines_csv), seed=5, minutes=120)
    cut = len(trades) // 3
    parts = [trades.take(slice(0, cut)), trades.take(slice(cut, 2 * cut)),
             trades.take(slice(2 * cut, len(trades)))]
    specs = tuple(SymbolEngine.required_indicators(config))
    states: list[object] = [None, None, None]
    batches = []
    for index, part in enumerate(parts):
        chunk = MarketChunk("BTCUSDT", index, part, end_of_stream=index == 2)
        states[0], staged = validate_events(states[0], StagedChunk(chunk=chunk))  # type: ignore[arg-type]
        states[1], staged = fold_bars(states[1], staged, timeframes=config.timeframes)  # type: ignore[arg-type]
        states[2], batch = compute_indicators(states[2], staged, specs=specs)  # type: ignore[arg-type]
        batches.append(batch)
    return batches


def _run(config: RunConfig, batches: list[FeatureBatch], journal: Path, restart_after: int | None
         ) -> list[tuple[bool, int, int]]:
    journal_actor = JournalActor.remote(str(journal), "run")
    risk = PortfolioRiskActor.remote(config.risk, config.initial_equity, journal_actor)
    actor = SymbolActor.remote("BTCUSDT", config, risk, journal_actor)
    outcomes = []
    for index, batch in enumerate(batches):
        result = ray.get(actor.step.remote(batch, FOREVER))
        outcomes.append((result.paused, result.watermark, len(result.updates)))
        if index == restart_after:
            state = ray.get(actor.checkpoint.remote())
            ray.kill(actor)
            actor = SymbolActor.remote("BTCUSDT", config, risk, journal_actor)
            ray.get(actor.restore.remote(state))
    ray.get(actor.finish.remote())
    ray.get(risk.finish.remote())
    ray.get(journal_actor.close.remote())
    for handle in (actor, risk, journal_actor):
        ray.kill(handle)
    return outcomes


@pytest.mark.parametrize("learning", [
    None,
    {"model": "arf", "horizon": "5m", "min_prediction": 0.0},
    # signals scored and labelled: after 3 labels only candidates act, and none reaches 1.0
    {"model": "lr", "target": "reward_score", "horizon": "10m", "phase_b_after": 3,
     "candidate_threshold": 1.0},
], ids=["no_learner", "bar_learner", "signal_learner"])
def test_restored_actor_continues_exactly(tmp_path: Path, klines_csv: Path,
                                          learning: dict[str, object] | None) -> None:
    """Killed after its first batch and restored from its checkpoint, an actor journals what an
    uninterrupted one does; with a learner, the model comes back with it (its predictions and
    the signals its gate refuses are the same)."""
    from storage.journal import read_table

    config = parse_config({"timeframes": ["1m"], "strategy": {"kind": "ema_cross"},
                           "learning": learning})
    batches = _batches(klines_csv, config)
    straight = _run(config, batches, tmp_path / "a.duckdb", restart_after=None)
    restarted = _run(config, batches, tmp_path / "b.duckdb", restart_after=0)
    assert straight == restarted
    for table in ("signals", "fills", "trades", "risk_decisions", "features"):
        rows = read_table(tmp_path / "a.duckdb", table, deterministic_only=True)
        assert rows == read_table(tmp_path / "b.duckdb", table, deterministic_only=True)
    assert read_table(tmp_path / "a.duckdb", "fills")
    if learning is not None:
        signals = str(read_table(tmp_path / "b.duckdb", "signals"))
        predicted = "predicted_reward" if "target" in learning else "predicted_return"
        assert predicted in signals and "learner_gate" in signals


def test_restore_refuses_another_symbols_state(klines_csv: Path, tmp_path: Path) -> None:
    config = parse_config({"timeframes": ["1m"], "strategy": {"kind": "ema_cross"}})
    journal_actor = JournalActor.remote(str(tmp_path / "j.duckdb"), "run")
    risk = PortfolioRiskActor.remote(config.risk, config.initial_equity, journal_actor)
    btc = SymbolActor.remote("BTCUSDT", config, risk, journal_actor)
    eth = SymbolActor.remote("ETHUSDT", config, risk, journal_actor)
    with pytest.raises(ray.exceptions.RayTaskError, match="not a SymbolEngine for ETHUSDT"):
        ray.get(eth.restore.remote(ray.get(btc.checkpoint.remote())))
    for handle in (btc, eth, risk, journal_actor):
        ray.kill(handle)
