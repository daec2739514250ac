"""The loopback replay exchange streams the real captures like Binance: bytes, order, timing,
subscriptions, keepalive, connection lifetime, and a clean shutdown."""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus

from dataflows.capture import read_capture
from dataflows.live.replay_server import ReplayServer, ReplayStats

ALL_SPOT = "/stream?streams=btcusdt@trade/btcusdt@depth@100ms/btcusdt@bookTicker"


def capture_lines(paths: list[Path]) -> list[tuple[int, bytes]]:
    """(receive ns, frame) of every stream frame of the captures, REST snapshots left out."""
    lines = []
    for path in paths:
        for chunk, letters in read_capture(path):
            assert not letters
            lines.extend((ts, frame) for ts, frame in zip(chunk.ts_recv, chunk.frames, strict=True)
                         if frame.startswith(b'{"stream"'))
    return lines


def data_bytes(frame: bytes) -> bytes:
    """The `data` of an enveloped capture frame, as the capture holds it."""
    return frame[frame.index(b',"data":') + 8 : -1]


async def collect(ws: ClientConnection, out: list[tuple[float, bytes]]) -> None:
    """Append (monotonic receive time, message bytes) until the connection closes."""
    with pytest.raises(ConnectionClosed):
        while True:
            message = await ws.recv(decode=False)
            out.append((time.monotonic(), message))


async def until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def drain(server: ReplayServer, out: list[tuple[float, bytes]]) -> None:
    """Wait for the timeline to end, then until nothing more arrives."""
    await asyncio.to_thread(server.wait_finished, 120)
    count = -1
    while count != len(out):
        count = len(out)
        await asyncio.sleep(0.3)


def settled_stats(server: ReplayServer) -> ReplayStats:
    """The stats once every connection's handler has finished (they end just after the
    client sees the close)."""
    deadline = time.monotonic() + 30
    while (stats := server.stats).connections_open:
        assert time.monotonic() < deadline, stats
        time.sleep(0.02)
    return stats


def run_client(server: ReplayServer, path: str, start: bool = True
               ) -> list[tuple[float, bytes]]:
    """Everything one client receives on `path` from the start to the end of the timeline."""
    async def main() -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        async with connect(server.ws_url + path, max_size=None) as ws:
            task = asyncio.create_task(collect(ws, out))
            if start:
                server.start()
            await drain(server, out)
        await task
        return out
    return asyncio.run(main())


@pytest.mark.slow
def test_speed_50_sends_every_capture_byte_in_order_at_the_recorded_pace(
    spot_captures: list[Path],
) -> None:
    capture = spot_captures[:1]
    expected = capture_lines(capture)
    with ReplayServer(capture, speed=50).running() as server:
        received = run_client(server, ALL_SPOT)
        stats = settled_stats(server)
    assert [message for _, message in received] == [frame for _, frame in expected]
    recorded_s = (expected[-1][0] - expected[0][0]) / 1e9 / 50
    took_s = received[-1][0] - received[0][0]
    assert recorded_s * 0.5 < took_s < recorded_s * 3  # ~6.9 s, loosely
    middle = len(expected) // 2
    recorded_middle = (expected[middle][0] - expected[0][0]) / 1e9 / 50
    assert received[middle][0] - received[0][0] > recorded_middle * 0.5
    assert stats.frames_sent == {1: len(expected)}
    assert stats.frames_played == len(expected)


@pytest.mark.slow
def test_two_captures_play_as_one_timeline_to_raw_and_combined_clients(
    spot_captures: list[Path],
) -> None:
    expected = capture_lines(spot_captures)
    trades = [frame for _, frame in expected if frame.startswith(b'{"stream":"btcusdt@trade"')]

    async def main(server: ReplayServer) -> tuple[list[bytes], list[bytes]]:
        combined: list[tuple[float, bytes]] = []
        raw: list[tuple[float, bytes]] = []
        async with connect(server.ws_url + ALL_SPOT, max_size=None) as ws_all, \
                connect(server.ws_url + "/ws/btcusdt@trade", max_size=None) as ws_raw:
            tasks = [asyncio.create_task(collect(ws_all, combined)),
                     asyncio.create_task(collect(ws_raw, raw))]
            server.start()
            await drain(server, combined)
        await asyncio.gather(*tasks)
        return [m for _, m in combined], [m for _, m in raw]

    with ReplayServer(spot_captures, frames_per_s=40_000).running() as server:
        combined, raw = asyncio.run(main(server))
    assert combined == [frame for _, frame in expected]
    assert raw == [data_bytes(frame) for frame in trades]  # exactly the capture's data bytes


