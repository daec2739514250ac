"""Recorder: real captures recorded into rotated segments, replayed, crashed and recovered."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dataflows.binance import BinanceParser
from dataflows.capture import read_capture
from dataflows.sources import capture_chunks
from engine.batches import MarketChunk
from engine.runtime import SAMPLE_CONFIG, resolve_input, run_replay
from storage.journal import read_table
from storage.recorder import Recorder, RecorderConfig
from storage.recording import (
    MANIFEST_FILE,
    RecordingError,
    read_manifest,
    recording_inputs,
)
from storage.schemas import TAPE_TABLES
from storage.tape import TapeReader, capture_to_tape

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
NS = 1_000_000_000
ATTRIBUTES = ("trades", "deltas", "snapshots", "quotes", "agg_trades", "marks", "klines")


@dataclass
class Stream:
    """The (ts_recv, frame) pairs of capture files, in order, as a live feed would deliver them."""

    paths: list[Path]
    ts_recv: list[int]
    frames: list[bytes]

    def lines(self, start: int = 0, stop: int | None = None) -> bytes:
        pairs = zip(self.ts_recv[start:stop], self.frames[start:stop], strict=True)
        return b"".join(b"%d %b\n" % pair for pair in pairs)


def _stream(paths: list[Path]) -> Stream:
    ts_recv: list[int] = []
    frames: list[bytes] = []
    for path in paths:
        for chunk, letters in read_capture(path):
            assert letters == []
            ts_recv += chunk.ts_recv
            frames += chunk.frames
    return Stream(paths, ts_recv, frames)


@pytest.fixture(scope="module")
def spot(spot_captures: list[Path]) -> Stream:
    return _stream(spot_captures)


@pytest.fixture(scope="module")
def usdm(usdm_captures: list[Path]) -> Stream:
    return _stream(usdm_captures)


def _record(out: Path, stream: Stream, step: int = 100, **settings: object) -> Recorder:
    """Feed the stream to a recorder in live-sized calls; returns it closed."""
    config = RecorderConfig(out, "binance", ("BTCUSDT",), **settings)  # type: ignore[arg-type]
    with Recorder(config, BinanceParser) as recorder:
        for start in range(0, len(stream.frames), step):
            recorder.write_many(stream.ts_recv[start:start + step],
                                stream.frames[start:start + step])
    return recorder


def _decompressed(paths: list[Path]) -> bytes:
    return b"".join(gzip.open(path, "rb").read() for path in paths)


def _concat(chunks: list[MarketChunk]) -> dict[str, dict[str, np.ndarray]]:
    columns = {}
    for attribute in ATTRIBUTES:
        parts = [getattr(chunk, attribute).as_dict() for chunk in chunks]
        columns[attribute] = {key: np.concatenate([part[key] for part in parts])
                              for key in parts[0]}
    return columns


def _assert_same_columns(left: dict, right: dict) -> None:
    for attribute, columns in left.items():
        for key, values in columns.items():
            np.testing.assert_array_equal(values, right[attribute][key],
                                          err_msg=f"{attribute}.{key}")


def _assert_tapes_equal(segment_tapes: list[Path], whole: Path) -> None:
    """Each table of the segments' tapes, concatenated, equals the table of the whole tape."""
    for name in TAPE_TABLES:
        expected = pq.read_table(whole / f"{name}.parquet")
        parts = [pq.read_table(tape / f"{name}.parquet") for tape in segment_tapes]
        assert sum(len(part) for part in parts) == len(expected), name
        for column in expected.column_names:
            joined = np.concatenate([part.column(column).to_numpy(zero_copy_only=False)
                                     for part in parts])
            np.testing.assert_array_equal(
                joined, expected.column(column).to_numpy(zero_copy_only=False),
                err_msg=f"{name}.{column}")


# ---------------------------------------------------------------- rotation and content


@pytest.fixture(scope="module")
def spot_recording(tmp_path_factory: pytest.TempPathFactory, spot: Stream) -> Path:
    out = tmp_path_factory.mktemp("recordings") / "spot"
    _record(out, spot, rotate_bytes=4 * MIB, rotate_seconds=120, tape_batch_frames=2000)
    return out


def test_segments_reproduce_the_input_byte_for_byte(spot_recording: Path, spot: Stream) -> None:
    segments = recording_inputs(spot_recording)
    assert len(segments) >= 5
    assert _decompressed(segments) == _decompressed(spot.paths) == spot.lines()
    for segment in segments:  # each is a complete capture on its own
        assert all(letters == [] for _, letters in read_capture(segment))
    leftovers = [p.name for p in spot_recording.iterdir() if p.name.startswith(".")]
    assert leftovers == [".recorder.lock"]


