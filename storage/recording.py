"""A recording directory: rotated raw-capture segments, their tapes and dead letters, a manifest.

`storage.recorder.Recorder` writes it; replay reads its capture segments in order
(`recording_inputs`). Layout, for segment stem `<venue>-<start>-<seq>` (start: UTC receive time of
the segment's first frame as yyyymmddThhmmss; seq: six or more digits counting from 000000):

- `<stem>.capture.gz`: the raw capture, gzip text lines `<ts_recv ns> <frame>\\n` exactly as
  `dataflows.capture.read_capture` reads them;
- `<stem>.tape/`: the Parquet tape (`storage.tape`) parsed from exactly the same frames;
- `<stem>.dead_letters.jsonl`: one JSON object per dead letter of those frames (the parser's, and
  the recorder's own: frames that could not be recorded, segments cut short by a crash);
- `recording.json`: the manifest (`RecordingManifest`), rewritten atomically after each segment;
- `.recorder.lock`: locked (flock) by the process recording into the directory.

While a segment is open its files have temporary names: `.<stem>.capture.gz.partial`,
`.<stem>.dead_letters.jsonl.partial` and the tape writer's `.<stem>.tape.tmp-*` directory. A file
gets its final name only after it is complete, flushed and fsynced, so a final name never holds a
half-written file; `storage.recording_recovery.recover_recording` turns what a crash left
into readable segments.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from engine.batches import DeadLetter, MarketChunk

MANIFEST_FILE = "recording.json"
LOCK_FILE = ".recorder.lock"
RECORDING_FORMAT = "ats-recording"
RECORDING_VERSION = 1
RECORD_STAGE = "record"  # dead letters the recorder itself writes (not the parser's)
CAPTURE_SUFFIX = ".capture.gz"
TAPE_SUFFIX = ".tape"
DEAD_LETTERS_SUFFIX = ".dead_letters.jsonl"
PARTIAL_SUFFIX = ".partial"
_STEM = r"(?P<venue>[a-z0-9][a-z0-9_-]*)-(?P<start>\d{8}T\d{6})-(?P<seq>\d{6,})"
_CAPTURE_NAME = re.compile(rf"^{_STEM}{re.escape(CAPTURE_SUFFIX)}$")
VENUE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class RecordingError(Exception):
    """A recording directory cannot be read, written or locked; names the path and the cause."""


class ParsedFrames(Protocol):
    """What a venue parser returns: per-symbol chunks and the dead letters no symbol claims."""

    @property
    def chunks(self) -> list[MarketChunk]: ...

    @property
    def dead_letters(self) -> list[DeadLetter]: ...


class FrameParser(Protocol):
    """The `dataflows.binance.BinanceParser` interface the recorder needs (one stream's state)."""

    def parse_frames(
        self, frames: list[bytes], ts_recv: list[int], source: str = "live"
    ) -> ParsedFrames: ...


# ---------------------------------------------------------------- names


def segment_stem(venue: str, start_ns: int, seq: int) -> str:
    """`<venue>-<start utc yyyymmddThhmmss>-<seq>` of a segment whose first frame came at start."""
    start = datetime.fromtimestamp(start_ns // 1_000_000_000, UTC)
    return f"{venue}-{start:%Y%m%dT%H%M%S}-{seq:06d}"


def partial_name(final_name: str) -> str:
    """Hidden temporary name of a file while it is being written."""
    return f".{final_name}{PARTIAL_SUFFIX}"


def segment_seq(capture_name: str) -> int | None:
    """Sequence number of a finalized capture segment's file name, None for any other name."""
    match = _CAPTURE_NAME.match(capture_name)
    return int(match.group("seq")) if match else None


def segment_venue(capture_name: str) -> str | None:
    match = _CAPTURE_NAME.match(capture_name)
    return match.group("venue") if match else None


def stem_of(capture_name: str) -> str:
    return capture_name.removesuffix(CAPTURE_SUFFIX)


def tape_metadata(capture_name: str) -> dict[str, Any]:
    """The extra `tape.json` keys of a segment's tape: which capture it was parsed from."""
    return {"capture_files": [capture_name], "recording_segment": segment_seq(capture_name)}


def finalized_captures(out_dir: Path) -> list[Path]:
    """Finalized capture segments present in `out_dir`, in sequence order."""
    found = [
        (seq, path)
        for path in out_dir.iterdir()
        if path.is_file() and (seq := segment_seq(path.name)) is not None
    ]
    return [path for _, path in sorted(found)]


# ---------------------------------------------------------------- manifest


@dataclass
class SegmentInfo:
    """One finalized segment as `recording.json` lists it.

    `bytes` counts the uncompressed capture text, `compressed_bytes` the file, whose SHA-256 is
    `sha256`. `closed_by` says why the segment ended: "size", "time", "rotate" (asked for),
    "close" or "recovered" (finalized from what a crash left). `tape` is None when no tape could
    be built for it (recovery without a parser).
    """

    seq: int
    capture: str
    tape: str | None
    dead_letters: str
    first_ts_recv: int | None
    last_ts_recv: int | None
    frames: int
    bytes: int
    compressed_bytes: int
    sha256: str
    symbols: list[str] = field(default_factory=list)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    closed_by: str = "close"


@dataclass
class RecordingManifest:
    """`recording.json`: what the recording holds, segment by segment."""

    venue: str
    symbols: list[str] = field(default_factory=list)
    segments: list[SegmentInfo] = field(default_factory=list)
    created_by: str = ""

    def to_json(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for segment in self.segments:
            for reason, count in segment.dead_letter_reasons.items():
                reasons[reason] = reasons.get(reason, 0) + count
        return {
            "format": RECORDING_FORMAT,
            "version": RECORDING_VERSION,
            "venue": self.venue,
            "symbols": self.symbols,
            "created_by": self.created_by,
            "frames": sum(segment.frames for segment in self.segments),
            "dead_letters": dict(sorted(reasons.items())),
            "segments": [asdict(segment) for segment in self.segments],
        }

    @staticmethod
    def from_json(data: object, path: Path) -> RecordingManifest:
        """Validate a decoded `recording.json`; `RecordingError` names the file and key."""
        if not isinstance(data, dict) or data.get("format") != RECORDING_FORMAT:
            raise RecordingError(f"{path}: not a recording manifest: 'format' is not "
                                 f"{RECORDING_FORMAT!r}")
        if data.get("version") != RECORDING_VERSION:
            raise RecordingError(f"{path}: recording version {data.get('version')!r} is not "
                                 f"supported (this ats reads version {RECORDING_VERSION})")
        venue, symbols, segments = data.get("venue"), data.get("symbols"), data.get("segments")
        if not isinstance(venue, str) or not VENUE_NAME.match(venue):
            raise RecordingError(f"{path}: 'venue' must be a lower-case name, got {venue!r}")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise RecordingError(f"{path}: 'symbols' must be a list of strings")
        if not isinstance(segments, list):
            raise RecordingError(f"{path}: 'segments' must be a list")
        names = {item.name for item in fields(SegmentInfo)}
        parsed = []
        for index, entry in enumerate(segments):
            if not isinstance(entry, dict) or not {"seq", "capture"} <= set(entry):
                raise RecordingError(f"{path}: segments[{index}] lacks 'seq' or 'capture'")
            try:
                parsed.append(SegmentInfo(**{k: v for k, v in entry.items() if k in names}))
            except TypeError as error:
                raise RecordingError(f"{path}: segments[{index}]: {error}") from None
        return RecordingManifest(venue, list(symbols), parsed, str(data.get("created_by", "")))


def read_manifest(out_dir: Path) -> RecordingManifest:
    """The manifest of a recording directory; `RecordingError` if it is missing or invalid."""
    path = out_dir / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordingError(f"{out_dir}: not a recording: {MANIFEST_FILE} is missing") from None
    except (OSError, ValueError) as error:
        raise RecordingError(f"{path}: unreadable recording manifest: {error}") from error
    return RecordingManifest.from_json(data, path)


def write_manifest(out_dir: Path, manifest: RecordingManifest) -> None:
    """Replace `recording.json` atomically (temp file, fsync, rename)."""
    text = json.dumps(manifest.to_json(), indent=2) + "\n"
    atomic_write_bytes(out_dir / MANIFEST_FILE, text.encode())


def is_recording(path: Path) -> bool:
    """True for a directory holding `recording.json`."""
    return path.is_dir() and (path / MANIFEST_FILE).is_file()


def recording_inputs(out_dir: str | Path) -> list[Path]:
    """The finalized capture segments of a recording, in order, to replay it as one stream.

    Segments listed in `recording.json` must exist (`RecordingError` names the missing ones).
    A finalized segment the manifest does not list yet (the recorder stopped between renaming it
    and rewriting the manifest) is complete by construction and is included in its place.
    Leftover `.partial` files are not: `Recorder.recover` finalizes them.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    missing = [s.capture for s in manifest.segments if not (out_dir / s.capture).is_file()]
    if missing:
        raise RecordingError(f"{out_dir}: segments listed in {MANIFEST_FILE} are missing: "
                             f"{', '.join(missing)}")
    return finalized_captures(out_dir)


# ---------------------------------------------------------------- files


def fsync_directory(path: Path) -> None:
    """Make renames inside `path` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a hidden temporary file, fsync, rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dead_letter_line(letter: DeadLetter, frame: bytes | None = None) -> bytes:
    """One JSON line for a dead letter. A frame the recorder could not put into the capture
    travels whole in `frame`: as text when it is valid UTF-8, else decoded as latin-1 (one
    character per byte, so `frame.encode(frame_encoding)` gives the bytes back)."""
    record: dict[str, Any] = asdict(letter)
    if frame is not None:
        try:
            record["frame"] = frame.decode("utf-8")
            record["frame_encoding"] = "utf-8"
        except UnicodeDecodeError:
            record["frame"] = frame.decode("latin-1")
            record["frame_encoding"] = "latin-1"
    return json.dumps(record, ensure_ascii=False).encode() + b"\n"


def read_dead_letter_records(path: Path) -> list[dict[str, Any]]:
    """The records of a dead-letter file, up to its last complete line (a partial may be cut)."""
    data = path.read_bytes()
    records = []
    for number, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            record = {"stage": RECORD_STAGE, "reason": "unreadable_dead_letter",
                      "detail": f"{path.name} line {number} is not JSON",
                      "source": f"{path.name}:line {number}",
                      "payload": line.decode("utf-8", "replace")[:2000]}
        records.append(record if isinstance(record, dict) else {"value": record})
    return records


class RecordingLock:
    """An exclusive flock on `<out_dir>/.recorder.lock`: one writer per recording directory.

    The operating system drops the lock when the holding process dies, so a crash never leaves a
    stale lock behind.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_FILE
        self._handle: IO[bytes] | None = open(self.path, "ab")
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            self._handle = None
            raise RecordingError(
                f"{out_dir}: another recorder is writing into this directory "
                f"(it holds {LOCK_FILE})"
            ) from None

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def describe_segment(capture: Path, closed_by: str) -> SegmentInfo:
    """A manifest entry computed from a finalized segment's files (used by recovery)."""
    from dataflows.capture import read_capture

    stem = stem_of(capture.name)
    frames = raw_bytes = 0
    first: int | None = None
    last: int | None = None
    for chunk, _ in read_capture(capture):
        if chunk.frames:
            first = chunk.ts_recv[0] if first is None else first
            last = chunk.ts_recv[-1]
            frames += len(chunk.frames)
            raw_bytes += sum(len(frame) for frame in chunk.frames) + 2 * len(chunk.frames)
            raw_bytes += sum(len(str(ts)) for ts in chunk.ts_recv)
    tape = capture.with_name(f"{stem}{TAPE_SUFFIX}")
    symbols: list[str] = []
    if (tape / "tape.json").is_file():
        symbols = list(json.loads((tape / "tape.json").read_text()).get("symbols", []))
    letters = capture.with_name(f"{stem}{DEAD_LETTERS_SUFFIX}")
    reasons: dict[str, int] = {}
    for record in read_dead_letter_records(letters) if letters.exists() else []:
        reason = str(record.get("reason", "unknown"))
        reasons[reason] = reasons.get(reason, 0) + 1
    return SegmentInfo(
        seq=int(segment_seq(capture.name) or 0),
        capture=capture.name,
        tape=tape.name if tape.is_dir() else None,
        dead_letters=letters.name,
        first_ts_recv=first,
        last_ts_recv=last,
        frames=frames,
        bytes=raw_bytes,
        compressed_bytes=capture.stat().st_size,
        sha256=file_sha256(capture),
        symbols=symbols,
        dead_letter_reasons=reasons,
        closed_by=closed_by,
    )
