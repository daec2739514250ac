"""SymbolActor: one per symbol, holding the strategy, its state and the paper matcher.

A thin Ray shell around `engine.symbol_engine.SymbolEngine`. It is called once per feature batch
(never per trade). Intents whose time is below the horizon the supervisor grants are decided at
once through the PortfolioRiskActor; the first one at or beyond it pauses the step.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import ray

from engine.batches import FeatureBatch
from engine.config import RunConfig
from engine.execution.config import LiveTradingConfig
from engine.feature_rows import add_feature_rows
from engine.symbol_engine import StepResult, SymbolEngine
from engine.types import OrderIntent, PortfolioUpdate, RiskDecision


class RayRiskGateway:
    """Synchronous gateway to the PortfolioRiskActor; a round trip per intent, which is rare."""

    def __init__(self, risk_actor: Any) -> None:
        self._risk_actor = risk_actor

    def decide(self, intent: OrderIntent, updates: Sequence[PortfolioUpdate]) -> RiskDecision:
        decision: RiskDecision = ray.get(self._risk_actor.decide.remote(intent, list(updates)))
        return decision


@ray.remote(max_restarts=0)
class SymbolActor:
    def __init__(self, symbol: str, config: RunConfig, risk_actor: Any, journal: Any) -> None:
        self._symbol = symbol
        self._engine = SymbolEngine(symbol, config)
        self._feature_timeframe = (
            config.strategy.timeframe if config.replay.journal_features else None
        )
        self._gateway = RayRiskGateway(risk_actor)
        self._journal = journal
        self._last_append: Any = None

    def step(self, batch: FeatureBatch | None, horizon: int, *dependencies: Any) -> StepResult:
        """Process a batch (or resume the paused one). `dependencies` are refs Ray resolves first
        (the supervisor's latest risk submit), which orders this step after them."""
        result = self._engine.step(batch, horizon, self._gateway)
        add_feature_rows(result.journal, self._symbol, batch, self._feature_timeframe)
        return self._ship_journal(result)

    def finish(self, *dependencies: Any) -> StepResult:
        result = self._ship_journal(self._engine.finish(self._gateway))
        if self._last_append is not None:
            ray.get(self._last_append)  # the journal closes after every symbol has finished
        return result

    def _ship_journal(self, result: StepResult) -> StepResult:
        if any(result.journal.values()):
            self._last_append = self._journal.append_many.remote(result.journal)
            result.journal = {}
        return result

    def attach_execution(self, execution_actor: Any, settings: LiveTradingConfig) -> None:
        """`ats live --execute`: this symbol's orders go to the ExecutionActor."""
        from actors.execution_actor import RayExecutionPort

        self._engine.attach_execution(RayExecutionPort(execution_actor), settings)

    def checkpoint(self) -> bytes:
        """The engine state, for the supervisor to restore after a restart."""
        return pickle.dumps(self._engine)

    def restore(self, state: bytes) -> None:
        engine = pickle.loads(state)
        if not isinstance(engine, SymbolEngine) or engine.symbol != self._symbol:
            raise ValueError(f"checkpoint is not a SymbolEngine for {self._symbol}")
        self._engine = engine