@pytest.mark.slow
def test_usdm_capture_replays_exactly(usdm_captures: list[Path]) -> None:
    expected = capture_lines(usdm_captures)
    path = "/stream?streams=btcusdt@trade/btcusdt@depth@0ms/btcusdt@bookTicker"
    with ReplayServer(usdm_captures, market="usdm", frames_per_s=50_000).running() as server:
        received = run_client(server, path)
    assert [message for _, message in received] == [frame for _, frame in expected]


def test_live_subscribe_unsubscribe_list_and_the_combined_property(
    spot_captures: list[Path],
) -> None:
    async def main(server: ReplayServer) -> None:
        async with connect(server.ws_url + "/ws", max_size=None) as ws:
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "id": 1,
                                        "params": ["btcusdt@trade", "btcusdt@aggTrade"]}))
            assert orjson.loads(await ws.recv()) == {"result": None, "id": 1}
            await ws.send('{"method": "LIST_SUBSCRIPTIONS", "id": 2}')
            assert orjson.loads(await ws.recv()) == {
                "result": ["btcusdt@trade", "btcusdt@aggTrade"], "id": 2}
            await ws.send('{"method": "GET_PROPERTY", "params": ["combined"], "id": 3}')
            assert orjson.loads(await ws.recv()) == {"result": False, "id": 3}
            server.start()
            first = orjson.loads(await ws.recv())
            assert first["e"] == "trade"  # raw payload, no envelope
            await ws.send('{"method": "SET_PROPERTY", "params": ["combined", true], "id": 4}')
            await ws.send('{"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 5}')
            replies, frames = [], []
            while len(replies) < 2:
                message = orjson.loads(await ws.recv())
                (replies if "id" in message else frames).append(message)
            assert replies == [{"result": None, "id": 4}, {"result": None, "id": 5}]
            assert all("stream" in frame or frame["e"] == "trade" for frame in frames)
            await asyncio.sleep(1.0)  # Binance allows 5 incoming messages a second
            for bad, code in (("{nope", 3), ('{"method": "PING", "id": 6}', 2),
                              ('{"method": "SUBSCRIBE", "params": ["BTCUSDT@trade"], "id": 7}', 2),
                              ('{"method": "SUBSCRIBE", "params": ["x@trade"], "id": -1}', 2),
                              ('{"method": "SET_PROPERTY", "params": ["combined", 1], "id": 8}', 1),
                              ('{"method": "GET_PROPERTY", "params": ["colour"], "id": 9}', 0)):
                await asyncio.sleep(0.25)
                await ws.send(bad)
                while "error" not in (reply := orjson.loads(await ws.recv())):
                    pass
                assert reply["error"]["code"] == code, (bad, reply)
            await ws.send('{"method": "LIST_SUBSCRIPTIONS", "id": 10}')
            while (reply := orjson.loads(await ws.recv())).get("id") != 10:
                pass
            assert reply["result"] == ["btcusdt@aggTrade"]

    with ReplayServer(spot_captures[:1], speed=20).running() as server:
        asyncio.run(main(server))


def test_bad_paths_are_refused_with_http_errors(spot_captures: list[Path]) -> None:
    async def status(url: str) -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        return refused.value.response.status_code

    with ReplayServer(spot_captures[:1]).running() as server:
        assert asyncio.run(status(server.ws_url + "/api/stream")) == 404
        assert asyncio.run(status(server.ws_url + "/ws/BTCUSDT@trade")) == 400
        assert asyncio.run(status(server.ws_url + "/stream?streams=btcusdt")) == 400


def test_more_than_five_messages_a_second_closes_the_connection(
    spot_captures: list[Path],
) -> None:
    async def main(server: ReplayServer) -> ConnectionClosed:
        async with connect(server.ws_url + "/ws") as ws:
            for number in range(6):
                await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": number}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
        return closed.value

    with ReplayServer(spot_captures[:1]).running() as server:
        closed = asyncio.run(main(server))
        ends = settled_stats(server).connection_ends
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    assert ends == {1: "server closed 1008 Too many requests"}


