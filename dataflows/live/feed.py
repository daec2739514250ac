"""Binance live market data over websockets, kept whole through network trouble.

What the feed guarantees, and how each guarantee shows in the stream it writes to its
`FrameBuffer` (every decision-relevant fact is a frame, so a recording replays like the live run):
- combined streams for all symbols on one connection (`/stream?streams=a@trade/b@depth@100ms`);
- pings answered (the `websockets` library pongs every server ping with its payload, as Binance
  requires) and a client keepalive ping that detects a dead TCP connection;
- reconnect with jittered exponential backoff; "connected"/"disconnected" feed events;
- proactive rollover: before the venue's 24-hour cut a second connection is opened, and once it
  delivers, the first is closed; frames the new one repeats are skipped by id and the count is
  reported in a "rollover" feed event;
- a depth snapshot per symbol as soon as each (re)connection is open, and again whenever the book
  asks (`request_snapshot`, thread-safe). The venue's procedure asks for the snapshot after the
  first diff; the book buffers diffs whatever the order and asks again when a snapshot turns out
  older than the diffs it must bridge to, so asking at once only saves time;
- a stale-data alarm: no frame for a symbol for `stale_after_s` gives a "stale" event (the risk
  engine blocks new entries for the symbol) and the next frame of the symbol a "fresh" one;
- REST polling fallback once the socket has been down `rest_fallback_after_s` (at most 5 s):
  new trades, book ticker (and premium index on futures) every `rest_poll_interval_s`;
- gap-fill of missed trades by trade id (historical trades) before the trade that revealed the
  gap is passed on, or a "gap_unfilled" event naming the ids when the venue will not give them.

Each frame is decoded once here to route it (symbol, kind, ids); parsing into columns happens in
the dataflow. The feed runs its own asyncio loop in a thread: `start()`, `stop()`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from dataflows.live.binance_rest import BinanceRest, RestError, RestFrame
from dataflows.live.frames import FrameBuffer
from dataflows.live.trade_gaps import TradeGapFiller
from engine.config import LiveConfig

log = logging.getLogger(__name__)
MAX_STREAMS_PER_CONNECTION = 1024  # Binance's limit
CONNECT_ERRORS = (OSError, InvalidHandshake, InvalidURI, asyncio.TimeoutError)


@dataclass
class _SymbolFeed:
    """What the feed tracks per symbol: freshness and the ids seen, for gaps and rollover."""

    last_seen: float
    stale: bool = False
    last_trade_id: int | None = None
    last_depth_id: int | None = None
    last_quote_id: int | None = None


def _route(frame: bytes) -> tuple[str | None, str, Any]:
    """(symbol, kind, data) of a websocket frame; kind is trade/depth/quote/other."""
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None, "malformed", None
    if type(message) is not dict:
        return None, "other", None
    data = message.get("data", message)
    stream = message.get("stream")
    if type(stream) is not str or type(data) is not dict:
        return None, "other", None
    symbol, _, name = stream.partition("@")
    if name == "trade":
        kind = "trade"
    elif name.startswith("depth") and "U" in data:
        kind = "depth"
    elif name == "bookTicker":
        kind = "quote"
    else:
        kind = "other"
    return symbol.upper(), kind, data


def _seen(state: _SymbolFeed, kind: str, update_id: int) -> bool:
    """Already passed on by the previous connection (used while handing over a rollover)."""
    last = {"trade": state.last_trade_id, "depth": state.last_depth_id,
            "quote": state.last_quote_id}.get(kind)
    return last is not None and update_id <= last


class BinanceFeed:
    """Live frames of `symbols` from one Binance venue into `buffer`."""

    def __init__(
        self, config: LiveConfig, symbols: Sequence[str], buffer: FrameBuffer | None = None
    ) -> None:
        if not symbols:
            raise ValueError("the live feed needs at least one symbol")
        self.config = config
        self.symbols = tuple(dict.fromkeys(symbol.upper() for symbol in symbols))
        streams = [f"{s.lower()}@{name}" for s in self.symbols for name in config.stream_names]
        if len(streams) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(
                f"{len(streams)} streams exceed Binance's {MAX_STREAMS_PER_CONNECTION} per "
                "connection; run fewer symbols or streams per feed"
            )
        self.url = f"{config.websocket_base}/stream?streams={'/'.join(streams)}"
        self.buffer = buffer or FrameBuffer()
        now = time.monotonic()
        self._state = {symbol: _SymbolFeed(last_seen=now) for symbol in self.symbols}
        self.stats: dict[str, int] = dict.fromkeys(
            ("connections", "disconnects", "frames", "rollovers", "rollover_skipped",
             "snapshots", "snapshot_failures", "rest_polls", "gap_fills", "gaps_unfilled"), 0)
        self._connected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._main: asyncio.Task[None] | None = None
        self._snapshot_queue: asyncio.Queue[str] | None = None
        self._random = random.Random()
        self.rest: BinanceRest | None = None
        self.gaps: TradeGapFiller | None = None

    # ------------------------------------------------------------------ thread API

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("feed already started")
        started = threading.Event()

        def run() -> None:
            with asyncio.Runner() as runner:  # closing it cancels and awaits leftover tasks
                loop = runner.get_loop()
                self._loop = loop
                main = self._main = loop.create_task(self._run())
                started.set()

                async def until_stopped() -> None:
                    await main

                try:
                    runner.run(until_stopped())
                except asyncio.CancelledError:
                    pass

        self._thread = threading.Thread(target=run, name="ats-live-feed", daemon=True)
        self._thread.start()
        started.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close the connection and stop; frames already buffered stay for the consumer."""
        if self._loop is None or self._thread is None:
            return
        main = self._main
        if main is not None:
            self._loop.call_soon_threadsafe(main.cancel)
        self._thread.join(timeout_s)

    def request_snapshot(self, symbol: str) -> None:
        """Ask for a fresh depth snapshot (the book lost sync); safe from any thread."""
        if self._loop is not None and self._snapshot_queue is not None:
            self._loop.call_soon_threadsafe(self._snapshot_queue.put_nowait, symbol.upper())

    # ------------------------------------------------------------------ main tasks

    async def _run(self) -> None:
        self._snapshot_queue = asyncio.Queue()
        async with BinanceRest(self.config) as rest:
            self.rest = rest
            self.gaps = TradeGapFiller(rest, self.buffer, self.stats)
            tasks = [asyncio.create_task(coroutine) for coroutine in (
                self._connections(), self._watchdog(), self._snapshots(), self._fallback())]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _connect(self) -> ClientConnection:
        return await connect(
            self.url,
            ping_interval=self.config.ping_interval_s,
            ping_timeout=self.config.ping_timeout_s,
            open_timeout=self.config.request_timeout_s,
            close_timeout=2,
            max_size=2**24,
            max_queue=None,
        )

    async def _connections(self) -> None:
        failures = 0
        connection: ClientConnection | None = None
        while True:
            if connection is None:
                try:
                    connection = await self._connect()
                except CONNECT_ERRORS as error:
                    failures += 1
                    delay = self._backoff(failures)
                    self._event_all("disconnected", f"connect failed ({type(error).__name__}: "
                                    f"{error}); retry {failures} in {delay:.2f} s")
                    await asyncio.sleep(delay)
                    continue
                self._on_open("connected", f"connection {self.stats['connections'] + 1}")
            failures = 0
            connection = await self._serve(connection)

    async def _serve(self, connection: ClientConnection) -> ClientConnection | None:
        """Read `connection` until it closes (None) or is rolled over (the new connection)."""
        reader = asyncio.create_task(self._read(connection, hold=None))
        rollover = asyncio.create_task(asyncio.sleep(self.config.rollover_after_s))
        successor: ClientConnection | None = None
        try:
            done, _ = await asyncio.wait({reader, rollover}, return_when=asyncio.FIRST_COMPLETED)
            if reader not in done:
                successor = await self._roll_over(connection, reader)
        finally:  # also when the feed is stopped: no task or socket outlives it
            for task in (reader, rollover):
                task.cancel()
            await asyncio.gather(reader, rollover, return_exceptions=True)
            if successor is None:
                await connection.close()
        if successor is None:
            self._on_lost(reader)
        return successor

    async def _read(self, connection: ClientConnection, hold: list[tuple[int, bytes]] | None
                    ) -> None:
        """Pass each frame on (or keep it in `hold` while a rollover is being handed over)."""
        while True:
            frame = await connection.recv(decode=False)
            ts_recv = time.time_ns()
            if hold is not None:
                hold.append((ts_recv, frame))
            else:
                await self._on_frame(ts_recv, frame, skip_seen=False)

    def _on_lost(self, reader: asyncio.Task[None]) -> None:
        error = reader.exception() if reader.done() and not reader.cancelled() else None
        reason = f"{type(error).__name__}: {error}" if error else "closed"
        self.stats["disconnects"] += 1
        self._connected.clear()
        self._event_all("disconnected", reason[:300])

    async def _roll_over(self, old: ClientConnection, old_reader: asyncio.Task[None]
                         ) -> ClientConnection | None:
        """Open the successor, let it deliver, then retire `old`; None if `old` died first."""
        try:
            new = await self._connect()
        except CONNECT_ERRORS as error:
            log.warning("rollover connection failed: %s", error)
            await old_reader  # keep reading the old one until the venue cuts it
            return None
        held: list[tuple[int, bytes]] = []
        new_reader = asyncio.create_task(self._read(new, hold=held))
        deadline = time.monotonic() + self.config.request_timeout_s
        while not held and time.monotonic() < deadline and not old_reader.done():
            await asyncio.sleep(0.01)
        old_reader.cancel()
        await asyncio.gather(old_reader, return_exceptions=True)
        await old.close()
        new_reader.cancel()
        await asyncio.gather(new_reader, return_exceptions=True)
        skipped = 0
        for ts_recv, frame in held:
            skipped += not await self._on_frame(ts_recv, frame, skip_seen=True)
        self.stats["rollovers"] += 1
        self.stats["rollover_skipped"] += skipped
        self._on_open("rollover", f"new connection after {self.config.rollover_after_s:.0f} s; "
                      f"{skipped} frames both connections delivered were passed on once")
        return new

    def _on_open(self, kind: str, detail: str) -> None:
        self.stats["connections"] += 1
        self._connected.set()
        self._event_all(kind, detail)
        if kind == "connected":  # a new stream: the book needs a snapshot to bridge from
            for symbol in self.symbols:
                self.request_snapshot_now(symbol)

    # ------------------------------------------------------------------ per frame

    async def _on_frame(self, ts_recv: int, frame: bytes, skip_seen: bool) -> bool:
        """Route and pass on one websocket frame; False if skipped as already passed on."""
        symbol, kind, data = _route(frame)
        state = self._state.get(symbol) if symbol else None
        if state is not None and symbol is not None:
            update_id = data.get("t" if kind == "trade" else "u") if data else None
            if type(update_id) is int:
                if skip_seen and _seen(state, kind, update_id):
                    return False
                if kind == "trade":
                    await self._check_trade_gap(symbol, state, update_id, ts_recv)
                elif kind == "depth":
                    state.last_depth_id = update_id
                elif kind == "quote":
                    state.last_quote_id = update_id
            self._mark_seen(symbol, state)
        self.buffer.put(ts_recv, frame)  # unknown or malformed frames too: the parser judges
        self.stats["frames"] += 1
        return True

    async def _check_trade_gap(self, symbol: str, state: _SymbolFeed, trade_id: int,
                               ts_recv: int) -> None:
        last = state.last_trade_id
        if last is not None and trade_id > last + 1 and self.config.gap_fill:
            assert self.gaps is not None
            await self.gaps.fill(symbol, last, trade_id, ts_recv)
        state.last_trade_id = trade_id if last is None else max(last, trade_id)

    def _mark_seen(self, symbol: str, state: _SymbolFeed) -> None:
        state.last_seen = time.monotonic()
        if state.stale:
            state.stale = False
            self.buffer.put_event("fresh", symbol, "data flows again")

    def request_snapshot_now(self, symbol: str) -> None:
        if self._snapshot_queue is not None:
            self._snapshot_queue.put_nowait(symbol)

    # ------------------------------------------------------------------ helpers and tasks

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.config.reconnect_max_s,
                      self.config.reconnect_initial_s * 2 ** min(failures - 1, 30))
        return self._random.uniform(ceiling / 2, ceiling)

    def _event_all(self, kind: str, detail: str) -> None:
        for symbol in self.symbols:
            self.buffer.put_event(kind, symbol, detail)

    async def _snapshots(self) -> None:
        assert self._snapshot_queue is not None and self.rest is not None
        queue = self._snapshot_queue
        while True:
            symbol = await queue.get()
            while not queue.empty():  # several requests for one symbol: one snapshot
                other = queue.get_nowait()
                if other != symbol:
                    queue.put_nowait(other)
                    break
            if symbol not in self._state:
                continue
            answer = await self.rest.depth(symbol)
            if isinstance(answer, RestError):
                self.stats["snapshot_failures"] += 1
                self.buffer.put_event("snapshot_failed", symbol, answer.reason)
                await asyncio.sleep(self._backoff(min(self.stats["snapshot_failures"], 5)))
                queue.put_nowait(symbol)
                continue
            self.stats["snapshots"] += 1
            self.buffer.put(answer.ts_recv, answer.frame)

    async def _watchdog(self) -> None:
        period = min(1.0, self.config.stale_after_s / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for symbol, state in self._state.items():
                silent = now - state.last_seen
                if not state.stale and silent > self.config.stale_after_s:
                    state.stale = True
                    self.buffer.put_event("stale", symbol, f"no data for {silent:.1f} s "
                                          f"(alarm at {self.config.stale_after_s:g} s)")

    async def _fallback(self) -> None:
        """Poll REST while the socket is down for longer than the fallback delay."""
        while True:
            await self._wait_disconnected()
            try:
                await asyncio.wait_for(self._connected.wait(), self.config.rest_fallback_after_s)
                continue
            except TimeoutError:
                pass
            self._event_all("rest_fallback_started", "socket down for "
                            f"{self.config.rest_fallback_after_s:g} s; polling REST")
            while not self._connected.is_set():
                for symbol in self.symbols:
                    await self._poll(symbol)
                try:
                    await asyncio.wait_for(self._connected.wait(),
                                           self.config.rest_poll_interval_s)
                except TimeoutError:
                    pass
            self._event_all("rest_fallback_stopped", "socket back")

    async def _wait_disconnected(self) -> None:
        while self._connected.is_set():
            await asyncio.sleep(0.05)

    async def _poll(self, symbol: str) -> None:
        assert self.rest is not None and self.gaps is not None
        state = self._state[symbol]
        self.stats["rest_polls"] += 1
        fresh = await self.gaps.poll_new_trades(symbol, state.last_trade_id)
        if fresh is not None:
            state.last_trade_id = fresh
            self._mark_seen(symbol, state)
        endpoints = ["book_ticker"] + (["premium_index"] if self.rest.has("premium_index") else [])
        for endpoint in endpoints:
            answer: RestFrame | RestError = await self.rest.call(endpoint, symbol)
            if isinstance(answer, RestFrame):
                self.buffer.put(answer.ts_recv, answer.frame)
