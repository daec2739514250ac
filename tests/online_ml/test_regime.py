"""RegimeDetector: each regime where it should be on shaped series, a plausible mix on a month of
real 1-minute BTCUSDT bars, deterministic and picklable, bad closes refused."""

from __future__ import annotations

import csv
import math
import pickle
import random
from collections import Counter
from pathlib import Path

import pytest

from online_ml.regime import REGIMES, RegimeConfig, RegimeDetector


def _run(closes: list[float], volumes: list[float] | None = None) -> list[str]:
    detector = RegimeDetector(RegimeConfig(warmup_bars=60))
    volumes = volumes or [1.0] * len(closes)
    return [detector.update(close, volume) for close, volume in zip(closes, volumes, strict=True)]


def _walk(steps: int, drift: float, sigma: float, seed: int, start: float = 100.0) -> list[float]:
    rng, closes = random.Random(seed), [start]
    for _ in range(steps - 1):
        closes.append(closes[-1] * math.exp(drift + rng.gauss(0.0, sigma)))
    return closes


def test_shaped_series_get_their_regime() -> None:
    assert _run(_walk(300, 0.0, 0.001, 1))[:59] == ["warming_up"] * 59
    assert Counter(_run(_walk(400, 0.0, 0.001, 2))[100:]).most_common(1)[0][0] == "ranging"
    assert _run(_walk(300, 0.002, 0.001, 3))[-1] == "trending_up"
    assert _run(_walk(300, -0.002, 0.001, 4))[-1] == "trending_down"
    calm_then_wild = _walk(300, 0.0, 0.001, 5)
    calm_then_wild += _walk(15, 0.0, 0.01, 6, calm_then_wild[-1])[1:]
    assert _run(calm_then_wild)[-1] == "high_volatility"
    wild_then_calm = _walk(300, 0.0, 0.004, 7)
    wild_then_calm += _walk(40, 0.0, 0.0003, 8, wild_then_calm[-1])[1:]
    assert _run(wild_then_calm)[-1] == "compression"
    crash = _walk(300, 0.0, 0.001, 9)
    crash.append(crash[-1] * 0.97)
    volumes = [1.0] * 300 + [10.0]
    assert _run(crash, volumes)[-1] == "capitulation"
    assert _run(crash, [1.0] * 301)[-1] != "capitulation"  # no volume behind it


def test_real_month_of_bars_has_a_plausible_mix(klines_csv: Path) -> None:
    detector = RegimeDetector()
    with klines_csv.open() as handle:
        seen = Counter(detector.update(float(row["close"]), float(row["volume"]))
                       for row in csv.DictReader(handle))
    total = sum(seen.values())
    assert set(seen) <= set(REGIMES) and total > 40_000
    assert seen["ranging"] / total > 0.5
    for regime in ("trending_up", "trending_down", "compression", "high_volatility",
                   "capitulation"):
        assert 0 < seen[regime] / total < 0.1, regime


def test_detector_pickles_and_refuses_bad_closes() -> None:
    detector = RegimeDetector()
    closes = _walk(200, 0.001, 0.001, 10)
    for close in closes[:150]:
        detector.update(close)
    clone = pickle.loads(pickle.dumps(detector))
    assert [detector.update(c) for c in closes[150:]] == [clone.update(c) for c in closes[150:]]
    for bad in (math.nan, 0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="close must be finite"):
            detector.update(bad)
