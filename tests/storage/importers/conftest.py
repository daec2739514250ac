"""Fixtures for the importer tests: the bundled real captures as tapes, parsed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.tape import capture_to_tape


@pytest.fixture(scope="session")
def spot_capture_tape(tmp_path_factory: pytest.TempPathFactory, spot_captures: list[Path]
                      ) -> Path:
    """The real Binance spot capture (trades, depth, one REST snapshot) as a tape."""
    out = tmp_path_factory.mktemp("captures") / "spot"
    capture_to_tape(spot_captures, out)
    return out


@pytest.fixture(scope="session")
def usdm_capture_tape(tmp_path_factory: pytest.TempPathFactory, usdm_captures: list[Path]
                      ) -> Path:
    """The real Binance USD-M capture as a tape."""
    out = tmp_path_factory.mktemp("captures") / "usdm"
    capture_to_tape(usdm_captures, out)
    return out
