"""Streaming indicators against plain loop implementations of TA-Lib's definitions.

The references below are written from the definitions, one bar at a time, with no NumPy tricks,
so that they check the vectorised, batch-carrying code rather than repeat it.
"""

from __future__ import annotations

import csv
import doctest
import itertools
import math
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest

import engine.indicators
from engine.indicator_spec import IndicatorSpec
from engine.indicators import IndicatorSet, make_indicator

KLINES = Path(__file__).resolve().parents[2] / "data" / "binance-1m" / "BTCUSDT_1m.csv"
NAN = math.nan


# ---------------------------------------------------------------- reference loops


def sma_reference(values: list[float], n: int) -> list[float]:
    return [NAN if i < n - 1 else sum(values[i - n + 1 : i + 1]) / n for i in range(len(values))]


def ema_reference(values: list[float], n: int) -> list[float]:
    k = 2.0 / (n + 1)
    out = [NAN] * len(values)
    if len(values) < n:
        return out
    previous = sum(values[:n]) / n
    out[n - 1] = previous
    for i in range(n, len(values)):
        previous = previous + k * (values[i] - previous)
        out[i] = previous
    return out


def wilder_reference(values: list[float], n: int) -> list[float]:
    """Wilder's smoothing of values[1:], seeded with the mean of values[1..n]; output at n."""
    out = [NAN] * len(values)
    if len(values) <= n:
        return out
    previous = sum(values[1 : n + 1]) / n
    out[n] = previous
    for i in range(n + 1, len(values)):
        previous = (previous * (n - 1) + values[i]) / n
        out[i] = previous
    return out


def atr_reference(high: list[float], low: list[float], close: list[float], n: int) -> list[float]:
    true_range = [NAN] + [
        max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        for i in range(1, len(close))
    ]
    return wilder_reference(true_range, n)


def rsi_reference(close: list[float], n: int) -> list[float]:
    gains = [NAN] + [max(close[i] - close[i - 1], 0.0) for i in range(1, len(close))]
    losses = [NAN] + [max(close[i - 1] - close[i], 0.0) for i in range(1, len(close))]
    out = []
    for gain, loss in zip(wilder_reference(gains, n), wilder_reference(losses, n), strict=True):
        if math.isnan(gain):
            out.append(NAN)
        elif gain + loss == 0:
            out.append(0.0)
        else:
            out.append(100.0 * gain / (gain + loss))
    return out


def rolling_reference(values: list[float], n: int, reduce: object) -> list[float]:
    assert callable(reduce)
    return [NAN if i < n - 1 else reduce(values[i - n + 1 : i + 1]) for i in range(len(values))]


def population_std(window: list[float]) -> float:
    mean = sum(window) / len(window)
    return math.sqrt(sum((value - mean) ** 2 for value in window) / len(window))


def reference(spec: IndicatorSpec, bars: dict[str, list[float]]) -> dict[str, list[float]]:
    n = spec.period
    close = bars["close"]
    if spec.kind == "sma":
        return {f"sma_{n}": sma_reference(close, n)}
    if spec.kind == "volume_sma":
        return {f"volume_sma_{n}": sma_reference(bars["volume"], n)}
    if spec.kind == "ema":
        return {f"ema_{n}": ema_reference(close, n)}
    if spec.kind == "atr":
        return {f"atr_{n}": atr_reference(bars["high"], bars["low"], close, n)}
    if spec.kind == "rsi":
        return {f"rsi_{n}": rsi_reference(close, n)}
    if spec.kind == "donchian":
        return {
            f"donchian_upper_{n}": rolling_reference(bars["high"], n, max),
            f"donchian_lower_{n}": rolling_reference(bars["low"], n, min),
        }
    middle = sma_reference(close, n)
    deviation = rolling_reference(close, n, population_std)
    return {
        f"bb_mid_{n}": middle,
        f"bb_upper_{n}": [m + spec.width * d for m, d in zip(middle, deviation, strict=True)],
        f"bb_lower_{n}": [m - spec.width * d for m, d in zip(middle, deviation, strict=True)],
    }


# ---------------------------------------------------------------- data and helpers

SPECS = [
    IndicatorSpec("sma", "1m", 20),
    IndicatorSpec("volume_sma", "1m", 30),
    IndicatorSpec("ema", "1m", 12),
    IndicatorSpec("ema", "1m", 200),
    IndicatorSpec("atr", "1m", 14),
    IndicatorSpec("rsi", "1m", 14),
    IndicatorSpec("donchian", "1m", 20),
    IndicatorSpec("bollinger", "1m", 20, width=2.0),
    IndicatorSpec("ema", "1m", 1),
    IndicatorSpec("rsi", "1m", 2),
]
ONE_PER_KIND = [
    IndicatorSpec(kind, "1m", 5)
    for kind in ("ema", "sma", "atr", "rsi", "donchian", "bollinger", "volume_sma")
]


