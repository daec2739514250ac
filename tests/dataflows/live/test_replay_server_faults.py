"""Each injected fault shows to a client exactly as `fault_log` records it, the same for the
same seed: depth gaps, duplicates, swapped diffs, malformed frames, dropped connections and
silences."""

from __future__ import annotations

import asyncio
import gzip
import math
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from dataflows.capture import read_capture
from dataflows.live.replay_faults import MALFORMED_KINDS, FaultPlan
from dataflows.live.replay_server import ReplayServer

ALL_SPOT = "/stream?streams=btcusdt@trade/btcusdt@depth@100ms/btcusdt@bookTicker"
INT64 = 2**63 - 1
REQUIRED = {  # what any Binance payload of the stream must carry, and as which JSON type
    "trade": {"t": int, "p": str, "q": str, "T": int, "m": bool},
    "depth@100ms": {"U": int, "u": int, "b": list, "a": list},
    "bookTicker": {"u": int, "b": str, "B": str, "a": str, "A": str},
}


def stream_frames(paths: list[Path]) -> list[tuple[int, bytes]]:
    """(receive ns, frame) of the captures' stream frames, in order."""
    return [(ts, frame) for path in paths for chunk, _ in read_capture(path)
            for ts, frame in zip(chunk.ts_recv, chunk.frames, strict=True)
            if frame.startswith(b'{"stream"')]


def valid_binance_frame(message: bytes) -> bool:
    """A strict reading of a combined-stream frame: JSON object, known stream, every required
    field present with its type, numbers finite and ids within int64."""
    try:
        frame = orjson.loads(message)
    except orjson.JSONDecodeError:
        return False
    if type(frame) is not dict or type(frame.get("data")) is not dict:
        return False
    stream = frame.get("stream")
    required = REQUIRED.get(stream.partition("@")[2]) if type(stream) is str else None
    if required is None:
        return False
    data = frame["data"]
    for key, kind in required.items():
        value = data.get(key)
        if type(value) is not kind or (kind is int and not 0 <= value <= INT64):
            return False
        texts = [value] if kind is str else [x for level in value for x in level] \
            if kind is list else []
        if kind is list and not all(type(level) is list and len(level) == 2 for level in value):
            return False
        try:
            if not all(type(text) is str and math.isfinite(float(text)) for text in texts):
                return False
        except ValueError:
            return False
    return True


async def receive_all(server: ReplayServer, path: str = ALL_SPOT) -> list[bytes]:
    out: list[bytes] = []

    async def collect(ws: ClientConnection) -> None:
        with pytest.raises(ConnectionClosed):
            while True:
                out.append(await ws.recv(decode=False))

    async with connect(server.ws_url + path, max_size=None) as ws:
        task = asyncio.create_task(collect(ws))
        server.start()
        await asyncio.to_thread(server.wait_finished, 120)
        count = -1
        while count != len(out):
            count = len(out)
            await asyncio.sleep(0.3)
    await task
    return out


def play(paths: list[Path], plan: FaultPlan, **options: Any) -> tuple[list[bytes], ReplayServer]:
    server = ReplayServer(paths, faults=plan, frames_per_s=options.pop("rate", 40_000),
                          **options)
    with server.running():
        received = asyncio.run(receive_all(server))
    return received, server