def test_rotation_by_size_and_time_cuts_where_the_rules_say(
    spot_recording: Path, spot: Stream
) -> None:
    period = 120 * NS
    segments = read_manifest(spot_recording).segments
    reasons = [segment.closed_by for segment in segments]
    assert {"size", "time"} <= set(reasons[:-1]) and reasons[-1] == "close"
    position = 0
    for index, segment in enumerate(segments):
        assert segment.seq == index
        assert segment.first_ts_recv == spot.ts_recv[position]
        position += segment.frames
        assert segment.last_ts_recv == spot.ts_recv[position - 1]
        assert segment.bytes == len(spot.lines(position - segment.frames, position)) <= 4 * MIB
        # every segment lies inside one 120-second window of receive time since the epoch
        assert segment.first_ts_recv // period == segment.last_ts_recv // period
        if segment.closed_by == "time":  # the next frame opened a new window
            assert spot.ts_recv[position] // period > segment.last_ts_recv // period
        if segment.closed_by == "size":  # the next line would not have fitted
            assert segment.bytes + len(spot.lines(position, position + 1)) > 4 * MIB
            assert spot.ts_recv[position] // period == segment.last_ts_recv // period
    assert position == len(spot.frames)


def test_manifest_lists_every_segment_with_its_checksum(spot_recording: Path) -> None:
    data = json.loads((spot_recording / MANIFEST_FILE).read_text())
    assert data["format"] == "ats-recording" and data["venue"] == "binance"
    assert data["symbols"] == ["BTCUSDT"] and data["created_by"].startswith("ats ")
    assert data["dead_letters"] == {}
    assert data["frames"] == sum(segment["frames"] for segment in data["segments"])
    names = sorted(path.name for path in spot_recording.glob("*.capture.gz"))
    assert [segment["capture"] for segment in data["segments"]] == names
    for segment in data["segments"]:
        capture = spot_recording / segment["capture"]
        assert segment["sha256"] == hashlib.sha256(capture.read_bytes()).hexdigest()
        assert segment["compressed_bytes"] == capture.stat().st_size
        assert TapeReader(spot_recording / segment["tape"]).symbols == ["BTCUSDT"]
        assert (spot_recording / segment["dead_letters"]).read_bytes() == b""
        start = segment["capture"].split("-")[1]  # binance-<start>-<seq>.capture.gz
        assert start == np.datetime64(segment["first_ts_recv"], "ns").astype(
            "datetime64[s]").item().strftime("%Y%m%dT%H%M%S")


def test_tape_segments_equal_the_tape_of_the_original(
    spot_recording: Path, spot: Stream, tmp_path: Path
) -> None:
    capture_to_tape(spot.paths, tmp_path / "whole")
    tapes = [spot_recording / s.tape for s in read_manifest(spot_recording).segments if s.tape]
    _assert_tapes_equal(tapes, tmp_path / "whole")


@pytest.mark.slow
def test_replaying_the_segments_equals_replaying_one_unrotated_recording(
    spot_recording: Path, spot: Stream, tmp_path: Path
) -> None:
    _record(tmp_path / "one", spot, step=1000, rotate_seconds=10**9)
    [single] = recording_inputs(tmp_path / "one")
    rotated = list(capture_chunks(recording_inputs(spot_recording), 20_000))
    unrotated = list(capture_chunks([single], 20_000))
    _assert_same_columns(_concat(rotated), _concat(unrotated))
    assert [c.dead_letters for c in rotated if c.dead_letters] == []


