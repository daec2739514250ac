"""`ats bench live`: latency of the live pipeline next to a bare websocket receive loop.

One run measures each actor mode in turn (`actors: ray`, then `actors: in_process`). Each phase
has three processes: a loopback server sends a real capture's frames at a fixed rate (default
1,000 frames/s) to two clients at once, a bare `websockets` receive loop and `ats live --paper`
(feed, Bytewax features, the engine, paper matching, journal). Reported per mode, after a
warm-up: the bare loop's send-to-receive latency (what any socket consumer pays), the feed's
send-to-receive under the pipeline's load, and the pipeline's receive-to-feature (frame received
to its feature batch at the engine's door) and receive-to-decision (to the strategy and risk step
on it done) latencies, p50 and p99. The added latency is receive-to-decision: the target is met
when its p99 is under 5 ms.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import LiveConfig, RunConfig, load_config
from engine.latency import LatencyRecorder

TARGET_P99_ADDED_MS = 5.0
_SENT = re.compile(rb'"_sent":(\d+)')  # the bench server's send stamp in each frame


class _Stamps:
    """Send-to-receive latency of the frames the feed received (bench frames carry `_sent`)."""

    def __init__(self, since_ns: int) -> None:
        self.since_ns = since_ns
        self.values: list[int] = []

    def __call__(self, times: list[int], frames: list[bytes]) -> None:
        for ts_recv, frame in zip(times, frames, strict=True):
            if ts_recv >= self.since_ns:
                match = _SENT.search(frame, 0, 200)
                if match:
                    self.values.append(ts_recv - int(match.group(1)))

    def summary(self) -> dict[str, float]:
        if not self.values:
            return {"count": 0}
        values = np.array(self.values) / 1e6
        p50, p99 = np.percentile(values, [50, 99])
        return {"count": len(values), "p50_ms": float(p50), "p99_ms": float(p99)}


ACTOR_MODES: tuple[str, ...] = ("ray", "in_process")


def bench_live(capture: Path, *, rate: float = 1000.0, frames: int = 30_000,
               warmup_s: float = 3.0, config_path: Path | None = None,
               out: Path | None = None, journal: Path | None = None,
               modes: tuple[str, ...] = ACTOR_MODES) -> dict[str, Any]:
    """Run the benchmark for each actor mode; write the report to `out` (JSON) and return it."""
    report: dict[str, Any] = {"frames": frames, "rate_frames_per_s": rate,
                              "target_p99_added_ms": TARGET_P99_ADDED_MS}
    for mode in modes:
        mode_journal = journal.with_name(f"{journal.stem}_{mode}{journal.suffix}") \
            if journal is not None else None
        report[mode] = _measure(capture, mode, rate=rate, frames=frames, warmup_s=warmup_s,
                                config_path=config_path, journal=mode_journal)
    report["meets_target"] = {mode: report[mode]["meets_target"] for mode in modes}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _measure(capture: Path, actors: str, *, rate: float, frames: int, warmup_s: float,
             config_path: Path | None, journal: Path | None) -> dict[str, Any]:
    """One phase: server, bare loop and `ats live --paper` with `actors` mode."""
    from engine.runtime import REPO_ROOT, SAMPLE_CONFIG, run_live

    python = sys.executable
    server = subprocess.Popen(
        [python, "-m", "dataflows.live.bench_server", "serve", "--capture", str(capture),
         "--rate", str(rate), "--frames", str(frames), "--clients", "2"],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    bare: subprocess.Popen[str] | None = None
    try:
        assert server.stdout is not None
        urls = json.loads(server.stdout.readline())
        base = load_config(config_path or SAMPLE_CONFIG)
        live = LiveConfig(ws_url=urls["ws_url"], rest_url=urls["rest_url"], stale_after_s=60.0)
        config: RunConfig = base.model_copy(update={"live": live, "actors": actors})
        streams = "/".join(f"btcusdt@{name}" for name in live.stream_names)
        warmup_frames = int(warmup_s * rate)
        bare = subprocess.Popen(
            [python, "-m", "dataflows.live.bench_server", "bare", "--url",
             f"{urls['ws_url']}/stream?streams={streams}", "--frames", str(frames),
             "--warmup", str(warmup_frames)],
            stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        stop = threading.Event()
        latency = LatencyRecorder(since_ns=2**62)  # armed after the warm-up
        stamps = _Stamps(2**62)
        server_summary: dict[str, Any] = {}

        def watch_server() -> None:
            assert server.stdout is not None
            line = server.stdout.readline()  # the server's summary: all frames sent
            server_summary.update(json.loads(line) if line.strip() else {})
            time.sleep(1.0)
            stop.set()

        def arm_warmup() -> None:
            time.sleep(1.0 + warmup_s)
            latency.since_ns = stamps.since_ns = time.time_ns()

        threads = [threading.Thread(target=watch_server, daemon=True),
                   threading.Thread(target=arm_warmup, daemon=True)]
        for thread in threads:
            thread.start()
        result = run_live(["BTCUSDT"], config, journal, stop=stop, latency=latency,
                          frame_observer=stamps)
        bare_out, _ = bare.communicate(timeout=60)
        bare_summary = json.loads(bare_out.strip().splitlines()[-1])
    finally:
        for process in (server, bare):
            if process is not None and process.poll() is None:
                process.kill()
    pipeline = latency.summary()
    report: dict[str, Any] = {
        "server_rate_achieved": server_summary.get("rate"),
        "bare_send_to_receive_p50_ms": bare_summary["p50_ms"],
        "bare_send_to_receive_p99_ms": bare_summary["p99_ms"],
        "feed_send_to_receive": stamps.summary(),
        "receive_to_feature_p50_ms": pipeline["receive_to_feature"]["p50_ms"],
        "receive_to_feature_p99_ms": pipeline["receive_to_feature"]["p99_ms"],
        "receive_to_decision_p50_ms": pipeline["receive_to_decision"]["p50_ms"],
        "receive_to_decision_p99_ms": pipeline["receive_to_decision"]["p99_ms"],
        "measured_frames": pipeline["receive_to_feature"]["count"],
        "live_frames": result.summary.get("events"),
        "bars": result.summary.get("bars"),
    }
    report["meets_target"] = bool(report["receive_to_decision_p99_ms"] < TARGET_P99_ADDED_MS)
    return report