@pytest.mark.slow
def test_gaps_duplicates_swaps_and_junk_show_exactly_as_logged(
    spot_captures: list[Path],
) -> None:
    plan = FaultPlan(seed=7, malformed_frames=400, depth_gaps=30, duplicate_frames=30,
                     reordered_pairs=30)
    received, server = play(spot_captures[:1], plan)
    timeline = [frame for chunk, _ in read_capture(spot_captures[0]) for frame in chunk.frames]
    position = {frame: index for index, frame in enumerate(timeline)
                if frame.startswith(b'{"stream"')}  # the REST snapshot line is never sent
    log = server.fault_log
    assert Counter(record.kind for record in log) == {
        "malformed": 400, "depth_gap": 30, "duplicate": 30, "reorder": 30}

    junk = [message for message in received if message not in position]
    assert junk == [record.frame for record in log if record.kind == "malformed"]
    assert not any(valid_binance_frame(message) for message in junk)

    order = [position[message] for message in received if message in position]
    gaps = {r.frame_index for r in log if r.kind == "depth_gap"}
    duplicates = {r.frame_index for r in log if r.kind == "duplicate"}
    held = {r.frame_index for r in log if r.kind == "reorder"}
    assert set(position.values()) - set(order) == gaps
    assert {index for index, count in Counter(order).items() if count == 2} == duplicates
    assert all(order[k] == order[k + 1] for k in range(len(order) - 1)
               if order[k] in duplicates and order.index(order[k]) == k)
    assert {order[k + 1] for k in range(len(order) - 1) if order[k] > order[k + 1]} == held
    assert sorted(set(order)) == sorted(set(position.values()) - gaps)
    for record in log:  # the ids and line named in the log are those of the frame concerned
        assert record.source == f"btcusdt_20240808.gz:line {record.frame_index + 1}"
        data = orjson.loads(timeline[record.frame_index])["data"]
        expected = {key: data[key] for key in ("U", "u", "t") if key in data} \
            if record.kind != "malformed" or record.stream != "btcusdt@bookTicker" \
            else {"u": data["u"]}
        assert record.ids == expected, record
        assert record.stream == orjson.loads(timeline[record.frame_index])["stream"]
    assert all(record.stream == "btcusdt@depth@100ms" for record in log
               if record.kind in ("depth_gap", "reorder"))


def test_the_same_seed_gives_the_same_faults_and_bytes(
    spot_captures: list[Path], tmp_path: Path,
) -> None:
    with gzip.open(spot_captures[0], "rb") as handle:
        head = handle.read().splitlines()[:8000]  # the first 70 s of the real capture
    short = tmp_path / "head.txt"
    short.write_bytes(b"\n".join(head) + b"\n")
    plan = FaultPlan(seed=3, malformed_frames=60, depth_gaps=5, duplicate_frames=5,
                     reordered_pairs=5)
    first, server_a = play([short], plan)
    second, server_b = play([short], plan)
    other = ReplayServer([short], faults=FaultPlan(seed=4, malformed_frames=60, depth_gaps=5))
    assert first == second
    assert server_a.fault_log == server_b.fault_log and len(server_a.fault_log) == 75
    assert server_a.schedule.gaps != other.schedule.gaps
    assert server_a.schedule.junk != other.schedule.junk


@pytest.mark.slow
def test_ten_thousand_fuzzed_frames_of_every_kind(spot_captures: list[Path]) -> None:
    received, server = play(spot_captures[:1], FaultPlan(seed=11, malformed_frames=10_000),
                            rate=30_000)
    capture = {frame for _, frame in stream_frames(spot_captures[:1])}
    junk = [message for message in received if message not in capture]
    log = [record for record in server.fault_log if record.kind == "malformed"]
    assert len(junk) == len(log) == 10_000
    assert junk == [record.frame for record in log]
    assert Counter(record.detail for record in log) == {
        kind: 10_000 // len(MALFORMED_KINDS) + (index < 10_000 % len(MALFORMED_KINDS))
        for index, kind in enumerate(MALFORMED_KINDS)}
    assert not any(valid_binance_frame(message) for message in junk)
    assert len(received) - len(junk) == len(capture)  # nothing real was lost


