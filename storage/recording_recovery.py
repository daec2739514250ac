"""Recovery of a recording directory after a crash, and parsing of segment frames.

A crashed recorder leaves hidden `.partial` files and a tape writer's temporary directory (see
`storage.recording` for the layout). `recover_recording` turns them into readable segments: the
complete lines of a partial capture become a final segment (with a `segment_not_closed` dead
letter), half-written tape directories are removed, missing tapes are rebuilt, and segments the
manifest lacks are listed. Running it twice changes nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.batches import DeadLetter, MarketChunk
from storage.recording import (
    CAPTURE_SUFFIX,
    DEAD_LETTERS_SUFFIX,
    MANIFEST_FILE,
    PARTIAL_SUFFIX,
    RECORD_STAGE,
    TAPE_SUFFIX,
    FrameParser,
    RecordingManifest,
    SegmentInfo,
    atomic_write_bytes,
    dead_letter_line,
    describe_segment,
    finalized_captures,
    fsync_directory,
    partial_name,
    read_dead_letter_records,
    read_manifest,
    segment_venue,
    stem_of,
    tape_metadata,
    write_manifest,
)
from storage.tape import TapeWriter, ats_version


def parse_segment_frames(
    parser: FrameParser,
    source: str,
    line_numbers: list[int],
    ts_recv: list[int],
    frames: list[bytes],
) -> tuple[list[MarketChunk], list[DeadLetter]]:
    """Parse consecutive lines of a capture segment; returns its chunks and all dead letters.

    A parser that also offers `parse_lines` (as `BinanceParser` does) is given the segment's line
    numbers, so its dead letters name "<segment file>:line N" exactly as a replay of that file
    would; otherwise `parse_frames(frames, ts_recv, source)` is used.
    """
    parse_lines = getattr(parser, "parse_lines", None)
    if callable(parse_lines):
        from dataflows.capture import CaptureChunk  # storage stays importable without dataflows

        result = parse_lines(CaptureChunk(source, line_numbers, ts_recv, frames), source)
    else:
        result = parser.parse_frames(frames, ts_recv, source)
    chunks = list(result.chunks)
    letters = list(result.dead_letters)
    for chunk in chunks:
        letters.extend(chunk.dead_letters)
    return chunks, letters


# ---------------------------------------------------------------- recovery


@dataclass
class RecoveryReport:
    """What `recover_recording` did; `actions` holds one readable line per change."""

    out_dir: Path
    finalized: list[str] = field(default_factory=list)  # segments finalized from partials
    frames_recovered: int = 0
    tapes_rebuilt: list[str] = field(default_factory=list)
    tapes_missing: list[str] = field(default_factory=list)  # no parser was given to build them
    removed: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def recover_recording(
    out_dir: str | Path,
    parser_factory: Callable[[], FrameParser] | None = None,
    gzip_level: int = 6,
) -> RecoveryReport:
    """Turn what a stopped or crashed recorder left in `out_dir` into readable segments.

    - removes half-written tape directories and temporary files;
    - finalizes each `.partial` capture: its complete lines (all of them up to the crash) are
      recompressed into the final segment file, with a `segment_not_closed` dead letter saying
      how many lines were kept; an empty partial is removed;
    - finalizes `.partial` dead-letter files up to their last complete line;
    - builds the tape of every segment that has none, with a new parser from `parser_factory`
      that first reads the previous segment (see `_rebuild_tape`); its parser dead letters
      replace the segment's, the recorder's own stay. Without a factory the segment is listed
      with `tape: null` and reported;
    - rewrites `recording.json` to list every finalized segment (and drops listed ones whose file
      is gone, saying so).

    The caller must hold the directory's lock (`Recorder` does; `Recorder.recover` takes it).
    Running it again changes nothing.
    """
    out_dir = Path(out_dir)
    report = RecoveryReport(out_dir)
    if not out_dir.is_dir():
        return report
    _remove_temporaries(out_dir, report)
    stems = {
        path.name[1:].removesuffix(PARTIAL_SUFFIX).removesuffix(suffix)
        for suffix in (CAPTURE_SUFFIX, DEAD_LETTERS_SUFFIX)
        for path in out_dir.glob(f".*{suffix}{PARTIAL_SUFFIX}")
    }
    for stem in sorted(stems):
        _finalize_partials(out_dir, stem, gzip_level, report)
    captures = finalized_captures(out_dir)
    manifest_path = out_dir / MANIFEST_FILE
    if manifest_path.exists():
        manifest = read_manifest(out_dir)
    elif captures:
        manifest = RecordingManifest(str(segment_venue(captures[0].name)))
        report.actions.append(f"{MANIFEST_FILE} was missing: rebuilt from the segment files")
    else:
        return report
    listed = {segment.capture: segment for segment in manifest.segments}
    segments: list[SegmentInfo] = []
    for index, capture in enumerate(captures):
        stem = stem_of(capture.name)
        info = listed.get(capture.name)
        rebuilt = False
        if not (out_dir / f"{stem}{TAPE_SUFFIX}").is_dir():
            if parser_factory is None:
                report.tapes_missing.append(stem + TAPE_SUFFIX)
            else:
                _rebuild_tape(capture, parser_factory(), captures[index - 1] if index else None)
                report.tapes_rebuilt.append(stem + TAPE_SUFFIX)
                report.actions.append(f"built the missing tape {stem}{TAPE_SUFFIX}")
                rebuilt = True
        if info is None or rebuilt or stem in report.finalized:
            closed_by = "recovered" if info is None or stem in report.finalized else info.closed_by
            info = describe_segment(capture, closed_by)
            if capture.name not in listed:
                report.actions.append(f"listed {capture.name} in {MANIFEST_FILE}")
        segments.append(info)
    present = {capture.name for capture in captures}
    for name in listed:
        if name not in present:
            report.actions.append(f"dropped {name} from {MANIFEST_FILE}: the file is gone")
    if report.actions:
        symbols = dict.fromkeys(manifest.symbols)
        for segment in segments:
            symbols.update(dict.fromkeys(segment.symbols))
        manifest.symbols = list(symbols)
        manifest.segments = segments
        manifest.created_by = manifest.created_by or f"ats {ats_version()}"
        write_manifest(out_dir, manifest)
    return report


def _remove_temporaries(out_dir: Path, report: RecoveryReport) -> None:
    """Half-written tape directories (TapeWriter's `.<tape>.tmp-*` and `.old-*`) and our own
    `.<name>.tmp` files."""
    ours = (CAPTURE_SUFFIX, TAPE_SUFFIX, DEAD_LETTERS_SUFFIX, MANIFEST_FILE)
    for path in sorted(out_dir.iterdir()):
        name = path.name
        if not name.startswith(".") or not any(part in name for part in ours):
            continue
        if path.is_dir() and (".tmp-" in name or ".old-" in name):
            shutil.rmtree(path)
        elif path.is_file() and name.endswith(".tmp"):
            path.unlink()
        else:
            continue
        report.removed.append(name)
        report.actions.append(f"removed the half-written {name}")


def _finalize_partials(out_dir: Path, stem: str, gzip_level: int, report: RecoveryReport) -> None:
    """Give a crashed segment's capture and dead-letter partials their final names."""
    capture = out_dir / f"{stem}{CAPTURE_SUFFIX}"
    letters = out_dir / f"{stem}{DEAD_LETTERS_SUFFIX}"
    capture_partial = out_dir / partial_name(capture.name)
    letters_partial = out_dir / partial_name(letters.name)
    records = read_dead_letter_records(letters_partial) if letters_partial.exists() else []
    if capture_partial.exists() and capture.exists():
        capture_partial.unlink()  # renamed before the crash: the final file is complete
        report.removed.append(capture_partial.name)
    elif capture_partial.exists():
        from dataflows.capture import read_capture  # storage stays importable without dataflows

        temporary = capture.with_name(f".{capture.name}.tmp")
        kept = 0
        read_letters: list[DeadLetter] = []
        with open(temporary, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=gzip_level,
                               mtime=0) as compressed:
                for chunk, chunk_letters in read_capture(capture_partial):
                    pairs = zip(chunk.ts_recv, chunk.frames, strict=True)
                    compressed.write(b"".join(b"%d %b\n" % pair for pair in pairs))
                    kept += len(chunk.frames)
                    read_letters += chunk_letters
            raw.flush()
            os.fsync(raw.fileno())
        if not kept and not records:
            for path in (temporary, capture_partial, letters_partial):
                path.unlink(missing_ok=True)
            report.removed.append(capture_partial.name)
            report.actions.append(f"removed {capture_partial.name}: it held no complete line")
            return
        lost = (f"; anything received after them was lost "
                f"({'; '.join(letter.detail for letter in read_letters)})" if read_letters else "")
        note = DeadLetter(
            stage=RECORD_STAGE,
            reason="segment_not_closed",
            detail=(f"{capture.name}: the recorder stopped without closing this segment; "
                    f"{kept} complete lines were recovered{lost}"),
            source=f"{capture.name}:line {kept + 1}",
        )
        records.append(json.loads(dead_letter_line(note)))
        os.replace(temporary, capture)
        fsync_directory(out_dir)
        capture_partial.unlink()
        report.finalized.append(stem)
        report.frames_recovered += kept
        report.actions.append(f"finalized {capture.name} from {capture_partial.name}: {kept} lines")
    if letters_partial.exists() and letters.exists():
        letters_partial.unlink()
    elif letters_partial.exists() or (capture.exists() and not letters.exists()):
        atomic_write_bytes(letters, b"".join(_record_line(record) for record in records))
        letters_partial.unlink(missing_ok=True)
        report.actions.append(f"finalized {letters.name} ({len(records)} dead letters)")


def _record_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode() + b"\n"


def _rebuild_tape(capture: Path, parser: FrameParser, previous: Path | None) -> None:
    """Parse a finalized capture segment into its tape; its parser dead letters are regenerated,
    the recorder's own (stage "record") are kept.

    The parser first reads the previous segment (output discarded), so that the stream state it
    carries (Binance: the clock offset and the last estimated quote time) is what the recorder's
    parser had when it reached this segment, and the tape comes out as the recorder would have
    written it.
    """
    from dataflows.capture import read_capture

    if previous is not None:
        for lines, _ in read_capture(previous):
            if lines.frames:
                parse_segment_frames(parser, previous.name, lines.line_numbers, lines.ts_recv,
                                     lines.frames)
    stem = stem_of(capture.name)
    letters_path = capture.with_name(f"{stem}{DEAD_LETTERS_SUFFIX}")
    kept = [
        record for record in (read_dead_letter_records(letters_path)
                              if letters_path.exists() else [])
        if record.get("stage") == RECORD_STAGE
    ]
    letters: list[DeadLetter] = []
    with TapeWriter(capture.with_name(f"{stem}{TAPE_SUFFIX}"), source=capture.name,
                    extra_metadata=tape_metadata(capture.name)) as writer:
        for lines, read_letters in read_capture(capture):
            letters += read_letters
            if not lines.frames:
                continue
            chunks, parsed = parse_segment_frames(
                parser, capture.name, lines.line_numbers, lines.ts_recv, lines.frames
            )
            letters += parsed
            for chunk in chunks:
                writer.write_chunk(chunk)
        data = b"".join(_record_line(record) for record in kept)
        atomic_write_bytes(letters_path, data + b"".join(map(dead_letter_line, letters)))
