"""`ats live --paper` and `ats record` as a user runs them: against the loopback Binance, stopped
with Ctrl-C, leaving a closed journal and finalized recording segments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from dataflows.capture import read_capture
from dataflows.live.replay_server import ReplayServer
from engine.cli import build_parser
from engine.cli_live import live_config
from storage.recording import recording_inputs

pytestmark = pytest.mark.slow


def _ats(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _interrupt_after_frames(process: subprocess.Popen[str], server: ReplayServer,
                            frames: int) -> str:
    deadline = time.monotonic() + 120
    while sum(server.stats.frames_sent.values()) < frames:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no frames reached the client"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    return output


def test_ctrl_c_stops_live_paper_cleanly_and_flushes_the_journal(
        tmp_path: Path, repo_root: Path, spot_captures: list[Path]) -> None:
    journal = tmp_path / "live.duckdb"
    with ReplayServer(spot_captures, speed=20).running() as server:
        server.start(wait_for_subscriber=True)
        process = _ats("live", "--paper", "--symbols", "BTCUSDT", "--config",
                       "configs/sample.yaml", "--ws-url", server.ws_url, "--rest-url",
                       server.rest_url, "--journal", str(journal), cwd=repo_root)
        output = _interrupt_after_frames(process, server, 5_000)
    assert "stopping" in output and "journal" in output
    with duckdb.connect(str(journal), read_only=True) as connection:
        mode, summary = connection.execute("SELECT mode, summary FROM runs").fetchone()
        features = connection.execute("SELECT count(*) FROM features").fetchone()[0]
        events = connection.execute("SELECT kind FROM feed_events").fetchall()
    assert mode == "live_paper" and json.loads(summary)["events"] >= 5_000
    assert features > 0 and ("connected",) in events


def test_ctrl_c_stops_the_recorder_with_every_segment_final(
        tmp_path: Path, repo_root: Path, spot_captures: list[Path]) -> None:
    out = tmp_path / "recording"
    with ReplayServer(spot_captures, speed=20).running() as server:
        server.start(wait_for_subscriber=True)
        process = _ats("record", "--symbols", "BTCUSDT", "--ws-url", server.ws_url,
                       "--rest-url", server.rest_url, "--out", str(out), "--rotate-mb", "2",
                       cwd=repo_root)
        _interrupt_after_frames(process, server, 20_000)
    segments = recording_inputs(out)
    assert len(segments) >= 2 and not list(out.glob(".*partial*"))
    frames = [frame for path in segments for chunk, letters in read_capture(path)
              for frame in chunk.frames if not letters]
    assert frames[0].startswith(b'{"feed":"connected"')
    assert any(frame.startswith(b'{"rest":"/api/v3/depth"') for frame in frames)
    assert sum(frame.startswith(b'{"stream"') for frame in frames) >= 20_000 - 100


def test_live_options_override_the_config_and_are_validated() -> None:
    args = build_parser().parse_args([
        "live", "--paper", "--symbols", "BTCUSDT", "--venue", "binance-usdm", "--streams",
        "trade,depth@0ms", "--ws-url", "ws://127.0.0.1:1", "--stale-after-s", "5"])
    config = live_config(args)
    assert config.live.venue == "binance-usdm"
    assert config.live.stream_names == ("trade", "depth@0ms")
    assert config.live.websocket_base == "ws://127.0.0.1:1"
    assert config.live.rest_base == "https://fapi.binance.com"
    bad = build_parser().parse_args(["live", "--paper", "--symbols", "BTCUSDT", "--ws-url",
                                     "ftp://example"])
    with pytest.raises(ValueError, match="ws_url"):
        live_config(bad)


def test_live_needs_one_mode_and_execute_needs_a_mapped_venue() -> None:
    from engine.cli_live import _cmd_live

    both = build_parser().parse_args(["live", "--paper", "--execute", "--symbols", "BTCUSDT"])
    with pytest.raises(ValueError, match="choose one"):
        _cmd_live(both)
    bare = build_parser().parse_args(["live", "--execute", "--symbols", "BTCUSDT"])
    with pytest.raises(ValueError, match="needs an `execution:` section"):
        _cmd_live(bare)
    unmapped = build_parser().parse_args([
        "live", "--execute", "--symbols", "ETHUSDT", "--config",
        str(Path(__file__).parents[2] / "configs" / "live_execution.yaml")])
    with pytest.raises(ValueError, match="ETHUSDT has no venue symbol"):
        _cmd_live(unmapped)
