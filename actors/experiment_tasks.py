"""Ray tasks of `ats experiment`: one progressive validation per model, in parallel."""

from __future__ import annotations

from collections.abc import Sequence

import ray

from online_ml.experiment import ModelRun, Sample, run_model


@ray.remote(max_retries=2)  # pure and seeded: a retry computes the same run
def run_model_task(samples: Sequence[Sample], model: str, seed: int) -> ModelRun:
    return run_model(samples, model, seed)
