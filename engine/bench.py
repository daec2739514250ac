"""`ats bench replay`: ATS end to end against a vectorised NumPy reference, in one run.

The workload is the EMA-cross parity baseline on 1-minute bars. Both sides are timed from opening
the tape; ATS until its journal is closed, the reference until it has counted crossings. Starting
Ray is outside the timed span (a deployment keeps its cluster up) and reported as `ray_start_s`.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq

from engine.config import EmaCrossConfig, LearningConfig, RunConfig, load_config
from engine.timeframes import NS_PER_MINUTE


def reference_ema(values: np.ndarray, period: int) -> np.ndarray:
    """TA-Lib EMA (seeded with the SMA of the first `period` values), vectorised via lfilter."""
    from scipy.signal import lfilter

    result = np.full(len(values), np.nan)
    if len(values) < period:
        return result
    alpha = 2.0 / (period + 1)
    seed = values[:period].mean()
    tail = values[period:]
    filtered, _ = lfilter([alpha], [1.0, alpha - 1.0], tail, zi=[(1 - alpha) * seed])
    result[period - 1] = seed
    result[period:] = filtered
    return result


def count_crossings(fast: np.ndarray, slow: np.ndarray) -> int:
    """Crossings as ema_cross defines them: a non-zero sign differing from the last non-zero one."""
    valid = ~(np.isnan(fast) | np.isnan(slow))
    signs = np.sign(fast[valid] - slow[valid])
    nonzero = signs[signs != 0]
    return int(np.count_nonzero(nonzero[1:] != nonzero[:-1]))


def reference_run(tape: Path, strategy: EmaCrossConfig) -> dict[str, Any]:
    """Read the tape's trades, fold 1-minute closes and count EMA crossings, all in NumPy."""
    started = time.perf_counter()
    table = pq.read_table(tape / "trades.parquet", columns=["ts_event", "price"])
    ts_event = table.column("ts_event").to_numpy()
    price = table.column("price").to_numpy()
    minute = ts_event // NS_PER_MINUTE
    last_in_minute = np.flatnonzero(np.diff(minute)) if len(minute) else np.empty(0, np.int64)
    closes = price[np.append(last_in_minute, len(price) - 1)] if len(price) else price
    crossings = count_crossings(
        reference_ema(closes, strategy.fast_period), reference_ema(closes, strategy.slow_period)
    )
    elapsed = time.perf_counter() - started
    return {"trades": len(price), "seconds": elapsed, "crossings": crossings, "bars": len(closes)}


class PeakMemory:
    """Samples the resident memory of this process and all its descendants (Ray included)."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.peak_bytes = 0
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        root = psutil.Process()
        total = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def bench_replay(
    tape: Path,
    strategy: str = "ema_cross",
    config_path: Path | None = None,
    workers: int = 1,
    out: Path | None = None,
    learner: str | None = "linear",
) -> dict[str, Any]:
    """ATS and the reference on `tape`; with `learner`, ATS once more with that online learner
    per symbol (`learning:`, predicting every 1-minute bar), measured side by side: the
    learner's overhead is `learner_ratio` (its throughput over the plain run's, end to end) and
    `learner_ratio_steady` (the same from the moment each run's actors are ready: River's
    one-time import in a symbol actor is start-up, not throughput)."""
    from engine.runtime import REPO_ROOT, run_replay, start_ray
    from storage.report import count_signals

    if strategy != "ema_cross":
        raise ValueError(f"bench replay supports the parity baseline 'ema_cross', not {strategy!r}")
    config = load_config(config_path or REPO_ROOT / "configs" / "bench_ema_cross.yaml")
    if not isinstance(config.strategy, EmaCrossConfig):
        raise ValueError("the bench config's strategy must be ema_cross")
    with PeakMemory() as memory:
        ray_start_s = start_ray()
        reference = reference_run(tape, config.strategy)
        with tempfile.TemporaryDirectory(prefix="ats-bench-") as scratch:
            journal = Path(scratch) / "journal.duckdb"
            result = run_replay([tape], config, journal, workers)
            crossings = count_signals(journal, "ema_cross")
            learned: Any = None
            plain_again: Any = None
            if learner is not None:
                learning = LearningConfig(model=learner, horizon="5m")
                learned = run_replay([tape], config.model_copy(update={"learning": learning}),
                                     Path(scratch) / "learner.duckdb", workers)
                if count_signals(Path(scratch) / "learner.duckdb", "ema_cross") != crossings:
                    raise AssertionError("a learner without a gate changed the signals")
                # plain, learner, plain: the learner is compared with both plain runs' mean,
                # so neither gains from running later (warm caches)
                plain_again = run_replay([tape], config, Path(scratch) / "again.duckdb",
                                         workers)
    ats_seconds = result.timings["replay_s"]
    trades = reference["trades"]
    report: dict[str, Any] = {
        "trades": trades,
        "trades_per_s": round(trades / ats_seconds),
        "reference_trades_per_s": round(trades / reference["seconds"]),
        "ratio": round(reference["seconds"] / ats_seconds, 4),
        "crossings": crossings,
        "reference_crossings": reference["crossings"],
        "peak_rss_mb": round(memory.peak_bytes / 2**20, 1),
        "ray_start_s": round(ray_start_s, 3),
        "ats_seconds": round(ats_seconds, 3),
        "reference_seconds": round(reference["seconds"], 3),
        "bars_1m": reference["bars"],
        "actor_calls": result.summary.get("actor_calls"),
        "workers": workers,
    }
    if learner is not None and learned is not None:
        report.update(_learner_report(learner, trades, (result, plain_again), learned))
    if crossings != reference["crossings"]:
        raise AssertionError(
            f"crossing counts differ: ATS {crossings}, NumPy reference {reference['crossings']}"
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _learner_report(learner: str, trades: int, plain: tuple[Any, Any],
                    learned: Any) -> dict[str, Any]:
    """The learner's overhead against the mean of the plain runs before and after it."""
    plain_seconds = sum(run.timings["replay_s"] for run in plain) / 2
    plain_start = sum(run.timings["actors_start_s"] for run in plain) / 2
    learner_seconds = learned.timings["replay_s"]
    learner_start = learned.timings["actors_start_s"]
    import_s = river_import_seconds(LearningConfig(model=learner).model)
    return {
        "learner": LearningConfig(model=learner).model,
        "learner_trades_per_s": round(trades / learner_seconds),
        "plain_seconds_mean": round(plain_seconds, 3),
        "learner_seconds": round(learner_seconds, 3),
        "learner_ratio": round(plain_seconds / learner_seconds, 4),
        # River's one-time import in the symbol actor (paid once per process, ~1 s), timed in a
        # fresh Python
        "learner_import_s": round(import_s, 3),
        "learner_ratio_after_import": round(
            plain_seconds / max(learner_seconds - import_s, 1e-9), 4),
        # each run from the moment its actors are ready (the learner's: River imported) to the
        # end: the throughput once started
        "actors_start_s": round(plain_start, 3),
        "learner_actors_start_s": round(learner_start, 3),
        "learner_ratio_steady": round(
            (plain_seconds - plain_start) / (learner_seconds - learner_start), 4),
    }


