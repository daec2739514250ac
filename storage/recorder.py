"""The recorder: a live feed's `(ts_recv, frame)` pairs into rotated raw captures and tapes.

Every frame goes, in arrival order, into the open segment of the recording directory (layout in
`storage.recording`): as the line `<ts_recv> <frame>\\n` of its gzip raw capture, and, parsed by
the venue parser, into its Parquet tape, so that tape segment k and capture segment k hold exactly
the same frames. Frames are handled in batches (`tape_batch_frames` frames, or `flush_seconds` of
receive time, whichever comes first): a batch is compressed, parsed, appended to the tape and
flushed to the operating system at once, so a killed process loses at most the open batch.

A segment is finalized when the next frame would push its capture text past `rotate_bytes`, when a
frame's receive time reaches the next multiple of `rotate_seconds` since the epoch (so hourly
segments cut at each full UTC hour), on `rotate()` and on `close()`: the batch is written, the
tape and the dead-letter file are closed and renamed into place, the capture's gzip stream is
ended, fsynced and renamed, and `recording.json` is rewritten. Rotation reads receive times only,
never the wall clock, so it is deterministic for a given input.

One parser instance serves all segments, so a stream's state (such as the clock offset used to
time spot quotes) carries across the cuts: the segments replayed in order parse exactly like one
unrotated recording. A frame that contains a line break cannot be a capture line; it is kept whole
in the segment's dead-letter file (reason `frame_contains_newline`) instead, never dropped.
"""

from __future__ import annotations

import gzip
import logging
import math
import operator
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from engine.batches import DeadLetter
from storage.recording import (
    CAPTURE_SUFFIX,
    DEAD_LETTERS_SUFFIX,
    MANIFEST_FILE,
    RECORD_STAGE,
    TAPE_SUFFIX,
    VENUE_NAME,
    FrameParser,
    RecordingError,
    RecordingLock,
    RecordingManifest,
    SegmentInfo,
    dead_letter_line,
    file_sha256,
    finalized_captures,
    fsync_directory,
    partial_name,
    read_manifest,
    segment_seq,
    segment_stem,
    tape_metadata,
    write_manifest,
)
from storage.recording_recovery import RecoveryReport, parse_segment_frames, recover_recording
from storage.tape import TapeWriter, ats_version

logger = logging.getLogger(__name__)

NS_PER_SECOND = 1_000_000_000
INT64_MAX = 2**63 - 1
PAYLOAD_LIMIT = 2000


@dataclass(frozen=True)
class RecorderConfig:
    """What and how to record; validated on creation (errors name the field and allowed values).

    `rotate_bytes` counts uncompressed capture text; `rotate_seconds` cuts at multiples of that
    period of receive time since the epoch; `flush_seconds` bounds how much receive time a batch
    spans, so a slow feed still reaches the disk often.
    """

    out_dir: Path
    venue: str
    symbols: tuple[str, ...] = ()
    rotate_bytes: int = 256 * 1024**2
    rotate_seconds: float = 3600.0
    gzip_level: int = 6
    tape_batch_frames: int = 5_000
    flush_seconds: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        problems = []
        if not isinstance(self.venue, str) or not VENUE_NAME.match(self.venue):
            problems.append(f"venue {self.venue!r}: expected a lower-case name of letters, "
                            "digits, '-' and '_' (it starts every segment's file name)")
        if isinstance(self.symbols, str) or not all(
            isinstance(symbol, str) and symbol.strip() for symbol in self.symbols
        ):
            problems.append(f"symbols {self.symbols!r}: expected a sequence of symbol names")
        else:
            object.__setattr__(self, "symbols", tuple(s.strip().upper() for s in self.symbols))
        for name, low, high in (("rotate_bytes", 1, None), ("gzip_level", 0, 9),
                                ("tape_batch_frames", 1, None)):
            value = getattr(self, name)
            if type(value) is not int or value < low or (high is not None and value > high):
                allowed = f"{low}..{high}" if high is not None else f">= {low}"
                problems.append(f"{name} {value!r}: expected an integer {allowed}")
        for name in ("rotate_seconds", "flush_seconds"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value * NS_PER_SECOND < 1):
                problems.append(f"{name} {value!r}: expected a finite number of seconds > 0")
        if problems:
            raise ValueError("RecorderConfig: " + "; ".join(problems))

    @property
    def rotate_ns(self) -> int:
        return round(self.rotate_seconds * NS_PER_SECOND)

    @property
    def flush_ns(self) -> int:
        return round(self.flush_seconds * NS_PER_SECOND)


