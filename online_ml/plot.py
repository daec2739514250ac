"""The experiment's picture: each model's rolling error over time, with its drift points."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from online_ml.experiment import ModelRun, rolling_mae

_NS_PER_HOUR = 3_600_000_000_000


def plot_rolling_error(runs: Sequence[ModelRun], window: int, path: Path, title: str) -> Path:
    """Write a PNG of every run's rolling MAE (x: hours since the first prediction), drift
    points marked where ADWIN flagged them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 4.5), dpi=110)
    start = min(int(run.ts[0]) for run in runs)
    for run in runs:
        hours = (run.ts - start) / _NS_PER_HOUR
        curve = rolling_mae(run, window)
        line = axes.plot(hours, curve, linewidth=1.2, label=f"{run.model}")[0]
        if run.drift_ts:
            at = np.searchsorted(run.ts, np.asarray(run.drift_ts), "right") - 1
            at = np.clip(at, 0, len(run.ts) - 1)
            axes.scatter(hours[at], np.nan_to_num(curve[at], nan=np.nanmin(curve)), marker="v",
                         s=36, color=line.get_color(), zorder=3,
                         label=f"{run.model} drift ({len(run.drift_ts)})")
    axes.set_title(title)
    axes.set_xlabel("hours since the first prediction")
    axes.set_ylabel(f"rolling MAE ({window} predictions)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path
