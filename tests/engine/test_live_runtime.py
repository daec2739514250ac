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
                   record_to: Path | None = None,
                   actors: str = "ray") -> list[tuple[object, ...]]:
    with ReplayServer(captures, speed=speed).running() as server:
        stop = threading.Event()
        counted = [0]
        watcher = _stop_after_finish(server, stop, counted)
        config = _config(server).model_copy(update={"actors": actors})
        result = run_live(["BTCUSDT"], config, journal, stop=stop, record_to=record_to,
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


def test_live_in_process_gives_the_replay_features(
        tmp_path: Path, spot_captures: list[Path]) -> None:
    live = _live_features(spot_captures, 50.0, tmp_path / "live.duckdb", actors="in_process")
    replayed = run_replay(spot_captures, load_config(SAMPLE_CONFIG), tmp_path / "replay.duckdb",
                          in_process=True)
    assert len(live) > 600
    assert live == _features(replayed.journal_path)


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


def test_live_paper_survives_every_fault_and_journals_each(
        ray_session: None, tmp_path: Path, spot_captures: list[Path]) -> None:
    """The whole pipeline (feed, dataflow, Ray actors, journal) under every fault at once: the
    run completes and the journal holds each fault with its reason."""
    from collections import Counter

    import duckdb

    from dataflows.live.replay_faults import FaultPlan

    plan = FaultPlan(seed=7, drop_connections_at_s=(300.0,), silences=((150.0, 45.0),),
                     malformed_frames=2_000, depth_gaps=4, duplicate_frames=20,
                     reordered_pairs=3)
    journal = tmp_path / "faults.duckdb"
    with ReplayServer(spot_captures, speed=20, faults=plan).running() as server:
        config = _config(server)
        live = config.live.model_copy(update={"stale_after_s": 1.5, "reconnect_initial_s": 0.2})
        stop = threading.Event()
        counted = [0]
        watcher = _stop_after_finish(server, stop, counted)
        result = run_live(["BTCUSDT"], config.model_copy(update={"live": live}), journal,
                          stop=stop, frame_observer=_start_when_snapshot_taken(server, counted))
        watcher.join(5)
        log = Counter(record.kind for record in server.fault_log)
    with duckdb.connect(str(journal), read_only=True) as connection:
        letters = Counter(dict(connection.execute(
            "SELECT reason, count(*) FROM dead_letters GROUP BY 1").fetchall()))
        feed = Counter(dict(connection.execute(
            "SELECT kind, count(*) FROM feed_events GROUP BY 1").fetchall()))
        book = Counter(dict(connection.execute(
            "SELECT kind, count(*) FROM book_events GROUP BY 1").fetchall()))
        mode = connection.execute("SELECT mode FROM runs").fetchone()
    assert mode == ("live_paper",) and result.summary["bars"] > 300
    assert log["malformed"] == 2_000 and sum(letters.values()) >= 1_900  # some fell in the gaps
    assert letters["duplicate_trade_id"] >= 1
    assert feed["disconnected"] >= 1 and feed["connected"] >= 2 and feed["gap_filled"] >= 1
    assert feed["stale"] >= 1 and feed["fresh"] >= 1
    assert book["gap"] >= 1 and book["synced"] >= 2
