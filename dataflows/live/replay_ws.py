"""The Binance websocket protocol of the replay server: connection paths and method messages.

Paths, as on Binance: `/ws/<stream>[/<stream>...]` (raw: each message is the stream's payload),
`/ws` (raw, nothing subscribed yet), `/stream?streams=<s1>/<s2>` (combined: each message is
`{"stream": ..., "data": ...}`) and `/stream`. Any other path is refused with HTTP 404, a bad
stream name with HTTP 400.

Method messages (JSON text): SUBSCRIBE and UNSUBSCRIBE with `params` (stream names) and
LIST_SUBSCRIPTIONS answer `{"result": null|[...], "id": N}`; SET_PROPERTY / GET_PROPERTY
`combined` switch or read the envelope. Errors answer `{"error": {"code": C, "msg": ...},
"id": N}` with Binance's codes: 0 unknown property, 1 invalid value type, 2 invalid request (bad
id, unknown method, bad params, invalid stream name, too many streams), 3 invalid JSON.
Stream names must be lower-case `<symbol>@<stream>` (Binance's streams are lower-case); a valid
name the captures do not carry is accepted and simply stays silent, as a quiet market would.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

MAX_STREAMS = 1024
STREAM_NAME = re.compile(r"^(?:[a-z0-9_\-]+|!\w+)@[A-Za-z0-9_@:+\-]+$")
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


class PathError(ValueError):
    """A connection path the server refuses; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_stream(name: object) -> str:
    """The stream name if valid; PathError(400) naming it otherwise."""
    if type(name) is not str or not STREAM_NAME.match(name):
        raise PathError(400, f"Invalid stream name {name!r:.80}: expected lower-case "
                             "'<symbol>@<stream>', e.g. 'btcusdt@trade'")
    return name


def parse_path(path: str) -> tuple[bool, list[str]]:
    """(combined envelope?, streams) of a connection path; PathError when refused."""
    parts = urlsplit(path)
    if parts.path in ("/ws", "/ws/"):
        return False, []
    if parts.path.startswith("/ws/"):
        return False, [check_stream(name) for name in parts.path[4:].split("/") if name]
    if parts.path in ("/stream", "/stream/"):
        query = parse_qs(parts.query)
        names = "/".join(query.get("streams", []))
        return True, [check_stream(name) for name in names.split("/") if name]
    raise PathError(404, f"Unknown path {parts.path[:80]!r}: use /ws/<stream> or "
                         "/stream?streams=<stream>/<stream>")


@dataclass
class Subscription:
    """What one connection receives: its streams (in subscription order) and envelope."""

    combined: bool
    streams: dict[str, None] = field(default_factory=dict)


class Session:
    """One client connection: its subscription, counters and incoming-message times."""

    def __init__(self, session_id: int, connection: ServerConnection, path: str,
                 subscription: Subscription) -> None:
        self.id, self.connection, self.path = session_id, connection, path
        self.subscription = subscription
        self.frames_sent = 0
        self.end_note = ""
        self.message_times: deque[float] = deque()

    def too_many_messages(self, now: float, per_second: int) -> bool:
        """Count a message received at `now` (monotonic s); True past `per_second` in 1 s."""
        times = self.message_times
        times.append(now)
        while times and times[0] <= now - 1.0:
            times.popleft()
        return len(times) > per_second


def how_closed(connection: ServerConnection) -> str:
    """"server closed 1008 Pong timeout", "client closed 1000", or "aborted (no close frame)"."""
    protocol = connection.protocol
    sent, received = protocol.close_sent, protocol.close_rcvd
    if sent is not None and not protocol.close_rcvd_then_sent:
        return f"server closed {sent.code} {sent.reason}".rstrip()
    if received is not None:
        return f"client closed {received.code} {received.reason}".rstrip()
    return "aborted (no close frame)"


@dataclass
class MethodResult:
    """The reply to a method message and the stream changes it asks for."""

    reply: bytes
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _error(code: int, msg: str, request_id: Any = None) -> MethodResult:
    return MethodResult(orjson.dumps({"error": {"code": code, "msg": msg}, "id": request_id}))


