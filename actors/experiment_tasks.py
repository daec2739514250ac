"""Ray tasks of `ats experiment`: one progressive validation per model, in parallel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from online_ml.experiment import ModelRun, Sample, run_model


@ray.remote(max_retries=2)  # pure and seeded: a retry computes the same run
def run_model_task(samples: Sequence[Sample], model: str, seed: int) -> ModelRun:
    return run_model(samples, model, seed)


@ray.remote(max_retries=2)  # a deterministic replay into its own scratch journal: retry-safe
def replay_equity_task(tape: str, config_json: str) -> tuple[Any, Any, dict[str, Any]]:
    """One walk-forward candidate: replay `tape` in this worker (no actors) and return its
    equity curve (times, values) and run summary."""
    from engine.walk_forward_run import replay_equity

    return replay_equity(tape, config_json)
