"""The HTML report of a real replay opens in headless Chromium without console messages, and the
screenshot shows the charts (it is not blank)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.config import load_config
from engine.runtime import REPO_ROOT, run_replay
from tests.support.chromium import screenshot
from tests.support.kline_tape import kline_tape

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory, klines_csv: Path) -> Path:
    root = tmp_path_factory.mktemp("html")
    tape = kline_tape(klines_csv, root / "tape", minutes=6 * 1440)
    config = load_config(REPO_ROOT / "configs" / "ema_cross.yaml")
    return run_replay([tape], config, root / "journal.duckdb", in_process=True).journal_path


def _walkforward(path: Path) -> Path:
    path.write_text(json.dumps({"accepted": False, "passed_windows": 1, "min_ratio": 0.7,
                                "windows": [
        {"window": 0, "best": "strategy.slow_period=20", "in_sample_sharpe": 2.0,
         "out_of_sample_sharpe": 1.6, "passed": True},
        {"window": 1, "best": "strategy.slow_period=30", "in_sample_sharpe": 1.0,
         "out_of_sample_sharpe": -0.5, "passed": False}]}))
    return path


def test_the_report_renders_its_charts_without_console_errors(journal: Path,
                                                              tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert main(["report", str(journal), "--out", str(page), "--walkforward",
                 str(_walkforward(tmp_path / "walkforward.json"))]) == 0
    text = page.read_text()
    for heading in ("Metrics", "Equity and drawdown", "Trades on BTCUSDT", "Monthly returns",
                    "Monte Carlo", "Post-trade", "By session", "Walk-forward"):
        assert f"<h2>{heading}</h2>" in text
    assert "<script" not in text and "http" not in text  # self-contained: nothing fetched
    assert text.count("<svg") >= 4  # equity, drawdown, trades, Monte Carlo fan
    console = screenshot(page, tmp_path / "report.png", tmp_path / "profile")
    assert console == []
    image = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"))
    inked = (image.sum(axis=2) < 600).mean()  # share of pixels clearly darker than white
    colors = len(np.unique(image.reshape(-1, 3), axis=0))
    assert inked > 0.02 and colors > 100, (inked, colors)


def test_the_console_check_catches_a_page_that_logs(tmp_path: Path) -> None:
    """The check above can fail: a page that writes to its console is caught."""
    page = tmp_path / "noisy.html"
    page.write_text("<html><body><script>console.error('broken chart')</script>x</body></html>")
    console = screenshot(page, tmp_path / "noisy.png", tmp_path / "profile", "400,300")
    assert any("broken chart" in line for line in console)