def river_import_seconds(model: str) -> float:
    """How long a fresh Python takes to import what the learner `model` needs (median of 3)."""
    import statistics
    import subprocess
    import sys

    code = ("import time; t = time.perf_counter(); from online_ml.models import make_regressor; "
            f"make_regressor({model!r}); print(time.perf_counter() - t)")
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(3)]
    return statistics.median(runs)


def default_bench_config() -> RunConfig:
    return RunConfig(strategy=EmaCrossConfig())


def bench_montecarlo(out: Path | None = None, simulations: int = 10_000, trades: int = 1_000,
                     repeats: int = 3) -> dict[str, Any]:
    """`ats bench montecarlo`: seconds for `simulations` runs of `trades` trade returns, each
    method (reorder, resample), the best of `repeats`. The returns are seeded draws (mean 0.1%,
    deviation 1%): the work depends on the sizes only."""
    from engine.analytics.monte_carlo import METHODS, MonteCarloConfig, simulate

    returns = np.random.default_rng(1).normal(0.001, 0.01, trades)
    config = MonteCarloConfig(simulations=simulations)
    report: dict[str, Any] = {"simulations": simulations, "trades": trades, "target_s": 2.0}
    for method in METHODS:
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = simulate(returns, method, config, trades_per_year=365)
            timings.append(time.perf_counter() - start)
        report[f"{method}_s"] = round(min(timings), 3)
        report[f"{method}_ruin_probability"] = result["ruin_probability"]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def bench_research(bars_csv: Path, out: Path | None = None) -> dict[str, Any]:
    """`ats bench research`: the walk-forward and Monte Carlo of the breakout plan on the bundled
    1-minute klines, timed end to end (target: under 5 minutes together). The klines become a
    research tape (`engine.synth_ohlc`); 9 candidates (donchian 10/20/30 x stop ATR 1.0/1.5/2.0)
    run as Ray tasks over 6/2/2-day windows; then one replay with the defaults and 10,000 Monte
    Carlo runs of its trades by each method."""
    from engine.runtime import REPO_ROOT, run_replay
    from engine.synth_ohlc import ohlc_tape
    from engine.walk_forward_run import run_walk_forward
    from storage.performance_report import journal_monte_carlo

    config = load_config(REPO_ROOT / "configs" / "momentum_breakout.yaml")
    report: dict[str, Any] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ats-bench-research-") as scratch:
        tape = Path(scratch) / "tape"
        report["bars"] = ohlc_tape(bars_csv, tape)["bars"]
        mark = time.perf_counter()
        walk = run_walk_forward(
            tape, config, {"strategy.donchian_period": [10, 20, 30],
                           "strategy.stop_atr": [1.0, 1.5, 2.0]},
            in_sample="6d", out_of_sample="2d", step="2d")
        report["walk_forward_s"] = round(time.perf_counter() - mark, 2)
        report["windows"] = len(walk["windows"])
        report["windows_passed"] = walk["passed_windows"]
        mark = time.perf_counter()
        journal = run_replay([tape], config, Path(scratch) / "journal.duckdb",
                             in_process=True).journal_path
        carlo = journal_monte_carlo(journal)
        report["replay_and_monte_carlo_s"] = round(time.perf_counter() - mark, 2)
        report["trades"] = carlo["reorder"]["trades"] if "reorder" in carlo else 0
    report["total_s"] = round(time.perf_counter() - started, 2)
    report["target_s"] = 300.0
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report