def handle_method(subscription: Subscription, message: str | bytes) -> MethodResult:
    """Apply one client message to the subscription; the reply to send back."""
    try:
        request = orjson.loads(message)
    except orjson.JSONDecodeError as error:
        return _error(3, f"Invalid JSON: {error}")
    if type(request) is not dict:
        return _error(2, "Invalid request: expected an object")
    request_id = request.get("id")
    if request_id is not None and (type(request_id) is not int or request_id < 0) and not (
        type(request_id) is str and 0 < len(request_id) <= 36 and request_id.isalnum()
    ):
        return _error(2, "Invalid request: request ID must be an unsigned integer")
    method = request.get("method")
    if method not in METHODS:
        if method is None:
            return _error(2, "Invalid request: missing field `method`", request_id)
        return _error(2, f"Invalid request: unknown variant {str(method)[:40]!r}, expected one of "
                         f"{', '.join(METHODS)}", request_id)
    params = request.get("params", [])
    if type(params) is not list:
        return _error(2, "Invalid request: params must be a list", request_id)
    if method == "LIST_SUBSCRIPTIONS":
        return MethodResult(orjson.dumps({"result": list(subscription.streams), "id": request_id}))
    if method in ("SET_PROPERTY", "GET_PROPERTY"):
        return _property(subscription, method, params, request_id)
    try:
        names = [check_stream(name) for name in params]
    except PathError as error:
        return _error(2, f"Invalid request: {error}", request_id)
    if method == "SUBSCRIBE":
        added = [name for name in dict.fromkeys(names) if name not in subscription.streams]
        if len(subscription.streams) + len(added) > MAX_STREAMS:
            return _error(2, f"Invalid request: too many streams (at most {MAX_STREAMS} per "
                             "connection)", request_id)
        subscription.streams.update(dict.fromkeys(added))
        return MethodResult(orjson.dumps({"result": None, "id": request_id}), added=added)
    removed = [name for name in dict.fromkeys(names) if name in subscription.streams]
    for name in removed:
        del subscription.streams[name]
    return MethodResult(orjson.dumps({"result": None, "id": request_id}), removed=removed)


def _property(subscription: Subscription, method: str, params: list[Any],
              request_id: Any) -> MethodResult:
    if not params or type(params[0]) is not str:
        return _error(2, "Invalid request: property name must be a string", request_id)
    if params[0] != "combined":
        return _error(0, "Unknown property", request_id)
    if method == "GET_PROPERTY":
        return MethodResult(orjson.dumps({"result": subscription.combined, "id": request_id}))
    if len(params) != 2 or type(params[1]) is not bool:
        return _error(1, "Invalid value type: expected Boolean", request_id)
    subscription.combined = params[1]
    return MethodResult(orjson.dumps({"result": None, "id": request_id}))


async def keepalive(
    connection: ServerConnection,
    interval_s: float,
    timeout_s: float,
    silent: Callable[[], bool],
    on_ping: Callable[[], None],
    on_pong: Callable[[], None],
) -> None:
    """Ping every `interval_s` (skipped while `silent()`); close the connection (1008) once its
    oldest unanswered ping is `timeout_s` old. Returns when the connection is closed."""
    loop = asyncio.get_running_loop()
    pending: deque[tuple[float, asyncio.Future[float]]] = deque()
    next_ping = loop.time() + interval_s

    def answered(waiter: asyncio.Future[float]) -> None:
        if not waiter.cancelled() and waiter.exception() is None:
            on_pong()

    while True:
        deadline = pending[0][0] + timeout_s if pending else math.inf
        await asyncio.sleep(max(0.0, min(next_ping, deadline) - loop.time()))
        while pending and pending[0][1].done():
            pending.popleft()
        now = loop.time()
        if pending and now >= pending[0][0] + timeout_s:
            await connection.close(1008, "Pong timeout")
            return
        if now < next_ping:
            continue
        next_ping += interval_s
        if silent():
            continue
        try:
            waiter = asyncio.ensure_future(await connection.ping())
        except ConnectionClosed:
            return
        on_ping()
        waiter.add_done_callback(answered)
        pending.append((now, waiter))