@pytest.mark.slow
def test_a_late_client_misses_what_was_sent_before_it_joined(spot_captures: list[Path]) -> None:
    async def main(server: ReplayServer) -> tuple[list[bytes], list[bytes]]:
        early: list[tuple[float, bytes]] = []
        late: list[tuple[float, bytes]] = []
        async with connect(server.ws_url + ALL_SPOT, max_size=None) as first:
            tasks = [asyncio.create_task(collect(first, early))]
            server.start()
            await until(lambda: len(early) >= 5000)
            async with connect(server.ws_url + ALL_SPOT, max_size=None) as second:
                tasks.append(asyncio.create_task(collect(second, late)))
                await drain(server, early)
        await asyncio.gather(*tasks)
        return [m for _, m in early], [m for _, m in late]

    with ReplayServer(spot_captures[:1], frames_per_s=20_000).running() as server:
        early, late = asyncio.run(main(server))
    assert 0 < len(late) < len(early) - 5000
    assert early[-len(late):] == late  # the same market, joined late


def test_wait_for_subscriber_starts_the_timeline_at_the_first_subscription(
    spot_captures: list[Path],
) -> None:
    trades = [data_bytes(frame) for _, frame in capture_lines(spot_captures[:1])
              if frame.startswith(b'{"stream":"btcusdt@trade"')]

    async def main(server: ReplayServer) -> list[bytes]:
        server.start(wait_for_subscriber=True)
        out: list[tuple[float, bytes]] = []
        async with connect(server.ws_url + "/ws", max_size=None) as ws:
            await asyncio.sleep(0.3)
            assert server.stats.frames_played == 0  # connected, nothing subscribed yet
            await ws.send('{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}')
            task = asyncio.create_task(collect(ws, out))
            await drain(server, out)
        await task
        return [message for _, message in out]

    with ReplayServer(spot_captures[:1], frames_per_s=30_000).running() as server:
        received = asyncio.run(main(server))
    assert received[0] == b'{"result":null,"id":1}'
    assert received[1:] == trades


def test_fixed_frame_rate_ignores_the_recorded_timing(spot_captures: list[Path]) -> None:
    expected = [frame for _, frame in capture_lines(spot_captures[:1])][:400]

    async def main(server: ReplayServer) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        async with connect(server.ws_url + ALL_SPOT, close_timeout=0.1) as ws:
            server.start()
            while len(out) < 400:
                out.append((time.monotonic(), await ws.recv(decode=False)))
        return out

    with ReplayServer(spot_captures[:1], frames_per_s=1000).running() as server:
        received = asyncio.run(main(server))
    assert [message for _, message in received] == expected
    took_s = received[-1][0] - received[0][0]
    assert 0.2 < took_s < 4.0  # 399 intervals at 1,000 frames/s, loosely


def test_pings_close_a_silent_client_but_not_a_websockets_client(
    spot_captures: list[Path],
) -> None:
    def mute_client(port: int, path: str) -> tuple[list[int], bytes]:
        """A handshake, then read frames without ever answering: (opcodes seen, close body)."""
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            reader = sock.makefile("rb")
            while reader.readline() not in (b"\r\n", b""):
                pass
            opcodes: list[int] = []
            while head := reader.read(2):
                length = head[1] & 0x7F
                if length == 126:
                    length = int.from_bytes(reader.read(2), "big")
                elif length == 127:
                    length = int.from_bytes(reader.read(8), "big")
                body = reader.read(length)
                opcodes.append(head[0] & 0x0F)
                if opcodes[-1] == 0x8:
                    return opcodes, body
            return opcodes, b""

    async def answering_client(server: ReplayServer) -> bool:
        async with connect(server.ws_url + "/ws/btcusdt@trade") as ws:
            await asyncio.sleep(1.5)
            return ws.state.name == "OPEN"

    server = ReplayServer(spot_captures[:1], ping_interval_s=0.1, pong_timeout_s=0.4,
                          close_timeout_s=0.5)
    with server.running():
        result: dict[str, tuple[list[int], bytes]] = {}
        thread = threading.Thread(target=lambda: result.update(
            mute=mute_client(server.port, "/ws/btcusdt@trade")))
        thread.start()
        still_open = asyncio.run(answering_client(server))
        thread.join()
        stats = settled_stats(server)
    opcodes, close_body = result["mute"]
    assert opcodes.count(0x9) >= 2 and opcodes[-1] == 0x8  # pings, then a close frame
    assert int.from_bytes(close_body[:2], "big") == 1008 and close_body[2:] == b"Pong timeout"
    assert still_open
    assert stats.pings_sent >= 4 and stats.pongs_received >= 2
    assert sorted(stats.connection_ends.values()) == [
        "client closed 1000", "server closed 1008 Pong timeout"]


