"""`ats live --paper` against the loopback Binance gives the features `ats replay` gives for the
same capture, at 50x and at recorded speed; its recording replays to the same features too."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dataflows.capture import read_capture
from dataflows.live.replay_server import ReplayServer
from engine.config import LiveConfig, RunConfig, load_config
from engine.runtime import SAMPLE_CONFIG, run_live, run_replay
from storage.journal import read_table

pytestmark = pytest.mark.slow


def _config(server: ReplayServer) -> RunConfig:
    config = load_config(SAMPLE_CONFIG)
    live = LiveConfig(ws_url=server.ws_url, rest_url=server.rest_url, stale_after_s=60.0)
    return config.model_copy(update={"live": live})


def _start_when_snapshot_taken(server: ReplayServer, counted: list[int],
                               ) -> Callable[[list[int], list[bytes]], None]:
    """The timeline starts once the feed holds its first snapshot, as it would when the feed
    connects to a market between two diffs; the book then bridges from the capture's snapshot,
    as the replay does. Counts the websocket frames the pipeline took in `counted[0]`."""
    started = threading.Event()

    def observe(_times: list[int], frames: list[bytes]) -> None:
        counted[0] += sum(frame.startswith(b'{"stream"') for frame in frames)
        if not started.is_set() and any(frame.startswith(b'{"rest":"/api/v3/depth"')
                                        for frame in frames):
            started.set()
            server.start()

    return observe


def _stop_after_finish(server: ReplayServer, stop: threading.Event,
                       counted: list[int]) -> threading.Thread:
    """Stop once the timeline is over and the pipeline has taken every frame sent (or nothing
    came for 2 s: a loaded machine must not make the test cut the stream short)."""
    def watch() -> None:
        server.wait_finished(600)
        last, quiet_since = -1, time.monotonic()
        while counted[0] < sum(server.stats.frames_sent.values()):
            if counted[0] != last:
                last, quiet_since = counted[0], time.monotonic()
            elif time.monotonic() - quiet_since > 2.0:
                break
            time.sleep(0.05)
        stop.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _features(journal: Path) -> list[tuple[object, ...]]:
    return read_table(journal, "features", deterministic_only=True)


def _live_features(captures: list[Path], speed: float, journal: Path,
                   record_to: Path | None = None) -> list[tuple[object, ...]]:
    with ReplayServer(captures, speed=speed).running() as server:
        stop = threading.Event()
        counted = [0]
        watcher = _stop_after_finish(server, stop, counted)
        result = run_live(["BTCUSDT"], _config(server), journal, stop=stop, record_to=record_to,
                          frame_observer=_start_when_snapshot_taken(server, counted))
        watcher.join(5)
    assert result.summary["dead_letters"] == 0
    return _features(journal)


def test_live_at_50x_gives_the_replay_features_and_its_recording_replays_alike(
        ray_session: None, tmp_path: Path, spot_captures: list[Path]) -> None:
    live = _live_features(spot_captures, 50.0, tmp_path / "live.duckdb", tmp_path / "recording")
    replayed = run_replay(spot_captures, load_config(SAMPLE_CONFIG), tmp_path / "replay.duckdb")
    assert len(live) > 600
    assert live == _features(replayed.journal_path)
    from_recording = run_replay([tmp_path / "recording"], load_config(SAMPLE_CONFIG),
                                tmp_path / "recorded.duckdb")
    assert _features(from_recording.journal_path) == live


def _first_seconds(source: Path, seconds: float, out: Path) -> Path:
    """The capture's lines within `seconds` of its first receive time, as a new capture."""
    lines: list[bytes] = []
    first: int | None = None
    for chunk, _letters in read_capture(source):
        for ts_recv, frame in zip(chunk.ts_recv, chunk.frames, strict=True):
            first = ts_recv if first is None else first
            if ts_recv - first <= seconds * 1e9:
                lines.append(b"%d %s\n" % (ts_recv, frame))
    with gzip.open(out, "wb") as handle:
        handle.writelines(lines)
    return out


def test_live_at_recorded_speed_gives_the_replay_features(
        ray_session: None, tmp_path: Path, spot_captures: list[Path]) -> None:
    capture = _first_seconds(spot_captures[0], 40.0, tmp_path / "first-40s.gz")
    live = _live_features([capture], 1.0, tmp_path / "live.duckdb")
    replayed = run_replay([capture], load_config(SAMPLE_CONFIG), tmp_path / "replay.duckdb")
    assert len(live) > 30
    assert live == _features(replayed.journal_path)
