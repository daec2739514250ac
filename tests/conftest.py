"""Shared fixtures: repository paths, the shared data folder, and one Ray session for all tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DATA = REPO_ROOT / "data"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def spot_captures() -> list[Path]:
    return [
        BUNDLED_DATA / "binance-spot" / "btcusdt_20240808.gz",
        BUNDLED_DATA / "binance-spot" / "btcusdt_20240809.gz",
    ]


@pytest.fixture(scope="session")
def usdm_captures() -> list[Path]:
    return [BUNDLED_DATA / "binance-usdm" / "btcusdt_20240808.gz"]


@pytest.fixture(scope="session")
def multi_venue_dir() -> Path:
    return BUNDLED_DATA / "multi-venue"


@pytest.fixture(scope="session")
def klines_csv() -> Path:
    return BUNDLED_DATA / "binance-1m" / "BTCUSDT_1m.csv"


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Ray starts once per test session (3-5 s each time), never per test."""
    import ray

    from engine.runtime import start_ray

    start_ray()
    yield
    ray.shutdown()