@pytest.fixture(scope="module")
def klines() -> dict[str, np.ndarray]:
    columns: dict[str, list[float]] = {name: [] for name in ("open", "high", "low", "close",
                                                             "volume")}
    with KLINES.open() as handle:
        for row_number, row in enumerate(csv.DictReader(handle)):
            if row_number == 3000:
                break
            for name, values in columns.items():
                values.append(float(row[name]))
    return {name: np.array(values) for name, values in columns.items()}


def slice_bars(bars: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: values[start:stop] for name, values in bars.items()}


def feed_in_batches(spec: IndicatorSpec, bars: dict[str, np.ndarray],
                    cuts: list[int]) -> dict[str, np.ndarray]:
    indicator = make_indicator(spec)
    edges = [0, *cuts, len(bars["close"])]
    parts = [indicator.update(slice_bars(bars, a, b)) for a, b in itertools.pairwise(edges)]
    return {name: np.concatenate([part[name] for part in parts]) for name in spec.columns()}


def random_cuts(rng: np.random.Generator, length: int) -> list[int]:
    """Sorted cut points with repeats (empty batches) and neighbours (single bars)."""
    cuts = rng.integers(0, length + 1, size=40).tolist()
    cuts += [cuts[0], cuts[1] + 1 if cuts[1] < length else cuts[1]]
    return sorted(cuts)


# ---------------------------------------------------------------- tests


def test_docstring_examples_run() -> None:
    result = doctest.testmod(engine.indicators)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: "-".join(spec.columns()))
def test_matches_reference_on_real_klines(spec: IndicatorSpec,
                                          klines: dict[str, np.ndarray]) -> None:
    expected = reference(spec, {name: values.tolist() for name, values in klines.items()})
    got = make_indicator(spec).update(klines)
    for name in spec.columns():
        np.testing.assert_allclose(got[name], np.array(expected[name]), rtol=1e-9, atol=1e-9,
                                   err_msg=name)


def test_ema_of_one_to_five() -> None:
    got = make_indicator(IndicatorSpec("ema", "1m", 3)).update({"close": np.arange(1.0, 6.0)})
    np.testing.assert_array_equal(got["ema_3"], [NAN, NAN, 2.0, 3.0, 4.0])


SIX_BARS = {
    "open": np.array([9.0, 9.0, 11.0, 12.0, 9.0, 14.0]),
    "high": np.array([10.0, 12.0, 13.0, 11.0, 15.0, 12.0]),
    "low": np.array([8.0, 9.0, 11.0, 8.0, 10.0, 11.0]),
    "close": np.array([9.0, 11.0, 12.0, 9.0, 14.0, 11.0]),
    "volume": np.ones(6),
}


def test_atr_worked_by_hand() -> None:
    # True ranges from bar 1: 3, 2, 4, 6, 3. ATR(3) at bar 3: (3+2+4)/3 = 3;
    # bar 4: (3*2+6)/3 = 4; bar 5: (4*2+3)/3 = 11/3.
    got = make_indicator(IndicatorSpec("atr", "1m", 3)).update(SIX_BARS)["atr_3"]
    np.testing.assert_allclose(got, [NAN, NAN, NAN, 3.0, 4.0, 11.0 / 3.0], rtol=1e-12)


def test_rsi_worked_by_hand() -> None:
    # Changes: +2, +1, -3, +5, -3. At bar 3: gain 1, loss 1 -> 50. Bar 4: gain (1*2+5)/3 = 7/3,
    # loss 2/3 -> 700/9. Bar 5: gain 14/9, loss 13/9 -> 1400/27.
    got = make_indicator(IndicatorSpec("rsi", "1m", 3)).update(SIX_BARS)["rsi_3"]
    np.testing.assert_allclose(got, [NAN, NAN, NAN, 50.0, 700.0 / 9.0, 1400.0 / 27.0],
                               rtol=1e-12)


def test_rsi_of_flat_series_is_zero_like_talib() -> None:
    got = make_indicator(IndicatorSpec("rsi", "1m", 2)).update({"close": np.full(5, 7.0)})
    np.testing.assert_array_equal(got["rsi_2"], [NAN, NAN, 0.0, 0.0, 0.0])


def test_rsi_only_gains_is_hundred() -> None:
    got = make_indicator(IndicatorSpec("rsi", "1m", 2)).update({"close": np.arange(5.0)})
    np.testing.assert_array_equal(got["rsi_2"], [NAN, NAN, 100.0, 100.0, 100.0])


