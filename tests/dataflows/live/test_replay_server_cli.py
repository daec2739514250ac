"""`ats serve` runs the replay exchange until Ctrl-C, printing the URLs a live run needs."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect

from dataflows.live.replay_cli import parse_silence
from engine.cli import build_parser, main


def test_ats_serve_streams_the_capture_and_stops_cleanly_on_ctrl_c(
    repo_root: Path, spot_captures: list[Path],
) -> None:
    command = [sys.executable, "-m", "engine.cli", "serve", "--capture", str(spot_captures[0]),
               "--speed", "500", "--port", "0", "--depth-gaps", "3", "--fault-seed", "5"]
    process = subprocess.Popen(command, cwd=repo_root, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        ws_url = re.search(r"ws://127\.0\.0\.1:\d+", lines[0])
        rest_url = re.search(r"http://127\.0\.0\.1:\d+", lines[1])
        assert ws_url and rest_url, lines
        assert "ats live --paper --venue binance --symbols BTCUSDT --streams" in lines[2]
        assert "starts when the first client subscribes" in lines[3]

        async def first_trades() -> list[dict[str, object]]:
            async with connect(ws_url.group(0) + "/ws/btcusdt@trade", close_timeout=0.1) as ws:
                return [orjson.loads(await ws.recv()) for _ in range(3)]

        trades = asyncio.run(first_trades())
        assert [trade["t"] for trade in trades] == [3735683259, 3735683260, 3735683261]
        with urllib.request.urlopen(rest_url.group(0) + "/api/v3/ping", timeout=10) as answer:
            assert answer.read() == b"{}"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "connections   1" in out and "REST requests 1" in out


def test_serve_options_are_checked(capsys: pytest.CaptureFixture[str],
                                   spot_captures: list[Path]) -> None:
    assert parse_silence("120:45") == (120.0, 45.0)
    with pytest.raises(ValueError, match="START:DURATION"):
        parse_silence("120")
    args = build_parser().parse_args(["serve", "--capture", "x.gz", "--silence", "1:2",
                                      "--drop-at", "5", "--malformed", "10"])
    assert (args.silence, args.drop_at, args.malformed, args.port) == (["1:2"], [5.0], 10, 9443)
    assert main(["serve", "--capture", str(spot_captures[0]), "--depth-gaps", "-2"]) == 2
    assert "FaultPlan.depth_gaps must be an integer >= 0" in capsys.readouterr().err
