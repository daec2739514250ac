"""The live feed's Binance REST calls, each answer turned into a frame of the stream.

A REST answer enters the stream as `{"rest": "<endpoint>", "symbol": "<SYMBOL>", "data": ...}`
(the `data` is the venue's JSON, unchanged), stamped with the time the answer arrived, so the
recorder records it and a replay of the recording sees it exactly where live did. The parser
(`dataflows.binance`) reads these envelopes like websocket frames.

Policy (DESIGN.md, Nautilus-style): these are reads, so they are safe to retry; a failure is
returned as a `RestError` value the caller journals, never raised into the feed's loop. An API key
is only sent where an endpoint asks for one (historical trades), is read from the environment
variable the config names, and never appears in a frame, a log line or an error message.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from engine.config import LiveConfig

_PATHS: dict[str, dict[str, str]] = {
    "binance": {
        "depth": "/api/v3/depth",
        "trades": "/api/v3/trades",
        "historical_trades": "/api/v3/historicalTrades",
        "book_ticker": "/api/v3/ticker/bookTicker",
    },
    "binance-usdm": {
        "depth": "/fapi/v1/depth",
        "trades": "/fapi/v1/trades",
        "historical_trades": "/fapi/v1/historicalTrades",
        "book_ticker": "/fapi/v1/ticker/bookTicker",
        "premium_index": "/fapi/v1/premiumIndex",
    },
}
_KEYED = frozenset({"historical_trades"})  # endpoints that take an X-MBX-APIKEY header


@dataclass(frozen=True)
class RestFrame:
    """One REST answer as a stream frame, with its receive time and decoded data."""

    ts_recv: int
    frame: bytes
    data: Any


@dataclass(frozen=True)
class RestError:
    """A REST call that failed: what was asked and why (never contains a key)."""

    endpoint: str
    symbol: str
    reason: str


class BinanceRest:
    """Public-data REST calls of one venue, through one aiohttp session (create it in the loop)."""

    def __init__(self, config: LiveConfig) -> None:
        self.config = config
        self.paths = _PATHS[config.venue]
        self.base = config.rest_base
        self.requests = 0
        self.failures = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BinanceRest:
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def has(self, endpoint: str) -> bool:
        return endpoint in self.paths

    async def depth(self, symbol: str) -> RestFrame | RestError:
        return await self.call("depth", symbol, limit=self.config.snapshot_limit)

    async def trades(self, symbol: str, limit: int = 1000) -> RestFrame | RestError:
        return await self.call("trades", symbol, limit=limit)

    async def historical_trades(
        self, symbol: str, from_id: int, limit: int = 1000
    ) -> RestFrame | RestError:
        return await self.call("historical_trades", symbol, fromId=from_id, limit=limit)

    async def book_ticker(self, symbol: str) -> RestFrame | RestError:
        return await self.call("book_ticker", symbol)

    async def premium_index(self, symbol: str) -> RestFrame | RestError:
        return await self.call("premium_index", symbol)

    async def call(self, endpoint: str, symbol: str, **params: int) -> RestFrame | RestError:
        """GET an endpoint for a symbol; the answer as an enveloped frame, or a RestError."""
        if self._session is None:
            raise RuntimeError("BinanceRest used outside `async with`")
        path = self.paths.get(endpoint)
        if path is None:
            return RestError(endpoint, symbol, f"{self.config.venue} has no {endpoint} endpoint")
        query = {"symbol": symbol, **{key: str(value) for key, value in params.items()}}
        headers = {}
        if endpoint in _KEYED and self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env)
            if key:
                headers["X-MBX-APIKEY"] = key
        self.requests += 1
        try:
            async with self._session.get(self.base + path, params=query, headers=headers) as answer:
                body = await answer.read()
                ts_recv = time.time_ns()
                if answer.status != 200:
                    self.failures += 1
                    return RestError(endpoint, symbol, f"HTTP {answer.status}: {body[:200]!r}")
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            self.failures += 1
            return RestError(endpoint, symbol, f"{type(error).__name__}: {error}"[:300])
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            self.failures += 1
            return RestError(endpoint, symbol, f"answer is not JSON: {error}")
        frame = orjson.dumps({"rest": path, "symbol": symbol, "data": data})
        return RestFrame(ts_recv, frame, data)


def envelope(path: str, symbol: str, data: Any) -> bytes:
    """A REST envelope frame for data the feed reshaped (e.g. only the trades a gap missed)."""
    return orjson.dumps({"rest": path, "symbol": symbol, "data": data})
