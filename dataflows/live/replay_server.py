"""A loopback Binance exchange that replays real captures, with fault injection.

`ReplayServer` serves raw captures (`dataflows.live.replay_frames`) the way Binance serves its
market: a websocket server (`dataflows.live.replay_ws`: raw `/ws/` and combined `/stream`
connections, live SUBSCRIBE) and REST market data (`dataflows.live.replay_rest`) on a second port,
answering from the server's own book and trades (`dataflows.live.replay_market`). It exists so
the live feed can be tested end to end without a real exchange: `ats live --paper` pointed at it
sees the capture that `ats replay` reads.

The market has one timeline for the whole server (`dataflows.live.replay_timeline`), started by
`start()`: a frame is due (ts_recv - first ts_recv) / speed seconds after the start, or, with
`frames_per_s`, at that fixed rate whatever the recorded timing (for latency benchmarks). Frames
go only to the connections subscribed to their stream at that moment; like a real market, a
client that connects late or is disconnected misses what was sent meanwhile. `finished` is set
when the timeline is exhausted (with `loop_playback` it starts again at once, from the first
snapshot, and never finishes; each pass replays the same bytes and is noted in the fault log as
"playback_restart").

Keepalive as on Binance: the server pings every `ping_interval_s` (spot 20 s, futures 180 s) and
closes (1008) a connection whose oldest unanswered ping is older than `pong_timeout_s` (spot 60 s,
futures 600 s); it closes (1000) every connection `max_connection_s` after it opened (Binance's
24-hour cut) and (1008) one that sends more than `max_incoming_per_s` method messages in a second
(spot 5, futures 10; control frames are not counted). Frames are written without waiting for
a slow reader; a client that leaves more than `max_send_buffer_bytes` unread is cut off
(aborted), as Binance disconnects slow consumers. Faults (`FaultPlan`,
`dataflows.live.replay_faults`) are logged in `fault_log` as they are injected.

From sync code: `with ReplayServer(paths).running() as server: server.start()`; the event loop
runs in a background thread that the block joins, closing every socket. `server_time_ms`,
`/api/v3/time` and `serverTime` follow the capture's exchange clock, not this machine's.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from dataflows.live.replay_faults import FaultPlan, FaultRecord, FaultSchedule
from dataflows.live.replay_frames import DEPTH, LoadedCaptures, load_captures
from dataflows.live.replay_rest import DEFAULT_WEIGHT_LIMIT, ReplayRest, symbol_filters
from dataflows.live.replay_timeline import Timeline
from dataflows.live.replay_ws import (
    PathError,
    Session,
    Subscription,
    handle_method,
    how_closed,
    keepalive,
    parse_path,
)

Market = Literal["spot", "usdm"]
# market: (ping interval s, pong timeout s, incoming messages per second)
MARKET_DEFAULTS: dict[str, tuple[float, float, int]] = {
    "spot": (20.0, 60.0, 5), "usdm": (180.0, 600.0, 10),
}


@dataclass(frozen=True)
class ReplayStats:
    """A snapshot of what the server has done (per-connection figures keyed by connection id,
    numbered from 1 in connection order)."""

    connections_total: int
    connections_open: int
    frames_played: int
    frames_sent: dict[int, int]
    connection_paths: dict[int, str]
    connection_ends: dict[int, str]
    pings_sent: int
    pongs_received: int
    requests: dict[str, int]
    rate_limited: int
    playback_passes: int


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"ReplayServer: {name} must be a number > 0, got {value!r}")


class ReplayServer:
    """Binance on loopback, replaying captures (see the module docstring).

    `captures` are raw capture files in market order; `market` "spot" or "usdm" (checked against
    the captures' depth diffs); `speed` multiplies the recorded pace unless `frames_per_s` fixes
    the rate; `port` (websocket) and `rest_port` 0 pick free ports; `faults` is the seeded
    `FaultPlan`. `ping_interval_s`, `pong_timeout_s` and `max_incoming_per_s` default to the
    market's Binance values; `weight_limit_1m` to 6,000 (spot) or 2,400 (futures).
    """

    def __init__(
        self,
        captures: Sequence[Path],
        *,
        market: Market = "spot",
        speed: float = 1.0,
        frames_per_s: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rest_port: int = 0,
        faults: FaultPlan | None = None,
        ping_interval_s: float | None = None,
        pong_timeout_s: float | None = None,
        max_connection_s: float = 86400.0,
        loop_playback: bool = False,
        max_incoming_per_s: int | None = None,
        weight_limit_1m: int | None = None,
        close_timeout_s: float = 2.0,
        max_send_buffer_bytes: int = 32 * 2**20,
    ) -> None:
        if market not in MARKET_DEFAULTS:
            raise ValueError(f"ReplayServer: market must be 'spot' or 'usdm', got {market!r}")
        for name, value in (("speed", speed), ("frames_per_s", frames_per_s),
                            ("ping_interval_s", ping_interval_s),
                            ("pong_timeout_s", pong_timeout_s),
                            ("max_connection_s", max_connection_s),
                            ("close_timeout_s", close_timeout_s)):
            _positive(name, value)
        ping, pong, incoming = MARKET_DEFAULTS[market]
        self.market: Market = market
        self.host, self.port, self.rest_port = host, port, rest_port
        self.ping_interval_s = ping_interval_s or ping
        self.pong_timeout_s = pong_timeout_s or pong
        self.max_connection_s = max_connection_s
        self.max_incoming_per_s = max_incoming_per_s or incoming
        self.close_timeout_s = close_timeout_s
        self.max_send_buffer_bytes = max_send_buffer_bytes
        self.faults = faults or FaultPlan()
        self.loaded: LoadedCaptures = load_captures([Path(path) for path in captures])
        self._check_market()
        self.timeline = Timeline(self.loaded, market == "usdm", self.faults, speed, frames_per_s,
                                 loop_playback, self._send, self._drop_all)
        self._filters: dict[str, tuple[str, str]] | None = None
        self._rest = ReplayRest(
            market, lambda: self.timeline.market, self.server_time_ms, self._symbol_filters,
            self.loaded.symbols, weight_limit_1m or DEFAULT_WEIGHT_LIMIT[market],
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._ws_server: Server | None = None
        self._runner: web.AppRunner | None = None
        self._timeline_task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._start_requested = False
        self._waiting_for_subscriber = False
        self._sessions: dict[int, Session] = {}
        self._subscribers: dict[str, dict[int, Session]] = {}
        self._next_session = 0
        self._ended: dict[int, tuple[str, int, str]] = {}  # id -> (path, frames sent, end)
        self._pings = self._pongs = 0

    # ------------------------------------------------------------------ public surface

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    @property
    def streams(self) -> dict[str, int]:
        """Stream names the captures carry, with their frame counts."""
        return dict(sorted(self.loaded.stream_counts.items()))

    @property
    def schedule(self) -> FaultSchedule:
        """Where the fault plan's faults fall (frame positions), fixed by the plan's seed."""
        return self.timeline.schedule

    @property
    def fault_log(self) -> list[FaultRecord]:
        return list(self.timeline.fault_log)

    @property
    def finished(self) -> threading.Event:
        """Set when the timeline is exhausted (never with `loop_playback`)."""
        return self.timeline.finished

    @property
    def problems(self) -> list[str]:
        """Capture lines not replayed, or not applicable to the server's book, by file and line."""
        return self.loaded.problems + list(self.timeline.market.problems)

    def start(self, wait_for_subscriber: bool = False) -> None:
        """Start the market timeline (thread-safe); with `wait_for_subscriber`, at the moment the
        first connection has a stream subscribed."""
        if self._loop is None:
            raise RuntimeError("ReplayServer.start(): the server is not open; use running()")
        if self._start_requested:
            raise RuntimeError("ReplayServer.start(): the timeline was already started")
        self._start_requested = True
        self._loop.call_soon_threadsafe(self._begin, wait_for_subscriber)

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Wait until the timeline is exhausted; False on timeout. Raises if the timeline
        failed."""
        done = self.timeline.finished.wait(timeout)
        if self.timeline.error is not None:
            raise RuntimeError("the replay timeline failed") from self.timeline.error
        return done

    @property
    def stats(self) -> ReplayStats:
        loop = self._loop
        if loop is not None and loop.is_running() and threading.get_ident() != self._loop_thread:
            return asyncio.run_coroutine_threadsafe(self._stats_async(), loop).result(30)
        return self._collect_stats()

    def server_time_ms(self) -> int:
        """The market clock: the capture's time at the timeline's position, in exchange ms."""
        now = self._loop.time() if self._loop is not None else 0.0
        offset_ns = self.timeline.stream_offset_ns(now, self._timeline_task is not None)
        first = self.loaded.frames[0].ts_recv
        return (first + offset_ns) // 1_000_000 + self.timeline.market.exchange_offset_ms

    @contextmanager
    def running(self) -> Iterator[ReplayServer]:
        """Serve from a background thread for the duration of the block (timeline not started:
        call `start()`). A server runs once."""
        if self._loop is not None:
            raise RuntimeError("ReplayServer.running(): a server runs once; create a new one")
        ready = threading.Event()
        errors: list[BaseException] = []
        thread = threading.Thread(target=lambda: asyncio.run(self._serve(ready, errors)),
                                  name="replay-server", daemon=True)
        thread.start()
        ready.wait()
        if errors:
            thread.join()
            raise errors[0]
        try:
            yield self
        finally:
            loop, stop = self._loop, self._stop
            if loop is not None and stop is not None:
                with suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(stop.set)
            thread.join()

    async def open(self) -> None:
        """Bind both ports and serve in the running event loop (for async callers; see
        `aclose`)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._ws_server = await serve(
            self._handler, self.host, self.port, process_request=self._process_request,
            ping_interval=None, ping_timeout=None, close_timeout=self.close_timeout_s,
            compression=None,
        )
        self.port = self._ws_server.sockets[0].getsockname()[1]
        self._runner = web.AppRunner(self._rest.application(), access_log=None,
                                     handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.rest_port).start()
        except OSError:
            await self._runner.cleanup()
            self._ws_server.close()
            await self._ws_server.wait_closed()
            raise
        self.rest_port = self._runner.addresses[0][1]

    async def aclose(self) -> None:
        """Stop the timeline, close every connection (1001) and both listening sockets."""
        if self._timeline_task is not None:
            self._timeline_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._timeline_task
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ serving

    async def _serve(self, ready: threading.Event, errors: list[BaseException]) -> None:
        self._stop = asyncio.Event()
        try:
            await self.open()
        except BaseException as error:
            errors.append(error)
            return
        finally:
            ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.aclose()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            parse_path(request.path)
        except PathError as error:
            return connection.respond(error.status, f"{error}\n")
        return None

    async def _handler(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # the handshake is done
        path = connection.request.path
        combined, streams = parse_path(path)
        self._next_session += 1
        session = Session(self._next_session, connection, path,
                          Subscription(combined, dict.fromkeys(streams)))
        self._sessions[session.id] = session
        self._subscribe(session, list(session.subscription.streams))
        tasks = [
            asyncio.create_task(keepalive(
                connection, self.ping_interval_s, self.pong_timeout_s,
                lambda: self.timeline.silent > 0, self._count_ping, self._count_pong)),
            asyncio.create_task(self._lifetime(connection)),
        ]
        try:
            async for message in connection:
                await self._on_message(session, message)
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._unsubscribe(session, list(session.subscription.streams))
            del self._sessions[session.id]
            end = session.end_note or how_closed(connection)
            self._ended[session.id] = (path, session.frames_sent, end)

    async def _on_message(self, session: Session, message: str | bytes) -> None:
        if session.too_many_messages(time.monotonic(), self.max_incoming_per_s):
            await session.connection.close(1008, "Too many requests")
            return
        result = handle_method(session.subscription, message)
        self._subscribe(session, result.added)
        self._unsubscribe(session, result.removed)
        with suppress(ConnectionClosed):
            await session.connection.send(result.reply, text=True)

    def _subscribe(self, session: Session, streams: list[str]) -> None:
        for stream in streams:
            self._subscribers.setdefault(stream, {})[session.id] = session
        if streams and self._waiting_for_subscriber:
            self._waiting_for_subscriber = False
            self._launch()

    def _unsubscribe(self, session: Session, streams: list[str]) -> None:
        for stream in streams:
            self._subscribers.get(stream, {}).pop(session.id, None)

    def _count_ping(self) -> None:
        self._pings += 1

    def _count_pong(self) -> None:
        self._pongs += 1

    async def _lifetime(self, connection: ServerConnection) -> None:
        await asyncio.sleep(self.max_connection_s)
        await connection.close(1000, "Connection lifetime reached")

    def _begin(self, wait_for_subscriber: bool) -> None:
        subscribed = any(session.subscription.streams for session in self._sessions.values())
        if wait_for_subscriber and not subscribed:
            self._waiting_for_subscriber = True
        else:
            self._launch()

    def _launch(self) -> None:
        assert self._loop is not None  # called in the loop
        self._timeline_task = self._loop.create_task(self.timeline.run())

    def _send(self, stream: str, combined: bytes, raw: bytes, binary: bool) -> None:
        """Write a frame to every open subscriber of `stream`, without waiting; a client that
        lets more than `max_send_buffer_bytes` pile up unread is cut off (a slow consumer)."""
        for session in self._subscribers.get(stream, {}).values():
            connection = session.connection
            if connection.state is not State.OPEN:
                continue
            backlog = connection.transport.get_write_buffer_size()
            if backlog > self.max_send_buffer_bytes:
                session.end_note = f"aborted: slow consumer ({backlog:,} bytes unread)"
                connection.transport.abort()
                continue
            broadcast([connection], combined if session.subscription.combined else raw,
                      text=not binary)
            session.frames_sent += 1

    def _drop_all(self) -> int:
        """Abort every client connection (no close frame); how many there were."""
        sessions = list(self._sessions.values())
        for session in sessions:
            session.connection.transport.abort()
        return len(sessions)

    # ------------------------------------------------------------------ helpers

    def _check_market(self) -> None:
        """Fail fast when the captures are of the other market (futures diffs carry `pu`)."""
        for frame in self.loaded.frames:
            if frame.kind == DEPTH:
                futures = b'"pu":' in frame.raw
                if futures != (self.market == "usdm"):
                    actual = "USD-M futures" if futures else "spot"
                    raise ValueError(
                        f"ReplayServer: {frame.source} is a {actual} depth diff but market="
                        f"{self.market!r}; pass market={'usdm' if futures else 'spot'!r}"
                    )
                return

    def _symbol_filters(self) -> dict[str, tuple[str, str]]:
        if self._filters is None:
            self._filters = symbol_filters(self.loaded.frames)
        return self._filters

    async def _stats_async(self) -> ReplayStats:
        return self._collect_stats()

    def _collect_stats(self) -> ReplayStats:
        sent = {key: value[1] for key, value in self._ended.items()}
        paths = {key: value[0] for key, value in self._ended.items()}
        for session in self._sessions.values():
            sent[session.id], paths[session.id] = session.frames_sent, session.path
        return ReplayStats(
            connections_total=self._next_session, connections_open=len(self._sessions),
            frames_played=self.timeline.frames_played, frames_sent=dict(sorted(sent.items())),
            connection_paths=dict(sorted(paths.items())),
            connection_ends={key: value[2] for key, value in sorted(self._ended.items())},
            pings_sent=self._pings, pongs_received=self._pongs,
            requests=dict(self._rest.requests), rate_limited=self._rest.rate_limited,
            playback_passes=self.timeline.passes,
        )