def test_bollinger_and_donchian_by_hand() -> None:
    bands = make_indicator(IndicatorSpec("bollinger", "1m", 3, width=1.5)).update(SIX_BARS)
    # Closes 11, 12, 9 (bars 1..3): mean 32/3, population variance 14/9.
    assert bands["bb_mid_3"][3] == pytest.approx(32.0 / 3.0)
    assert bands["bb_upper_3"][3] == pytest.approx(32.0 / 3.0 + 1.5 * math.sqrt(14.0 / 9.0))
    channel = make_indicator(IndicatorSpec("donchian", "1m", 3)).update(SIX_BARS)
    np.testing.assert_array_equal(channel["donchian_upper_3"], [NAN, NAN, 13, 13, 15, 15])
    np.testing.assert_array_equal(channel["donchian_lower_3"], [NAN, NAN, 8, 8, 8, 8])


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: "-".join(spec.columns()))
def test_random_batch_splits_equal_one_shot(spec: IndicatorSpec,
                                            klines: dict[str, np.ndarray]) -> None:
    one_shot = make_indicator(spec).update(klines)
    rng = np.random.default_rng(zlib.crc32(repr(spec).encode()))
    for _ in range(3):
        split = feed_in_batches(spec, klines, random_cuts(rng, len(klines["close"])))
        for name in spec.columns():
            np.testing.assert_allclose(split[name], one_shot[name], rtol=1e-9, err_msg=name)
    bar_by_bar = feed_in_batches(spec, slice_bars(klines, 0, 300), list(range(1, 300)))
    for name in spec.columns():
        np.testing.assert_allclose(bar_by_bar[name], one_shot[name][:300], rtol=1e-9)


# ---------------------------------------------------------------- shared contract, every kind


@pytest.mark.parametrize("spec", ONE_PER_KIND, ids=lambda spec: spec.kind)
def test_empty_update_returns_empty_columns(spec: IndicatorSpec,
                                            klines: dict[str, np.ndarray]) -> None:
    indicator = make_indicator(spec)
    for _ in range(2):  # before any bar and again mid-stream
        out = indicator.update(slice_bars(klines, 0, 0))
        assert tuple(out) == spec.columns()
        assert all(len(values) == 0 and values.dtype == np.float64 for values in out.values())
        indicator.update(slice_bars(klines, 0, 10))


@pytest.mark.parametrize("spec", ONE_PER_KIND, ids=lambda spec: spec.kind)
def test_lengths_match_and_nan_only_in_warmup(spec: IndicatorSpec,
                                              klines: dict[str, np.ndarray]) -> None:
    indicator = make_indicator(spec)
    out = indicator.update(slice_bars(klines, 0, 500))
    for values in out.values():
        assert len(values) == 500
        assert np.isnan(values[: indicator.warmup]).all()
        assert not np.isnan(values[indicator.warmup :]).any()


@pytest.mark.parametrize("spec", ONE_PER_KIND, ids=lambda spec: spec.kind)
def test_pickle_mid_stream_continues_identically(spec: IndicatorSpec,
                                                 klines: dict[str, np.ndarray]) -> None:
    for middle in (3, 400):  # during warm-up and after
        indicator = make_indicator(spec)
        indicator.update(slice_bars(klines, 0, middle))
        restored = pickle.loads(pickle.dumps(indicator))
        rest = slice_bars(klines, middle, 800)
        expected, got = indicator.update(rest), restored.update(rest)
        for name in spec.columns():
            np.testing.assert_array_equal(got[name], expected[name])


def test_indicator_set_combines_and_extends(klines: dict[str, np.ndarray]) -> None:
    from engine.batches import BAR_FIELDS, BarColumns

    specs = [*ONE_PER_KIND, IndicatorSpec("sma", "1m", 5)]  # the repeat is computed once
    indicators = IndicatorSet(specs)
    assert indicators.warmup == 5
    columns = {name: np.zeros(10) for name in BAR_FIELDS}
    columns.update(slice_bars(klines, 0, 10))
    bars = indicators.extend(BarColumns("1m", columns))
    for spec in ONE_PER_KIND:
        expected = make_indicator(spec).update(slice_bars(klines, 0, 10))
        for name in spec.columns():
            np.testing.assert_array_equal(bars[name], expected[name])
    with pytest.raises(ValueError, match="one timeframe"):
        IndicatorSet([IndicatorSpec("sma", "1m", 5), IndicatorSpec("sma", "5m", 5)])
    with pytest.raises(ValueError, match="15m bars"):
        indicators.extend(BarColumns("15m", columns))
    with pytest.raises(ValueError, match="period must be at least 1"):
        make_indicator(IndicatorSpec("ema", "1m", 0))
