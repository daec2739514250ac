"""Entry filters: spread over 2x its running average, single order capped at 1% of 24h volume."""

from __future__ import annotations

import pytest

from engine.tactics import Quote
from engine.tactics.filters import SpreadFilter, SpreadFilterConfig, VolumeCap, VolumeCapConfig

S = 1_000_000_000
T0 = 1_700_000_000 * S


def quote(ts: int, spread: float) -> Quote:
    return Quote(ts, 100.0 - spread / 2, 100.0 + spread / 2)


def test_spread_filter_blocks_over_twice_the_running_average() -> None:
    guard = SpreadFilter(SpreadFilterConfig(window="60s", min_samples=5))
    for second in range(10):
        guard.observe(quote(T0 + second * S, 0.01))  # 1 bp
    assert guard.check(1.0).allowed
    guard.observe(quote(T0 + 10 * S, 0.019))
    assert guard.check(1.0).allowed
    guard.observe(quote(T0 + 11 * S, 0.023))
    decision = guard.check(1.0)
    assert not decision.allowed and decision.rule == "spread_filter"
    assert "2.30 bps > 2x average 1.08 bps" in decision.reason
    assert guard.average_bps() == pytest.approx(11.9 / 11)  # the current quote not in it


def test_spread_filter_window_forgets_and_fails_closed() -> None:
    guard = SpreadFilter(SpreadFilterConfig(window="10s", min_samples=3))
    assert not guard.check(1.0).allowed  # nothing seen
    for second in range(3):
        guard.observe(quote(T0 + second * S, 0.05))
    assert "warming up: 2 of 3" in guard.check(1.0).reason
    for second in range(3, 30):
        guard.observe(quote(T0 + second * S, 0.01))
    assert guard.average_bps() == pytest.approx(1.0)  # the wide early quotes left the window
    guard.observe(Quote(T0 + 31 * S, 101.0, 100.0))
    assert guard.check(1.0).reason == "no valid quote"


def test_volume_cap_is_one_percent_of_rolling_24h_quote_volume() -> None:
    hour = 3600 * S
    cap = VolumeCap(VolumeCapConfig())
    assert not cap.check(T0, 1.0, 100.0).allowed  # no volume known: refuse
    for index in range(24):
        cap.observe(T0 + index * hour, 10_000.0)
    decision = cap.check(T0 + 23 * hour, 5.0, 100.0)
    assert decision.allowed and decision.quantity == 5.0  # cap: 1% x 240k / 100 = 24
    assert cap.check(T0 + 23 * hour, 30.0, 100.0).quantity == pytest.approx(24.0)
    assert "capped 30 to 24" in cap.check(T0 + 23 * hour, 30.0, 100.0).reason
    assert cap.volume(T0 + 25 * hour) == pytest.approx(220_000.0)  # two hours rolled out
    assert not cap.check(T0 + 60 * hour, 1.0, 100.0).allowed
    with pytest.raises(ValueError, match="quote volume"):
        cap.observe(T0 + 61 * hour, float("nan"))
