"""Latency benchmark peers: a loopback Binance-shaped server at a fixed frame rate, and a bare
`websockets` receive loop to compare the pipeline against.

Run as separate processes by `ats bench live` (so neither competes with the pipeline for the
GIL). The server sends the websocket frames of a real capture at `--rate` frames per second to
every connected client, each stamped with its send time in an extra `"_sent"` field inside
`data` (ns; Binance parsers ignore unknown keys), and serves the capture's depth snapshot on
`/api/v3/depth`. The bare client records send-to-receive latency of every frame, the floor any
consumer of the socket pays, and prints one JSON line of percentiles.

    python -m dataflows.live.bench_server serve --capture FILE --rate 1000 --frames 30000
    python -m dataflows.live.bench_server bare --url ws://127.0.0.1:PORT/stream?streams=...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from dataflows.capture import read_capture

_SENT = re.compile(rb'"_sent":(\d+)')


def load_frames(path: Path, limit: int) -> tuple[list[bytes], bytes | None]:
    """The capture's enveloped websocket frames (up to `limit`, cycling) and its snapshot."""
    frames: list[bytes] = []
    snapshot: bytes | None = None
    for chunk, _letters in read_capture(path):
        for frame in chunk.frames:
            if frame.startswith(b'{"lastUpdateId"'):
                snapshot = snapshot or frame
            elif frame.startswith(b'{"stream"'):
                frames.append(frame)
    if not frames:
        raise ValueError(f"{path}: no combined-stream frames to send")
    cycled = (frames * (limit // len(frames) + 1))[:limit]
    return cycled, snapshot


async def _serve(capture: Path, rate: float, count: int, clients_wanted: int) -> None:
    frames, snapshot = load_frames(capture, count)
    clients: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        clients.add(connection)
        try:
            await connection.wait_closed()
        finally:
            clients.discard(connection)

    async def depth(_request: web.Request) -> web.Response:
        return web.Response(body=snapshot or b'{"lastUpdateId":0,"bids":[],"asks":[]}',
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v3/depth", depth)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rest_port = runner.addresses[0][1]
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        ws_port = next(iter(server.sockets)).getsockname()[1]
        print(json.dumps({"ws_url": f"ws://127.0.0.1:{ws_port}",
                          "rest_url": f"http://127.0.0.1:{rest_port}"}), flush=True)
        while len(clients) < clients_wanted:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # let the clients subscribe and fetch their snapshot
        start = time.perf_counter()
        for index, frame in enumerate(frames):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            stamped = frame.replace(b'"data":{', b'"data":{"_sent":%d,' % time.time_ns(), 1)
            text = stamped.decode()
            for connection in list(clients):
                await connection.send(text)
        elapsed = time.perf_counter() - start
        print(json.dumps({"sent": len(frames), "seconds": elapsed,
                          "rate": len(frames) / elapsed}), flush=True)
        await asyncio.sleep(2.0)
    await runner.cleanup()


async def _bare(url: str, count: int, warmup: int) -> None:
    """A plain `websockets` receive loop: stamp each frame on receipt, nothing else."""
    from websockets.asyncio.client import connect

    latencies = np.zeros(count, dtype=np.int64)
    received = 0
    async with connect(url, max_size=2**24, compression=None) as connection:
        while received < count:
            frame = await connection.recv(decode=False)
            now = time.time_ns()
            match = _SENT.search(frame, 0, 200)
            if match:
                latencies[received] = now - int(match.group(1))
                received += 1
    kept = latencies[warmup:received] / 1e6
    p50, p99 = np.percentile(kept, [50, 99])
    print(json.dumps({"count": len(kept), "p50_ms": float(p50), "p99_ms": float(p99),
                      "max_ms": float(kept.max())}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataflows.live.bench_server")
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve")
    server.add_argument("--capture", required=True)
    server.add_argument("--rate", type=float, default=1000.0)
    server.add_argument("--frames", type=int, default=30_000)
    server.add_argument("--clients", type=int, default=2)
    bare = commands.add_parser("bare")
    bare.add_argument("--url", required=True)
    bare.add_argument("--frames", type=int, required=True)
    bare.add_argument("--warmup", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(_serve(Path(args.capture), args.rate, args.frames, args.clients))
    else:
        asyncio.run(_bare(args.url, args.frames, args.warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
