"""The cryptofeed capture reader on every bundled cryptofeed file (data/multi-venue/), against a
naive reading of the four line shapes; REST envelopes, bad lines, gzip and chunking."""

from __future__ import annotations

import gzip
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from dataflows.cryptofeed_capture import CryptofeedStats, read_cryptofeed_capture
from tests.dataflows.venue_helpers import MULTI_VENUE

FILES = ["BINANCE.http.0.0", "BINANCE.ws.1.0", "BINANCE_FUTURES.http.0.0",
         "BINANCE_FUTURES.ws.1.0", "COINBASE.ws.28.0", "KRAKEN.ws.50.0", "OKX.ws.1.0"]


def _naive(path: Path) -> dict[str, list]:
    shapes: dict[str, list] = {"received": [], "http": [], "opened": [], "sent": [], "blank": []}
    for number, line in enumerate(open(path), start=1):
        line = line.rstrip("\n")
        if not line:
            shapes["blank"].append(number)
        elif " <-> " in line:
            shapes["opened"].append(number)
        elif " <- " in line:
            shapes["sent"].append(number)
        elif " -> " in line:
            url, rest = line.split(" -> ", 1)
            stamp, body = rest.split(": ", 1)
            shapes["http"].append((number, int(Decimal(stamp) * 10**9), url, body))
        else:
            stamp, body = line.split(": ", 1)
            shapes["received"].append((number, int(Decimal(stamp) * 10**9), body))
    return shapes


@pytest.mark.parametrize("name", FILES)
def test_every_line_of_the_bundled_files_is_read(name: str) -> None:
    path = MULTI_VENUE / name
    naive = _naive(path)
    stats = CryptofeedStats()
    frames = []
    for chunk, letters in read_cryptofeed_capture(path, chunk_lines=100, stats=stats):
        assert letters == [] and chunk.source == name
        frames += list(zip(chunk.line_numbers, chunk.ts_recv, chunk.frames, strict=True))
    assert stats.lines == sum(1 for _ in open(path, "rb"))
    assert (stats.received_frames, stats.http_responses, stats.connections, stats.client_frames,
            stats.blank_lines, stats.invalid_lines) == (
        len(naive["received"]), len(naive["http"]), len(naive["opened"]), len(naive["sent"]),
        len(naive["blank"]), 0)
    expected = {number: (stamp, body.encode()) for number, stamp, body in naive["received"]}
    for number, stamp, url, body in naive["http"]:
        symbol = re.search(r"symbol=(\w+)", url).group(1)  # type: ignore[union-attr]
        path_part = re.sub(r"^https://[^/]+", "", url).split("?")[0]
        envelope = {"rest": path_part, "symbol": symbol, "data": json.loads(body)}
        expected[number] = (stamp, envelope)
    assert [number for number, _, _ in frames] == sorted(expected)
    for number, stamp, frame in frames:
        want_stamp, want = expected[number]
        assert stamp == want_stamp
        if isinstance(want, dict):
            assert json.loads(frame) == want
        else:
            assert frame == want


def test_http_responses_become_rest_envelopes() -> None:
    chunks = list(read_cryptofeed_capture(MULTI_VENUE / "BINANCE_FUTURES.http.0.0"))
    ((chunk, letters),) = chunks
    assert letters == []
    first = json.loads(chunk.frames[0])
    assert first["rest"] == "/fapi/v1/depth" and first["symbol"] == "SUSHIUSDT"
    assert first["data"]["lastUpdateId"] == 600859605926 and len(first["data"]["bids"]) == 1000
    assert chunk.ts_recv[0] == 1626992741_301402000


def test_bad_lines_and_odd_times(tmp_path: Path) -> None:
    capture = tmp_path / "odd.ws.0.0"
    capture.write_text("\n".join([
        "wss://example <-> 1618677816.8434298",
        "1618677817: {\"type\":\"heartbeat\"}",  # whole seconds
        "garbage line",
        "1618677817.1234567891: {}",  # more than 9 decimals: cut
        "https://x/api?limit=5 -> 1618677818.5: {\"a\":1}",  # no symbol parameter
        "-1.5: {}",
        "",
    ]) + "\n")
    stats = CryptofeedStats()
    ((chunk, letters),) = list(read_cryptofeed_capture(capture, stats=stats))
    assert chunk.line_numbers == [2, 4, 5]
    assert chunk.ts_recv == [1618677817_000000000, 1618677817_123456789, 1618677818_500000000]
    assert json.loads(chunk.frames[2]) == {"rest": "/api", "data": {"a": 1}}
    assert [(letter.source, letter.reason) for letter in letters] == [
        ("odd.ws.0.0:line 3", "invalid_line"), ("odd.ws.0.0:line 6", "invalid_line")]
    assert "garbage line" in letters[0].payload and "odd.ws.0.0 line 3" in letters[0].detail
    assert (stats.invalid_lines, stats.connections, stats.blank_lines) == (2, 1, 1)


def test_gzip_chunks_and_truncation(tmp_path: Path) -> None:
    source = (MULTI_VENUE / "OKX.ws.1.0").read_bytes()
    packed = tmp_path / "OKX.ws.1.0.gz"
    packed.write_bytes(gzip.compress(source))
    plain = [frame for chunk, _ in read_cryptofeed_capture(MULTI_VENUE / "OKX.ws.1.0")
             for frame in chunk.frames]
    chunks = list(read_cryptofeed_capture(packed, chunk_lines=100))
    assert [len(chunk) for chunk, _ in chunks] == [100, 100, 100, 100, 10]
    assert [frame for chunk, _ in chunks for frame in chunk.frames] == plain
    cut = tmp_path / "cut.gz"
    cut.write_bytes(packed.read_bytes()[: len(packed.read_bytes()) // 2])
    chunks = list(read_cryptofeed_capture(cut))
    assert [letter.reason for _, letters in chunks for letter in letters] == ["truncated_file"]
    assert 0 < sum(len(chunk) for chunk, _ in chunks) < len(plain)
    with pytest.raises(ValueError, match="chunk_lines"):
        next(read_cryptofeed_capture(packed, chunk_lines=0))