@pytest.mark.slow
def test_usdm_rotates_on_the_minute_and_keeps_everything(usdm: Stream, tmp_path: Path) -> None:
    recorder = _record(tmp_path / "usdm", usdm, step=37, rotate_seconds=60, gzip_level=1)
    segments = recorder.segments
    assert [s.closed_by for s in segments] == ["time"] * (len(segments) - 1) + ["close"]
    assert len(segments) == len({ts // (60 * NS) for ts in usdm.ts_recv}) > 3
    for segment in segments:
        assert segment.first_ts_recv // (60 * NS) == segment.last_ts_recv // (60 * NS)
    captures = recording_inputs(tmp_path / "usdm")
    assert _decompressed(captures) == usdm.lines()
    capture_to_tape(usdm.paths, tmp_path / "whole")
    _assert_tapes_equal([tmp_path / "usdm" / s.tape for s in segments if s.tape],
                        tmp_path / "whole")


# ---------------------------------------------------------------- bad input


def test_bad_frames_are_kept_and_named(spot: Stream, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    frames = spot.frames[:300]
    frames[100] = b'{"stream":"btcusdt@trade",\n"data":{}}'
    frames[200] = b"not json"
    frames[250] = b'{"e":"trade"}\r'
    config = RecorderConfig(out, "binance", ("btcusdt",), tape_batch_frames=64)
    assert config.symbols == ("BTCUSDT",)
    with Recorder(config, BinanceParser) as recorder:
        recorder.write_many(spot.ts_recv[:300], frames)
    [segment] = recorder.segments
    assert segment.dead_letter_reasons == {"frame_contains_newline": 2, "malformed_json": 1}
    assert json.loads((out / MANIFEST_FILE).read_text())["dead_letters"] == {
        "frame_contains_newline": 2, "malformed_json": 1}
    records = [json.loads(line) for line in (out / segment.dead_letters).read_text().splitlines()]
    kept = {record["ts_recv"]: record for record in records}
    newline = kept[spot.ts_recv[100]]
    assert newline["frame"].encode(newline["frame_encoding"]) == frames[100]
    assert newline["source"] == f"{segment.capture}:after line 100"
    assert kept[spot.ts_recv[250]]["frame"] == '{"e":"trade"}\r'
    # the malformed frame is in the capture, and named exactly as a replay of the file names it
    recorded = [index for index in range(300) if index not in (100, 250)]
    assert _decompressed([out / segment.capture]) == b"".join(
        b"%d %b\n" % (spot.ts_recv[index], frames[index]) for index in recorded)
    assert segment.frames == len(recorded) == 298
    replayed = [letter for chunk in capture_chunks([out / segment.capture], 20_000)
                for letter in chunk.dead_letters]
    malformed = kept[spot.ts_recv[200]]
    assert [(x.source, x.reason) for x in replayed] == [(malformed["source"], "malformed_json")]
    assert malformed["source"] == f"{segment.capture}:line 200"


def test_a_bad_call_records_nothing_and_says_why(spot: Stream, tmp_path: Path) -> None:
    with Recorder(RecorderConfig(tmp_path / "r", "binance"), BinanceParser) as recorder:
        with pytest.raises(ValueError, match=r"ts_recv\[1\] is -5"):
            recorder.write_many([spot.ts_recv[0], -5], spot.frames[:2])
        with pytest.raises(TypeError, match=r"frames\[0\] is a str"):
            recorder.write(spot.ts_recv[0], "text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="2 receive times for 1 frames"):
            recorder.write_many(spot.ts_recv[:2], spot.frames[:1])
        recorder.write(np.int64(spot.ts_recv[0]), bytearray(spot.frames[0]))  # type: ignore
    [segment] = recorder.segments
    assert _decompressed([tmp_path / "r" / segment.capture]) == spot.lines(0, 1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"venue": "Binance Spot"}, "venue 'Binance Spot': expected a lower-case name"),
        ({"symbols": "BTCUSDT"}, "symbols 'BTCUSDT': expected a sequence"),
        ({"rotate_bytes": 0}, r"rotate_bytes 0: expected an integer >= 1"),
        ({"gzip_level": 10}, r"gzip_level 10: expected an integer 0\.\.9"),
        ({"tape_batch_frames": 2.5}, r"tape_batch_frames 2\.5"),
        ({"rotate_seconds": float("nan")}, "rotate_seconds nan: expected a finite number"),
        ({"flush_seconds": 0}, "flush_seconds 0"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, settings: dict, message: str) -> None:
    arguments: dict = {"out_dir": tmp_path, "venue": "binance", **settings}
    with pytest.raises(ValueError, match=message):
        RecorderConfig(**arguments)


def test_one_writer_per_directory_and_one_venue_per_recording(tmp_path: Path) -> None:
    config = RecorderConfig(tmp_path / "r", "binance")
    with Recorder(config, BinanceParser):
        with pytest.raises(RecordingError, match="another recorder is writing"):
            Recorder(config, BinanceParser)
        with pytest.raises(RecordingError, match="another recorder is writing"):
            Recorder.recover(tmp_path / "r")
    with pytest.raises(RecordingError, match="holds a recording of venue 'binance'"):
        Recorder(RecorderConfig(tmp_path / "r", "okx"), BinanceParser)
    assert Recorder.recover(tmp_path / "r").changed is False  # the lock was released


# ---------------------------------------------------------------- crashes

_CHILD = textwrap.dedent(
    """
    import sys
    from dataflows.binance import BinanceParser
    from dataflows.capture import read_capture
    from storage.recorder import Recorder, RecorderConfig

    out, stop, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    ts, frames = [], []
    for path in paths:
        for chunk, _ in read_capture(path):
            ts += chunk.ts_recv
            frames += chunk.frames
    config = RecorderConfig(out, "binance", ("BTCUSDT",), rotate_bytes=3 * 1024 * 1024,
                            tape_batch_frames=1000, flush_seconds=10**6)
    recorder = Recorder(config, BinanceParser)
    told = False
    for start in range(0, stop or len(frames), 50):
        end = min(start + 50, stop or len(frames))
        recorder.write_many(ts[start:end], frames[start:end])
        if not stop and recorder.segments and not told:
            print("writing", flush=True)  # the parent kills us while we keep writing
            told = True
    print("ready", flush=True)
    sys.stdin.read()  # killed while the recorder is open
    """
)


def _crash(out: Path, stream: Stream, stop: int) -> str:
    """Record `stop` frames in a child process (all if 0) and SIGKILL it as soon as it says so
    (after `stop` frames, or while writing once its first segment is finalized)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(out), str(stop), *map(str, stream.paths)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    first = child.stdout.readline()
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    return first


@pytest.mark.slow
def test_a_killed_recorder_leaves_readable_files_that_recovery_finalizes(
    usdm: Stream, tmp_path: Path
) -> None:
    out, stop = tmp_path / "crashed", 40_321
    assert _crash(out, usdm, stop) == "ready\n"
    finalized = read_manifest(out).segments
    assert len(finalized) == 3 and [s.closed_by for s in finalized] == ["size"] * 3
    done = sum(segment.frames for segment in finalized)
    # every finalized segment is complete: its lines, its checksum, its tape
    assert _decompressed(recording_inputs(out)) == usdm.lines(0, done)
    for segment in finalized:
        assert hashlib.sha256((out / segment.capture).read_bytes()).hexdigest() == segment.sha256
        assert TapeReader(out / str(segment.tape)).metadata["rows"]["book_deltas"] > 0
    # the open segment's partial is readable up to its last flushed batch of 1,000 frames
    [partial] = out.glob(".*.capture.gz.partial")
    kept = (stop - done) // 1000 * 1000
    pieces = list(read_capture(partial))
    lines = b"".join(b"%d %b\n" % pair for chunk, _ in pieces
                     for pair in zip(chunk.ts_recv, chunk.frames, strict=True))
    assert lines == usdm.lines(done, done + kept)
    assert [letter.reason for _, letters in pieces for letter in letters] == ["truncated_file"]
    assert len(list(out.glob(".*.tape.tmp-*"))) == 1

    report = Recorder.recover(out, BinanceParser)
    assert report.frames_recovered == kept and len(report.finalized) == 1
    assert len(report.tapes_rebuilt) == 1 and report.tapes_missing == []
    assert any(".tape.tmp-" in name for name in report.removed)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".recorder.lock"]
    segments = read_manifest(out).segments
    assert len(segments) == 4 and segments[-1].closed_by == "recovered"
    assert segments[-1].frames == kept and segments[-1].dead_letter_reasons == {
        "segment_not_closed": 1}
    captures = recording_inputs(out)
    assert _decompressed(captures) == usdm.lines(0, done + kept)
    assert all(letters == [] for _, letters in read_capture(captures[-1]))
    capture_to_tape(captures, tmp_path / "whole")  # the rebuilt tape continues the stream
    _assert_tapes_equal([out / str(segment.tape) for segment in segments], tmp_path / "whole")
    assert Recorder.recover(out, BinanceParser).changed is False  # idempotent

    # recording resumes in the same directory with the next sequence number
    rest = Stream(usdm.paths, usdm.ts_recv[stop:], usdm.frames[stop:])
    resumed = _record(out, rest, rotate_bytes=3 * MIB)
    assert [s.seq for s in resumed.segments] == list(range(len(resumed.segments)))
    assert _decompressed(recording_inputs(out)) == usdm.lines(0, done + kept) + rest.lines()


def test_a_recorder_killed_mid_write_loses_at_most_its_open_batch(
    usdm: Stream, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    assert _crash(out, usdm, 0) == "writing\n"  # killed wherever it was
    finalized = read_manifest(out).segments
    assert finalized
    report = Recorder.recover(out)  # no parser: segments are finalized, missing tapes reported
    recovered = _decompressed(recording_inputs(out))
    assert usdm.lines().startswith(recovered)
    assert len(recovered) >= sum(segment.bytes for segment in finalized)
    segments = read_manifest(out).segments
    assert len(recovered) == sum(segment.bytes for segment in segments)
    for segment in segments:
        stem = segment.capture.removesuffix(".capture.gz")
        assert (segment.tape is None) == (f"{stem}.tape" in report.tapes_missing)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".recorder.lock"]
    # a recorder opening the directory runs recovery itself, with its parser: tapes are built
    with Recorder(RecorderConfig(out, "binance"), BinanceParser) as resumed:
        assert resumed.recovery.tapes_rebuilt == report.tapes_missing
        assert resumed.recovery.tapes_missing == []
    assert all(TapeReader(out / str(s.tape)).symbols == ["BTCUSDT"]
               for s in read_manifest(out).segments)


def test_recovery_rebuilds_a_lost_manifest_and_tape(spot: Stream, tmp_path: Path) -> None:
    out = tmp_path / "r"
    first = Stream([], spot.ts_recv[:3000], spot.frames[:3000])
    original = _record(out, first, rotate_bytes=256 * 1024).segments
    assert len(original) >= 3
    (out / MANIFEST_FILE).unlink()  # as if stopped between a rename and the manifest rewrite
    tape = out / str(original[1].tape)
    shutil.copytree(tape, tmp_path / "tape")
    shutil.rmtree(tape)
    report = Recorder.recover(out, BinanceParser)
    assert report.tapes_rebuilt == [original[1].tape] and report.finalized == []
    rebuilt = read_manifest(out)
    assert rebuilt.venue == "binance" and rebuilt.symbols == ["BTCUSDT"]
    for before, after in zip(original, rebuilt.segments, strict=True):
        assert after.closed_by == "recovered"
        fields = ("seq", "capture", "tape", "frames", "bytes", "first_ts_recv", "last_ts_recv",
                  "sha256", "compressed_bytes", "symbols", "dead_letter_reasons")
        assert [getattr(after, name) for name in fields] == [getattr(before, name)
                                                             for name in fields]
    _assert_tapes_equal([tape], tmp_path / "tape")
    assert Recorder.recover(out, BinanceParser).changed is False


def test_recording_inputs_and_replay_input_of_a_recording(
    spot_recording: Path, spot: Stream, tmp_path: Path
) -> None:
    replay_input = resolve_input([spot_recording])
    assert replay_input.kind == "capture" and replay_input.symbols == ("BTCUSDT",)
    assert list(replay_input.paths) == recording_inputs(spot_recording)
    assert [p.name for p in replay_input.paths] == [
        s.capture for s in read_manifest(spot_recording).segments]
    assert replay_input.total_events == len(spot.frames)

    out = tmp_path / "small"
    Recorder(RecorderConfig(out, "binance"), BinanceParser).close()
    with pytest.raises(ValueError, match="has no finalized segment"):
        resolve_input([out])
    recorder = _record(out, Stream([], spot.ts_recv[:10], spot.frames[:10]))
    [listed] = recorder.segments
    # a finalized segment the manifest does not list yet (stopped before the rewrite) counts
    unlisted = out / listed.capture.replace("-000000.", "-000001.")
    unlisted.write_bytes((out / listed.capture).read_bytes())
    assert recording_inputs(out) == [out / listed.capture, unlisted]
    (out / listed.capture).unlink()
    with pytest.raises(RecordingError, match=f"missing: {listed.capture}"):
        recording_inputs(out)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_a_recording_replays_like_the_capture_it_recorded(
    spot_recording: Path, spot: Stream, tmp_path: Path
) -> None:
    original = run_replay(spot.paths, SAMPLE_CONFIG, tmp_path / "original.duckdb", 1)
    recorded = run_replay([spot_recording], SAMPLE_CONFIG, tmp_path / "recorded.duckdb", 1)
    assert recorded.summary["events"] == original.summary["events"] > 99_000
    assert recorded.summary["dead_letters"] == 0
    for table in ("features", "signals"):
        expected = read_table(original.journal_path, table, deterministic_only=True)
        assert len(expected) > 100, table
        assert read_table(recorded.journal_path, table, deterministic_only=True) == expected