def _receive_time(value: object, index: int) -> int:
    """A receive time as a Python int, or ValueError naming the position (a caller's bug)."""
    if type(value) is int and 0 <= value <= INT64_MAX:
        return value
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = -1
    if isinstance(value, bool) or not 0 <= number <= INT64_MAX:
        raise ValueError(f"ts_recv[{index}] is {value!r:.40}: a receive time must be an integer "
                         f"of nanoseconds since the epoch in [0, 2**63-1]")
    return number


def _frame_bytes(value: object, index: int) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"frames[{index}] is a {type(value).__name__}, not bytes")


class _Segment:
    """The open segment: its partial capture, dead-letter file and tape writer, and the batch."""

    def __init__(self, config: RecorderConfig, seq: int, start_ns: int) -> None:
        out_dir = config.out_dir
        self.seq = seq
        self.stem = segment_stem(config.venue, start_ns, seq)
        self.capture = out_dir / f"{self.stem}{CAPTURE_SUFFIX}"
        self.letters = out_dir / f"{self.stem}{DEAD_LETTERS_SUFFIX}"
        self.capture_partial = out_dir / partial_name(self.capture.name)
        self.letters_partial = out_dir / partial_name(self.letters.name)
        period = config.rotate_ns
        self.boundary_ns = (start_ns // period + 1) * period
        self.raw: IO[bytes] = open(self.capture_partial, "xb")
        self.compressed = gzip.GzipFile(
            filename="", mode="wb", fileobj=self.raw, compresslevel=config.gzip_level, mtime=0
        )
        self.letters_file: IO[bytes] = open(self.letters_partial, "xb")
        self.tape = TapeWriter(
            out_dir / f"{self.stem}{TAPE_SUFFIX}",
            source=self.capture.name,
            extra_metadata=tape_metadata(self.capture.name),
        )
        self.frames = 0
        self.raw_bytes = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.lines_written = 0
        self.reasons: Counter[str] = Counter()
        self.batch_lines: list[bytes] = []
        self.batch_ts: list[int] = []
        self.batch_frames: list[bytes] = []
        self.batch_letters: list[bytes] = []
        self.batch_start = 0

    def add(self, ts_recv: int, frame: bytes, line: bytes) -> None:
        if not self.batch_frames:
            self.batch_start = ts_recv
        if self.first_ts is None:
            self.first_ts = ts_recv
        self.last_ts = ts_recv
        self.frames += 1
        self.raw_bytes += len(line)
        self.batch_lines.append(line)
        self.batch_ts.append(ts_recv)
        self.batch_frames.append(frame)

    def reject(self, ts_recv: int, frame: bytes) -> None:
        """Keep a frame with a line break whole in the dead-letter file."""
        after = self.lines_written + len(self.batch_frames)
        letter = DeadLetter(
            stage=RECORD_STAGE,
            reason="frame_contains_newline",
            detail=(f"{self.capture.name}: frame received at {ts_recv} after line {after} "
                    "contains a line break, so it cannot be a capture line; kept whole in "
                    "'frame' here"),
            source=f"{self.capture.name}:after line {after}",
            ts_recv=ts_recv,
            payload=frame[: PAYLOAD_LIMIT * 4].decode("utf-8", "replace")[:PAYLOAD_LIMIT],
        )
        self.reasons[letter.reason] += 1
        self.batch_letters.append(dead_letter_line(letter, frame))

    def sync(self) -> None:
        """Flush both files and fsync them."""
        self.compressed.flush()
        self.letters_file.flush()
        os.fsync(self.raw.fileno())
        os.fsync(self.letters_file.fileno())

    def abandon(self) -> None:
        """Close the handles, leaving the partial files for recovery (after a failure)."""
        for handle in (self.compressed, self.raw, self.letters_file):
            try:
                handle.close()
            except (OSError, ValueError):  # the handle is what failed; recovery takes over
                pass
        self.tape.abort()


class Recorder:
    """Records `(ts_recv, frame)` pairs into a recording directory (see the module docstring).

    Opening takes the directory's lock, runs `Recorder.recover` (so what a crash left becomes
    readable segments; the report is `self.recovery`), and continues an existing recording of the
    same venue with the next sequence number. `close()` finalizes the open segment; leaving a
    `with` block closes too, even on an exception (what was recorded is kept).

    Calls are synchronous and not thread-safe: feed it from one thread (a rotation fsyncs and
    closes files, so keep it off the thread that stamps receive times).
    """

    def __init__(
        self, config: RecorderConfig, parser_factory: Callable[[], FrameParser]
    ) -> None:
        self.config = config
        config.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = RecordingLock(config.out_dir)
        try:
            self.recovery = recover_recording(config.out_dir, parser_factory, config.gzip_level)
            for action in self.recovery.actions:
                logger.warning("recorder recovery in %s: %s", config.out_dir, action)
            self.manifest = self._open_manifest()
            self._parser = parser_factory()
        except BaseException:
            self._lock.release()
            raise
        seqs = [segment_seq(path.name) or 0 for path in finalized_captures(config.out_dir)]
        self._next_seq = max([*seqs, *(s.seq for s in self.manifest.segments)], default=-1) + 1
        self._segment: _Segment | None = None
        self._closed = False

    def _open_manifest(self) -> RecordingManifest:
        config = self.config
        if (config.out_dir / MANIFEST_FILE).exists():
            manifest = read_manifest(config.out_dir)
            if manifest.venue != config.venue:
                raise RecordingError(
                    f"{config.out_dir}: holds a recording of venue {manifest.venue!r}, not "
                    f"{config.venue!r}; record into another directory"
                )
        else:
            manifest = RecordingManifest(config.venue)
        manifest.symbols = list(dict.fromkeys([*manifest.symbols, *config.symbols]))
        manifest.created_by = f"ats {ats_version()}"
        write_manifest(config.out_dir, manifest)
        return manifest

    @staticmethod
    def recover(
        out_dir: str | Path, parser_factory: Callable[[], FrameParser] | None = None
    ) -> RecoveryReport:
        """Finalize what a crashed recorder left in `out_dir` (see
        `storage.recording_recovery.recover_recording`); refuses while a recorder is writing
        there."""
        out_dir = Path(out_dir)
        if not out_dir.is_dir():
            return RecoveryReport(out_dir)
        lock = RecordingLock(out_dir)
        try:
            return recover_recording(out_dir, parser_factory)
        finally:
            lock.release()

    @property
    def segments(self) -> list[SegmentInfo]:
        """The finalized segments of the recording, oldest first."""
        return list(self.manifest.segments)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception:  # keep the original error; the partial files stay for recovery
            logger.exception("recorder in %s could not finalize after an error; "
                             "Recorder.recover will finalize its partial files",
                             self.config.out_dir)

    # ---------------------------------------------------------------- writing

    def write(self, ts_recv: int, frame: bytes) -> None:
        """Record one frame received at `ts_recv` (int ns since the epoch)."""
        self.write_many([ts_recv], [frame])

    def write_many(self, ts_recv: Sequence[int], frames: Sequence[bytes]) -> None:
        """Record frames in arrival order. Receive times and frame types are checked first, so a
        bad call (a caller's bug: ValueError/TypeError naming the position) records nothing."""
        if self._closed:
            raise RecordingError(f"{self.config.out_dir}: write after close")
        if len(ts_recv) != len(frames):
            raise ValueError(f"write_many: {len(ts_recv)} receive times for {len(frames)} frames")
        times = [_receive_time(value, index) for index, value in enumerate(ts_recv)]
        payloads = [_frame_bytes(value, index) for index, value in enumerate(frames)]
        rotate_bytes = self.config.rotate_bytes
        batch_frames = self.config.tape_batch_frames
        flush_ns = self.config.flush_ns
        segment = self._segment
        for ts, frame in zip(times, payloads, strict=True):
            if segment is not None and ts >= segment.boundary_ns:
                self._finalize("time")
                segment = None
            if b"\n" in frame or b"\r" in frame:
                if segment is None:
                    segment = self._open(ts)
                segment.reject(ts, frame)
                continue
            line = b"%d %b\n" % (ts, frame)
            if segment is not None and segment.frames and (
                segment.raw_bytes + len(line) > rotate_bytes
            ):
                self._finalize("size")
                segment = None
            if segment is None:
                segment = self._open(ts)
            segment.add(ts, frame, line)
            if len(segment.batch_frames) >= batch_frames or ts - segment.batch_start >= flush_ns:
                self._write_batch(segment)

    def flush(self) -> None:
        """Write the open batch and fsync the open segment's files. Batches are only written
        when frames arrive, so a caller with a quiet feed may call this now and then."""
        if self._segment is not None:
            self._write_batch(self._segment)
            self._segment.sync()

    def rotate(self) -> None:
        """Finalize the open segment now (the next frame starts a new one)."""
        if self._segment is not None:
            self._finalize("rotate")

    def close(self) -> RecordingManifest:
        """Finalize the open segment, release the directory; returns the final manifest."""
        if not self._closed:
            try:
                if self._segment is not None:
                    self._finalize("close")
            finally:
                self._closed = True
                self._lock.release()
        return self.manifest

    # ---------------------------------------------------------------- segments

    def _open(self, start_ns: int) -> _Segment:
        self._segment = _Segment(self.config, self._next_seq, start_ns)
        self._next_seq += 1
        return self._segment

    def _write_batch(self, segment: _Segment) -> None:
        """Compress, parse and append the batch to the tape; flush to the operating system."""
        if segment.batch_frames:
            first_line = segment.lines_written + 1
            segment.compressed.write(b"".join(segment.batch_lines))
            segment.lines_written += len(segment.batch_frames)
            numbers = list(range(first_line, segment.lines_written + 1))
            try:
                chunks, letters = parse_segment_frames(
                    self._parser, segment.capture.name, numbers, segment.batch_ts,
                    segment.batch_frames,
                )
            except Exception as error:  # a parser bug must not stop the raw recording
                logger.exception("parser failed on %s lines %d-%d", segment.capture.name,
                                 first_line, segment.lines_written)
                chunks, letters = [], [DeadLetter(
                    stage=RECORD_STAGE,
                    reason="parser_exception",
                    detail=(f"{segment.capture.name} lines {first_line}-{segment.lines_written}:"
                            f" the parser raised {type(error).__name__}: {error}; the lines are "
                            "in the capture but not in the tape"),
                    source=f"{segment.capture.name}:line {first_line}",
                )]
            for chunk in chunks:
                segment.tape.write_chunk(chunk)
            segment.reasons.update(letter.reason for letter in letters)
            segment.batch_letters += [dead_letter_line(letter) for letter in letters]
            segment.batch_lines, segment.batch_ts, segment.batch_frames = [], [], []
            segment.compressed.flush()
        if segment.batch_letters:
            segment.letters_file.write(b"".join(segment.batch_letters))
            segment.batch_letters = []
            segment.letters_file.flush()

    def _finalize(self, closed_by: str) -> None:
        """Close the open segment: tape and dead letters first, the capture last, then list it.

        Order matters for recovery: the capture is fsynced before the tape is published, so a
        published tape always has every line of its capture on disk."""
        segment = self._segment
        assert segment is not None
        self._segment = None
        try:
            self._write_batch(segment)
            segment.sync()
            segment.tape.close()
            segment.letters_file.close()
            os.replace(segment.letters_partial, segment.letters)
            segment.compressed.close()
            segment.raw.flush()
            os.fsync(segment.raw.fileno())
            segment.raw.close()
            os.replace(segment.capture_partial, segment.capture)
            fsync_directory(self.config.out_dir)
        except BaseException:
            segment.abandon()
            raise
        info = SegmentInfo(
            seq=segment.seq,
            capture=segment.capture.name,
            tape=segment.tape.path.name,
            dead_letters=segment.letters.name,
            first_ts_recv=segment.first_ts,
            last_ts_recv=segment.last_ts,
            frames=segment.frames,
            bytes=segment.raw_bytes,
            compressed_bytes=segment.capture.stat().st_size,
            sha256=file_sha256(segment.capture),
            symbols=list(segment.tape.symbols),
            dead_letter_reasons=dict(sorted(segment.reasons.items())),
            closed_by=closed_by,
        )
        self.manifest.segments.append(info)
        self.manifest.symbols = list(dict.fromkeys([*self.manifest.symbols, *info.symbols]))
        write_manifest(self.config.out_dir, self.manifest)
