"""`ats walkforward`: the walk-forward of `engine.analytics.walk_forward` on a tape (the wiring,
like `engine.experiment_run` for experiments).

Candidates are parameter overrides of the run config by dotted key
(`strategy.donchian_period=10,20,30`): every combination (`grid`), `samples` of them drawn
without replacement with a seed (`random`), or chosen by optuna's TPE sampler (`bayesian`): per
window a seeded study of `samples` trials maximising the in-sample Sharpe, each trial learning
from the last, so they run one after another. Each candidate is one replay of the whole tape, in
process: grid and random ones as parallel Ray tasks (or one after the other with
`parallel=False`), Bayesian ones once each, whichever window asks first. The windows then read
the candidates' equity curves: a window picks the best in-sample candidate among all evaluated.
Writes `walkforward.json` (windows, candidates, settings) into `out` when given.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np

from engine.analytics.performance import EquityCurve
from engine.analytics.walk_forward import Window, rolling_windows, walk_forward, window_metrics
from engine.config import RunConfig, parse_config
from engine.timeframes import parse_duration_ns

Search = Literal["grid", "random", "bayesian"]


def candidates(params: Mapping[str, Sequence[Any]], search: Search = "grid",
               samples: int = 10, seed: int = 7) -> list[dict[str, Any]]:
    """The parameter sets of the module docs, in a stable order."""
    if not params:
        raise ValueError("give at least one parameter to search (--param key=v1,v2)")
    names = list(params)
    grid = [dict(zip(names, values, strict=True))
            for values in itertools.product(*(list(params[name]) for name in names))]
    if search == "grid":
        return grid
    if search != "random":
        raise ValueError(f"search {search!r}: candidates are listed for grid or random")
    chosen = np.random.default_rng(seed).choice(len(grid), size=min(samples, len(grid)),
                                                replace=False)
    return [grid[index] for index in sorted(chosen)]


def with_overrides(config: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """The config with dotted keys set; validated again, so a bad value names its key."""
    data = config.model_dump(mode="json")
    for key, value in overrides.items():
        node = data
        *path, last = key.split(".")
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"parameter {key!r}: the config has no section {part!r}")
            node = node[part]
        if last not in node:
            raise ValueError(f"parameter {key!r}: the config has no key {last!r} there")
        node[last] = value
    return parse_config(data, f"walk-forward candidate {dict(overrides)}")


def replay_equity(tape: str, config_json: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Replay `tape` in process into a scratch journal; its equity curve and summary."""
    from engine.runtime import run_replay

    config = parse_config(json.loads(config_json)).model_copy(
        update={"actors": "in_process"})
    with tempfile.TemporaryDirectory(prefix="ats-walkforward-") as scratch:
        result = run_replay([Path(tape)], config, Path(scratch) / "journal.duckdb",
                            in_process=True)
        with duckdb.connect(str(result.journal_path), read_only=True) as connection:
            rows = connection.execute(
                "SELECT ts_event, equity FROM equity ORDER BY ts_event, key").fetchall()
    summary = {key: result.summary.get(key) for key in ("round_trips", "pnl", "max_drawdown")}
    return (np.asarray([row[0] for row in rows], np.int64),
            np.asarray([row[1] for row in rows], np.float64), summary)


Run = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def label_of(overrides: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in overrides.items())


def _windows(runs: Sequence[Run], tape: Path, in_sample: str, out_of_sample: str,
             step: str) -> list[Window]:
    starts = [int(ts[0]) for ts, _, _ in runs if len(ts)]
    ends = [int(ts[-1]) + 1 for ts, _, _ in runs if len(ts)]
    if not starts:
        raise ValueError(f"{tape}: no candidate produced an equity curve")
    return rolling_windows(min(starts), max(ends), parse_duration_ns(in_sample),
                           parse_duration_ns(out_of_sample), parse_duration_ns(step))


def _bayesian(evaluate: Callable[[dict[str, Any]], Run], params: Mapping[str, Sequence[Any]],
              initial_equity: float, window_of: Callable[[Sequence[Run]], list[Window]],
              trials: int, seed: int) -> tuple[list[dict[str, Any]], list[Run]]:
    """Per window, an optuna TPE study (seeded per window) of `trials` trials maximising the
    in-sample Sharpe; a candidate is replayed once, whichever window asks for it first."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache: dict[str, tuple[dict[str, Any], Run]] = {}

    def run_of(overrides: dict[str, Any]) -> Run:
        label = label_of(overrides)
        if label not in cache:
            cache[label] = (overrides, evaluate(overrides))
        return cache[label][1]

    first = candidates(params)[0]
    for window in window_of([run_of(first)]):
        def objective(trial: Any, window: Window = window) -> float:
            overrides = {key: trial.suggest_categorical(key, list(values))
                         for key, values in params.items()}
            ts, equity, _ = run_of(overrides)
            sharpe = window_metrics(EquityCurve(ts, equity, initial_equity),
                                    *window.in_sample)["sharpe"]
            return sharpe if math.isfinite(sharpe) else -1e9

        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=seed + window.index))
        study.optimize(objective, n_trials=trials)
    return [item[0] for item in cache.values()], [item[1] for item in cache.values()]


def run_walk_forward(tape: Path, config: RunConfig, params: Mapping[str, Sequence[Any]], *,
                     in_sample: str, out_of_sample: str, step: str,
                     search: Search = "grid", samples: int = 10,
                     seed: int = 7, min_ratio: float = 0.7, parallel: bool = True,
                     out: Path | None = None, ray_address: str | None = None) -> dict[str, Any]:
    """Run the walk-forward of the module docs and return its report."""
    def payload(overrides: Mapping[str, Any]) -> str:
        return with_overrides(config, overrides).model_dump_json()

    def window_of(runs: Sequence[Run]) -> list[Window]:
        return _windows(runs, tape, in_sample, out_of_sample, step)

    if search == "bayesian":
        sets, runs = _bayesian(lambda overrides: replay_equity(str(tape), payload(overrides)),
                               params, config.initial_equity, window_of, samples, seed)
    else:
        sets = candidates(params, search, samples, seed)
        payloads = [payload(overrides) for overrides in sets]
        if parallel:
            import ray

            from actors.experiment_tasks import replay_equity_task
            from engine.runtime import start_ray

            start_ray(address=ray_address)
            runs = ray.get([replay_equity_task.remote(str(tape), item) for item in payloads])
        else:
            runs = [replay_equity(str(tape), item) for item in payloads]
    labels = [label_of(overrides) for overrides in sets]
    curves = {label: EquityCurve(ts, equity, config.initial_equity)
              for label, (ts, equity, _) in zip(labels, runs, strict=True)}
    report = walk_forward(curves, window_of(runs), min_ratio)
    report.update({
        "tape": str(tape), "search": search, "seed": seed, "in_sample": in_sample,
        "out_of_sample": out_of_sample, "step": step,
        "candidates": [{"label": label, "parameters": overrides, **summary}
                       for label, overrides, (_, _, summary) in zip(labels, sets, runs,
                                                                    strict=True)],
    })
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "walkforward.json").write_text(json.dumps(report, indent=2, default=str))
    return report
