from __future__ import annotations

import numpy as np

from engine.bench import count_crossings, reference_ema


def _naive_ema(values: list[float], period: int) -> list[float]:
    out = [float("nan")] * len(values)
    if len(values) < period:
        return out
    previous = sum(values[:period]) / period
    out[period - 1] = previous
    alpha = 2 / (period + 1)
    for index in range(period, len(values)):
        previous = previous + alpha * (values[index] - previous)
        out[index] = previous
    return out


def test_reference_ema_matches_the_definition() -> None:
    values = list(np.random.default_rng(3).normal(100, 5, 500))
    np.testing.assert_allclose(reference_ema(np.array(values), 10), _naive_ema(values, 10),
                               rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(reference_ema(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 3),
                                  [np.nan, np.nan, 2.0, 3.0, 4.0])


def test_count_crossings_ignores_touches_and_warm_up() -> None:
    fast = np.array([np.nan, 1.0, 2.0, 2.0, 1.0, 3.0, 3.0])
    slow = np.array([np.nan, 2.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # signs: -, +, 0 (touch), -, +, +  -> crossings at +, -, +  = 3
    assert count_crossings(fast, slow) == 3
