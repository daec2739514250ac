"""`ats experiment`: online-learning experiments on a recorded DEX stream (the wiring, like
`engine.runtime` for runs).

From a DEX tape it builds the DEX-led plan's labelled signals (`engine.dex.dataset`), runs a
progressive validation per model (`online_ml.experiment`), one Ray task each (or one after the
other with `parallel=False`), and writes into `out`:
- `signals.parquet`: every signal with the plan's fields (NULLs explained in `null_reasons`);
- `predictions.parquet`: each model's prediction and the realised target per signal;
- `metrics.csv`: one row per model (MAE, RMSE, R2, direction hit rate, candidates above the
  threshold and their mean reward, drift points);
- `rolling_error.png`: rolling error over time with drift points;
- `experiment.json`: inputs, seed, settings, and that the CEX side is derived.
Seeded: the same tape, models and seed give the same tables, in parallel or not.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.dex.dataset import DexPlanConfig, learning_rows, signal_set
from online_ml.experiment import ModelRun, run_model, summarize
from online_ml.models import resolve_name
from online_ml.plot import plot_rolling_error
from storage.dex_tape import read_dex_tape

TARGETS = ("reward_score",)


def run_experiment(tape: Path, models: Sequence[str], target: str, out: Path, *, seed: int = 7,
                   config: DexPlanConfig | None = None, parallel: bool = True,
                   candidate_threshold: float = 0.005, rolling_window: int = 100,
                   ray_address: str | None = None) -> dict[str, Any]:
    """Run the experiment of the module docs; returns its summary (also in experiment.json)."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: the DEX-led plan learns {', '.join(TARGETS)}")
    names = [resolve_name(model) for model in models]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"models {list(models)}: give one or more distinct models")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose another --out")
    config = config or DexPlanConfig()
    dex = read_dex_tape(tape)
    signals = signal_set(dex.swaps, dex.liquidity, dex.pool.symbol, config)
    samples = learning_rows(signals)
    runs = _run_all(samples, names, seed, parallel, ray_address)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(signals, out / "signals.parquet")
    pq.write_table(_predictions(runs), out / "predictions.parquet")
    metrics = [summarize(run, candidate_threshold) for run in runs]
    with (out / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(metrics[0]))
        writer.writeheader()
        writer.writerows(metrics)
    plot_rolling_error(runs, rolling_window, out / "rolling_error.png",
                       f"{dex.pool.symbol} -> {config.pair_symbol}: {target}, "
                       f"{len(samples)} labelled signals")
    summary = {
        "tape": str(tape), "pool": dex.pool.model_dump(), "target": target, "models": names,
        "seed": seed, "parallel": parallel, "config": config.model_dump(),
        "signals": signals.num_rows, "labelled": len(samples),
        "cex_source": "derived_from_dex", "metrics": metrics,
    }
    (out / "experiment.json").write_text(json.dumps(summary, indent=2, sort_keys=True,
                                                    default=str))
    return summary


def _run_all(samples: list[Any], names: list[str], seed: int, parallel: bool,
             ray_address: str | None) -> list[ModelRun]:
    if not parallel:
        return [run_model(samples, name, seed) for name in names]
    import ray

    from actors.experiment_tasks import run_model_task
    from engine.runtime import start_ray

    start_ray(address=ray_address)
    shared = ray.put(samples)
    runs: list[ModelRun] = ray.get([run_model_task.remote(shared, name, seed)
                                    for name in names])
    return runs


def _predictions(runs: Sequence[ModelRun]) -> pa.Table:
    columns: dict[str, list[Any]] = {"model": [], "ts_event": [], "prediction": [],
                                     "target": []}
    for run in runs:
        columns["model"].extend([run.model] * len(run.ts))
        columns["ts_event"].extend(run.ts.tolist())
        columns["prediction"].extend(run.prediction.tolist())
        columns["target"].extend(run.target.tolist())
    return pa.table(columns)