def test_a_dropped_connection_is_aborted_without_a_close_frame(
    spot_captures: list[Path],
) -> None:
    capture = stream_frames(spot_captures[:1])
    first_ts = capture[0][0]
    before = [frame for ts, frame in capture if ts - first_ts < 30e9]

    async def main(server: ReplayServer) -> tuple[list[bytes], ConnectionClosedError, bytes]:
        received: list[bytes] = []
        async with connect(server.ws_url + ALL_SPOT, max_size=None) as ws:
            server.start()
            with pytest.raises(ConnectionClosedError) as dropped:
                while True:
                    received.append(await ws.recv(decode=False))
        async with connect(server.ws_url + ALL_SPOT, max_size=None, close_timeout=0.1) as again:
            first_after = await again.recv(decode=False)
        return received, dropped.value, first_after

    server = ReplayServer(spot_captures[:1], speed=200,
                          faults=FaultPlan(drop_connections_at_s=(30.0,)))
    with server.running():
        received, dropped, first_after = asyncio.run(main(server))
        log = server.fault_log
        deadline = time.monotonic() + 30
        while server.stats.connections_open:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ends = server.stats.connection_ends
    assert dropped.rcvd is None and dropped.sent is None  # no close frame either way
    assert received == before  # everything before the drop, nothing after
    recorded = dict((frame, ts) for ts, frame in capture)
    assert recorded[first_after] - first_ts >= 30e9  # the reconnected client missed the gap
    assert [(r.kind, r.stream_time_s, r.detail) for r in log] == [
        ("connection_drop", 30.0, "1 connections aborted")]
    assert ends[1] == "aborted (no close frame)"


def test_a_silence_sends_nothing_while_the_market_goes_on(spot_captures: list[Path]) -> None:
    capture = stream_frames(spot_captures[:1])
    first_ts = capture[0][0]
    offsets = {frame: (ts - first_ts) / 1e9 for ts, frame in capture}
    in_window = sum(1 for ts, _ in capture if 20e9 <= ts - first_ts < 65e9)

    async def main(server: ReplayServer) -> tuple[list[tuple[float, bytes]], list[int]]:
        received: list[tuple[float, bytes]] = []
        ids: list[int] = []
        depth = f"{server.rest_url}/api/v3/depth?symbol=BTCUSDT&limit=5"
        async with connect(server.ws_url + ALL_SPOT, max_size=None, close_timeout=0.1) as ws, \
                aiohttp.ClientSession() as session:
            server.start()
            while not received or offsets[received[-1][1]] < 70:
                try:
                    message = await asyncio.wait_for(ws.recv(decode=False), 0.25)
                except TimeoutError:  # the silence: the book still moves
                    async with session.get(depth) as answer:
                        ids.append(orjson.loads(await answer.read())["lastUpdateId"])
                    continue
                received.append((time.monotonic(), message))
        return received, ids

    # At 20x the silence lasts 2.25 s of wall time: room for several REST samples under load.
    server = ReplayServer(spot_captures[:1], speed=20, ping_interval_s=0.05,
                          faults=FaultPlan(silences=((20.0, 45.0),)))
    with server.running():
        received, ids = asyncio.run(main(server))
        log = server.fault_log
    times = [offsets[message] for _, message in received]
    assert not any(20 <= t < 65 for t in times)
    assert sum(1 for t in times if t < 20) == sum(1 for ts, _ in capture if ts - first_ts < 20e9)
    assert [(r.kind, r.stream_time_s) for r in log] == [("silence", 20.0)]
    assert log[0].detail == f"45 s of stream time, {in_window} frames not sent"
    gap = max(later[0] - earlier[0] for earlier, later in pairwise(received))
    assert gap > 1.1  # 45 s at 20x is 2.25 s of wall time; nothing may come early
    assert len(ids) >= 2 and ids == sorted(ids) and ids[-1] > ids[0]


def test_fault_plans_are_validated_against_the_captures(spot_captures: list[Path]) -> None:
    with pytest.raises(ValueError, match=r"FaultPlan\.depth_gaps must be an integer >= 0"):
        FaultPlan(depth_gaps=-1)
    with pytest.raises(ValueError, match=r"FaultPlan\.silences"):
        FaultPlan(silences=((10.0, 0.0),))
    with pytest.raises(ValueError, match="malformed_kinds: unknown \\['sql'\\]"):
        FaultPlan(malformed_kinds=("sql",))
    with pytest.raises(ValueError, match="only 3451 depth diffs"):
        ReplayServer(spot_captures[:1], faults=FaultPlan(depth_gaps=4000))
