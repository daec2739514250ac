"""Raw captures recorded by cryptofeed (`sample_data/` of bmoscon/cryptofeed), read as frames.

cryptofeed's raw-data recorder writes one line per event, gzip or plain text, in four shapes:

    <url> <-> <unix time>            a connection was opened
    <url> <- <unix time>: <JSON>     the client sent a frame (subscriptions)
    <unix time>: <JSON>              a websocket frame was received
    <url> -> <unix time>: <JSON>     an HTTP response was received

Unix times are decimal seconds, read exactly into int nanoseconds (digits past the ninth decimal
are cut). `read_cryptofeed_capture` yields `CaptureChunk`s like `dataflows.capture.read_capture`:
received frames as they are, HTTP responses wrapped in the REST envelope the live feed writes,
`{"rest": "<path>", "symbol": "<SYMBOL>", "data": <response>}`, with the path and the upper-cased
`symbol` query parameter of the URL (the key is left out when the URL has none). Connection and
client lines are not market data: they are counted in a `CryptofeedStats`, as are blank lines.
Any other line is a dead letter ("invalid_line") naming file and line; a cut-off gzip file ends
with one "truncated_file" dead letter.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson

from dataflows.capture import (
    DEFAULT_CHUNK_LINES,
    READ_STAGE,
    CaptureChunk,
    payload_text,
)
from dataflows.venue_parser import decimal_seconds_to_ns
from engine.batches import DeadLetter

_RECEIVED = re.compile(rb"(\d{1,11}(?:\.\d{1,18})?): (.*)", re.DOTALL)
_WITH_URL = re.compile(rb"(\S+) (<-|->) (\d{1,11}(?:\.\d{1,18})?): (.*)", re.DOTALL)
_OPENED = re.compile(rb"(\S+) <-> (\d{1,11}(?:\.\d{1,18})?)")


@dataclass
class CryptofeedStats:
    """Counts of the line shapes of one or more cryptofeed captures."""

    received_frames: int = 0
    http_responses: int = 0
    connections: int = 0
    client_frames: int = 0
    blank_lines: int = 0
    invalid_lines: int = 0

    @property
    def lines(self) -> int:
        return (self.received_frames + self.http_responses + self.connections
                + self.client_frames + self.blank_lines + self.invalid_lines)


def rest_envelope(url: str, response: bytes) -> bytes:
    """The REST envelope of an HTTP response body (kept byte for byte) fetched from `url`.

    >>> rest_envelope("https://api.binance.com/api/v3/depth?symbol=nknusdt&limit=5", b"{}")
    b'{"rest":"/api/v3/depth","symbol":"NKNUSDT","data":{}}'
    """
    parts = urlsplit(url)
    symbols = parse_qs(parts.query).get("symbol")
    head = b'{"rest":' + orjson.dumps(parts.path)
    if symbols:
        head += b',"symbol":' + orjson.dumps(symbols[0].upper())
    return head + b',"data":' + response + b"}"


def _open(path: Path) -> gzip.GzipFile | io.BufferedReader:
    """Open a capture as binary, gunzipping when the file starts with the gzip magic bytes."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_cryptofeed_capture(
    path: str | Path,
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    stats: CryptofeedStats | None = None,
) -> Iterator[tuple[CaptureChunk, list[DeadLetter]]]:
    """Yield (chunk of at most `chunk_lines` frames, dead letters of the same lines).

    Same contract as `dataflows.capture.read_capture`; pass `stats` to have the line shapes
    counted into it (it keeps adding up over several files).
    """
    if chunk_lines < 1:
        raise ValueError(
            f"read_cryptofeed_capture({path}): chunk_lines must be >= 1, got {chunk_lines}"
        )
    stats = stats if stats is not None else CryptofeedStats()
    path = Path(path)
    name = path.name
    chunk = CaptureChunk(source=name)
    letters: list[DeadLetter] = []
    line_number = 0

    def dead(reason: str, detail: str, line: bytes) -> None:
        letters.append(DeadLetter(
            stage=READ_STAGE,
            reason=reason,
            detail=f"{name} line {line_number}: {detail}",
            source=f"{name}:line {line_number}",
            payload=payload_text(line),
        ))

    with _open(path) as handle:
        try:
            for line_number, line in enumerate(handle, start=1):
                line = line.rstrip(b"\r\n")
                frame: bytes | None = None
                stamp = b""
                received = _RECEIVED.fullmatch(line)
                if received is not None:
                    stamp, frame = received.groups()
                    stats.received_frames += 1
                elif (with_url := _WITH_URL.fullmatch(line)) is not None:
                    url, direction, stamp, body = with_url.groups()
                    if direction == b"<-":
                        stats.client_frames += 1
                    else:
                        stats.http_responses += 1
                        frame = rest_envelope(url.decode("utf-8", "replace"), body)
                elif _OPENED.fullmatch(line) is not None:
                    stats.connections += 1
                elif not line.strip():
                    stats.blank_lines += 1
                else:
                    stats.invalid_lines += 1
                    dead("invalid_line", "expected '<unix time>: <frame>', '<url> -> <unix "
                         f"time>: <frame>', '<url> <- ...' or '<url> <-> <unix time>', found "
                         f"{payload_text(line[:60])!r}", line)
                if frame is not None:
                    chunk.line_numbers.append(line_number)
                    chunk.ts_recv.append(decimal_seconds_to_ns(stamp.decode()))
                    chunk.frames.append(frame)
                    if len(chunk.frames) >= chunk_lines:
                        yield chunk, letters
                        chunk, letters = CaptureChunk(source=name), []
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            letters.append(DeadLetter(
                stage=READ_STAGE,
                reason="truncated_file",
                detail=f"{name}: unreadable after line {line_number}: {error}",
                source=f"{name}:line {line_number + 1}",
            ))
    if chunk.frames or letters:
        yield chunk, letters