def test_max_connection_s_closes_the_socket(spot_captures: list[Path]) -> None:
    async def main(server: ReplayServer) -> ConnectionClosedOK:
        async with connect(server.ws_url + "/ws/btcusdt@trade") as ws:
            with pytest.raises(ConnectionClosedOK) as closed:
                await asyncio.wait_for(ws.recv(), timeout=30)
        return closed.value

    with ReplayServer(spot_captures[:1], max_connection_s=0.3).running() as server:
        closed = asyncio.run(main(server))
    assert closed.rcvd is not None and closed.rcvd.code == 1000
    assert closed.rcvd.reason == "Connection lifetime reached"


def test_loop_playback_starts_the_market_again(spot_captures: list[Path], tmp_path: Path) -> None:
    with gzip.open(spot_captures[0], "rb") as handle:
        head = handle.read().splitlines()[:3000]  # the first 40 s of the real capture
    short = tmp_path / "head.txt"
    short.write_bytes(b"\n".join(head) + b"\n")
    first_trade = next(data_bytes(frame) for _, frame in capture_lines([short])
                       if frame.startswith(b'{"stream":"btcusdt@trade"'))

    async def main(server: ReplayServer) -> int:
        seen = 0
        async with connect(server.ws_url + "/ws/btcusdt@trade", max_size=None,
                           close_timeout=0.1) as ws:
            server.start()
            while seen < 3:
                seen += await ws.recv(decode=False) == first_trade
        return seen

    with ReplayServer([short], frames_per_s=20_000, loop_playback=True).running() as server:
        assert asyncio.run(main(server)) == 3
        assert not server.finished.is_set()
        restarts = [r.detail for r in server.fault_log if r.kind == "playback_restart"]
    assert restarts[:2] == ["pass 1", "pass 2"]


def test_a_client_that_stops_reading_is_cut_off(spot_captures: list[Path]) -> None:
    async def main(server: ReplayServer) -> None:
        async with connect(server.ws_url + ALL_SPOT, max_queue=4) as ws:
            server.start()
            await until(lambda: server.stats.connections_open == 0)
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()

    with ReplayServer(spot_captures[:1], frames_per_s=50_000,
                      max_send_buffer_bytes=256 * 1024).running() as server:
        asyncio.run(main(server))
        ends = settled_stats(server).connection_ends
    assert ends[1].startswith("aborted: slow consumer (")


def test_shutdown_closes_every_socket_and_thread(spot_captures: list[Path]) -> None:
    threads_before = threading.active_count()
    descriptors_before = psutil.Process().num_fds()

    async def main(server: ReplayServer, stop: Callable[[], None]) -> ConnectionClosed:
        async with connect(server.ws_url + "/ws/btcusdt@trade") as ws:
            server.start()
            await ws.recv()
            await asyncio.to_thread(stop)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
        return closed.value

    server = ReplayServer(spot_captures[:1], speed=10)
    serving = server.running()
    serving.__enter__()
    ports = (server.port, server.rest_port)
    closed = asyncio.run(main(server, lambda: serving.__exit__(None, None, None)))
    assert closed.rcvd is not None and closed.rcvd.code == 1001  # going away
    assert threading.active_count() == threads_before
    assert psutil.Process().num_fds() <= descriptors_before
    with pytest.raises(RuntimeError, match="runs once"):
        with server.running():
            pass
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_capture_problems_are_named_and_the_wrong_market_fails_fast(
    spot_captures: list[Path], usdm_captures: list[Path], tmp_path: Path,
) -> None:
    with gzip.open(spot_captures[0], "rb") as handle:
        lines = handle.read().splitlines()[:200]
    lines[5] = b"1723161254000000000 {not json"
    lines[9] = b"no-timestamp here"
    broken = tmp_path / "broken.txt"
    broken.write_bytes(b"\n".join(lines) + b"\n")
    server = ReplayServer([broken])
    assert any(p.startswith("broken.txt:line 6: not JSON") for p in server.problems)
    assert any(p.startswith("broken.txt:line 10:") for p in server.problems)
    assert server.loaded.socket_frames == 197  # 200 lines - 2 bad - 1 REST snapshot
    with pytest.raises(ValueError, match="market='usdm'"):
        ReplayServer(usdm_captures)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.gz"):
        ReplayServer([tmp_path / "nowhere.gz"])
    with pytest.raises(ValueError, match="speed must be a number > 0"):
        ReplayServer(spot_captures, speed=0)
