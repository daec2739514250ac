"""Binance-shaped REST market data on loopback, answered from the replay server's own market.

Spot paths are under `/api/v3/`, USD-M futures paths under `/fapi/v1/`: `ping`, `time`,
`exchangeInfo` (minimal: one entry per symbol with PRICE_FILTER and LOT_SIZE whose tick and step
are the finest decimals seen in the captures), `depth`, `trades`, `historicalTrades`, `aggTrades`,
`ticker/bookTicker`, and futures `premiumIndex`. What each answers is described in
`dataflows.live.replay_market`; shapes, parameters, defaults and limits follow Binance's docs:

- depth `limit`: spot 1..5000 (default 100; above 5000 the answer is cut to 5000, as Binance
  does); futures one of 5, 10, 20, 50, 100, 500, 1000 (default 500);
- trades / historicalTrades / aggTrades `limit`: default 500, at most 1000; historicalTrades
  `fromId`; aggTrades `fromId`, `startTime`, `endTime` (ms, inclusive, at most one hour apart);
- futures historicalTrades wants an `X-MBX-APIKEY` header (any non-empty value; never echoed).

Errors have Binance's shape and HTTP status: `{"code": -1121, "msg": "Invalid symbol."}` (400),
-1102 missing parameter, -1100 not an integer, -1130 invalid value, -1104 unread parameters,
-1127 time range over an hour, -2014 missing API key (401), -1003 over the weight limit (429 with
`Retry-After`), and 404 for an unknown path. Every answer carries `X-MBX-USED-WEIGHT-1M`: the
request weight used in the current wall-clock minute of the server (weights from Binance's docs),
so a client's rate limiter can be tested; requests are counted per path.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from dataflows.live.replay_frames import SNAPSHOT, TRADE, TimelineFrame
from dataflows.live.replay_market import MarketState, quote_quantity

SPOT_DEPTH_LIMIT = 5000
FUTURES_DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
DEFAULT_WEIGHT_LIMIT = {"spot": 6000, "usdm": 2400}
QUOTE_ASSETS = ("USDT", "FDUSD", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "USD")
HOUR_MS = 3_600_000
FUNDING_PERIOD_MS = 8 * HOUR_MS
DEFAULT_INTEREST_RATE = "0.00010000"
Query = Mapping[str, str]


class ApiError(Exception):
    """A Binance error answer: HTTP status, code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _int_param(query: Query, name: str, required: bool = False) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        if required:
            raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null,"
                                       " or malformed.")
        return None
    if not text.isdigit() or len(text) > 20:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range"
                                   " is '^[0-9]{1,20}$'.")
    return int(text)


def _limit(query: Query, default: int, maximum: int) -> int:
    limit = _int_param(query, "limit")
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return limit


def _decimals(text: str) -> tuple[int, int]:
    """(significant decimals, printed decimals) of a number as Binance prints it."""
    _, _, fraction = text.partition(".")
    return len(fraction.rstrip("0")), len(fraction)


def _step(significant: int, printed: int) -> str:
    if printed == 0:
        return "1"
    step = 10 ** -significant if significant else 1
    return f"{step:.{printed}f}"


def symbol_filters(frames: Sequence[TimelineFrame]) -> dict[str, tuple[str, str]]:
    """(tick size, step size) per symbol: the finest price and quantity decimals in the trades
    and snapshots of the captures, printed with the captures' own number of decimals."""
    finest: dict[str, list[int]] = {}
    for frame in frames:
        if frame.kind not in (TRADE, SNAPSHOT):
            continue
        try:
            data = orjson.loads(frame.raw)
        except orjson.JSONDecodeError:
            continue
        if type(data) is not dict:
            continue
        pairs = [(data.get("p"), data.get("q"))] if frame.kind == TRADE else \
            [tuple(level[:2]) for level in (data.get("bids") or [])[:50] if type(level) is list]
        seen = finest.setdefault(frame.symbol, [0, 0, 0, 0])
        for price, qty in pairs:
            if type(price) is str and type(qty) is str:
                (ps, pp), (qs, qp) = _decimals(price), _decimals(qty)
                seen[:] = [max(seen[0], ps), max(seen[1], pp), max(seen[2], qs), max(seen[3], qp)]
    return {symbol: (_step(v[0], v[1]), _step(v[2], v[3])) for symbol, v in finest.items()}


@dataclass(frozen=True)
class _Endpoint:
    handler: Callable[[Query, Mapping[str, str]], Any]
    params: frozenset[str]
    weight: Callable[[Query], int]


class ReplayRest:
    """The REST side of the replay server (an aiohttp application)."""

    def __init__(
        self,
        market: str,
        state: Callable[[], MarketState],
        server_time_ms: Callable[[], int],
        filters: Callable[[], dict[str, tuple[str, str]]],
        symbols: Sequence[str],
        weight_limit_1m: int,
    ) -> None:
        self.futures = market == "usdm"
        self.prefix = "/fapi/v1" if self.futures else "/api/v3"
        self._state, self._now_ms, self._filters = state, server_time_ms, filters
        self.symbols = tuple(symbols)
        self.weight_limit_1m = weight_limit_1m
        self.requests: Counter[str] = Counter()
        self.rate_limited = 0
        self.used_weight = 0
        self._minute = -1
        self._started = time.monotonic()
        self._routes = self._build_routes()

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._dispatch)
        return app

    # ------------------------------------------------------------------ dispatch and weight

    def _build_routes(self) -> dict[str, _Endpoint]:
        futures = self.futures

        def depth_weight(query: Query) -> int:
            try:
                limit = _int_param(query, "limit") or (500 if futures else 100)
            except ApiError:
                limit = 100
            if futures:
                return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
            return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250

        def per_symbol(one: int, every: int) -> Callable[[Query], int]:
            return lambda query: one if query.get("symbol") else every

        symbol = frozenset({"symbol"})
        routes = {
            "ping": _Endpoint(lambda q, h: {}, frozenset(), lambda q: 1),
            "time": _Endpoint(lambda q, h: {"serverTime": self._now_ms()}, frozenset(),
                              lambda q: 1),
            "exchangeInfo": _Endpoint(self._exchange_info, frozenset({"symbol", "symbols"}),
                                      lambda q: 1 if futures else 20),
            "depth": _Endpoint(self._depth, symbol | {"limit"}, depth_weight),
            "trades": _Endpoint(self._trades, symbol | {"limit"},
                                lambda q: 5 if futures else 25),
            "historicalTrades": _Endpoint(self._historical_trades, symbol | {"limit", "fromId"},
                                          lambda q: 20 if futures else 25),
            "aggTrades": _Endpoint(self._agg_trades,
                                   symbol | {"limit", "fromId", "startTime", "endTime"},
                                   lambda q: 20 if futures else 4),
            "ticker/bookTicker": _Endpoint(self._book_ticker, symbol,
                                           per_symbol(2, 5 if futures else 4)),
        }
        if futures:
            routes["premiumIndex"] = _Endpoint(self._premium_index, symbol, per_symbol(1, 10))
        return {f"{self.prefix}/{name}": endpoint for name, endpoint in routes.items()}

    def _charge(self, weight: int) -> tuple[int, int]:
        """Add a request's weight to the current minute; (used weight, seconds left)."""
        elapsed = time.monotonic() - self._started
        minute = int(elapsed // 60)
        if minute != self._minute:
            self._minute, self.used_weight = minute, 0
        self.used_weight += weight
        return self.used_weight, max(1, int(60 - elapsed % 60))

    async def _dispatch(self, request: web.Request) -> web.Response:
        endpoint = self._routes.get(request.path)
        self.requests[request.path if endpoint is not None else "unknown path"] += 1
        headers = {}
        try:
            if endpoint is None:
                raise ApiError(404, -1000, f"Unknown path {request.path[:80]}.")
            query = request.query
            used, retry_after = self._charge(endpoint.weight(query))
            headers["X-MBX-USED-WEIGHT-1M"] = str(used)
            if used > self.weight_limit_1m:
                self.rate_limited += 1
                headers["Retry-After"] = str(retry_after)
                raise ApiError(429, -1003, (
                    f"Too many requests; current limit of IP({request.remote}) request weight per"
                    f" 1 MINUTE is {self.weight_limit_1m}. Please use WebSocket Streams for live"
                    " updates to avoid polling the API."))
            unread = [name for name in query if name not in endpoint.params]
            if unread:
                raise ApiError(400, -1104, (
                    f"Not all sent parameters were read; read '{len(query) - len(unread)}'"
                    f" parameter(s) but was sent '{len(query)}'."))
            body, status = endpoint.handler(query, request.headers), 200
        except ApiError as error:
            body, status = {"code": error.code, "msg": error.msg}, error.status
        return web.Response(body=orjson.dumps(body), status=status,
                            content_type="application/json", headers=headers)

    # ------------------------------------------------------------------ endpoints

    def _symbol(self, query: Query) -> str:
        """The query's symbol, which must be sent and be one of the captures'."""
        symbol = self._optional_symbol(query)
        if symbol is None:
            raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was "
                                       "empty/null, or malformed.")
        return symbol

    def _optional_symbol(self, query: Query) -> str | None:
        symbol = query.get("symbol")
        if not symbol:
            return None
        if symbol not in self.symbols:
            raise ApiError(400, -1121, "Invalid symbol.")
        return symbol

    def _exchange_info(self, query: Query, headers: Mapping[str, str]) -> Any:
        wanted = self._optional_symbol(query)
        listed = query.get("symbols")
        chosen = set(self.symbols) if wanted is None else {wanted}
        if listed is not None:
            try:
                names = orjson.loads(listed)
            except orjson.JSONDecodeError:
                names = None
            if type(names) is not list or not all(type(name) is str for name in names):
                raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'; "
                                           "expected a JSON array of symbols.")
            if any(name not in self.symbols for name in names):
                raise ApiError(400, -1121, "Invalid symbol.")
            chosen &= set(names)
        filters = self._filters()
        symbols = []
        for name in self.symbols:
            if name not in chosen:
                continue
            tick, step = filters.get(name, ("0.01", "0.001"))
            quote = next((q for q in QUOTE_ASSETS if name.endswith(q) and name != q), name[-4:])
            entry: dict[str, Any] = {
                "symbol": name, "status": "TRADING", "baseAsset": name[: -len(quote)],
                "quoteAsset": quote,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000",
                     "tickSize": tick},
                    {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000",
                     "stepSize": step},
                ],
            }
            if self.futures:
                entry.update({"pair": name, "contractType": "PERPETUAL",
                              "pricePrecision": _decimals(tick)[0],
                              "quantityPrecision": _decimals(step)[0]})
            symbols.append(entry)
        return {
            "timezone": "UTC", "serverTime": self._now_ms(),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                            "intervalNum": 1, "limit": self.weight_limit_1m}],
            "exchangeFilters": [], "symbols": symbols,
        }

    def _depth(self, query: Query, headers: Mapping[str, str]) -> Any:
        symbol = self._symbol(query)
        asked = _int_param(query, "limit")
        limit = asked if asked is not None else 500 if self.futures else 100
        if limit < 1 or (self.futures and limit not in FUTURES_DEPTH_LIMITS):
            raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        limit = min(limit, SPOT_DEPTH_LIMIT)
        book = self._state().book(symbol)
        bids, asks = book.top(limit)
        answer: dict[str, Any] = {"lastUpdateId": book.last_update_id or 0}
        if self.futures:
            answer.update({"E": book.event_time, "T": book.transaction_time})
        answer.update({"bids": [list(level) for level in bids],
                       "asks": [list(level) for level in asks]})
        return answer

    def _trade_rows(self, symbol: str, positions: list[int]) -> list[dict[str, Any]]:
        tape = self._state().tape(symbol)
        rows = []
        for position in positions:
            price, qty, time_ms, maker, best = tape.rows[position]
            row: dict[str, Any] = {"id": tape.ids[position], "price": price, "qty": qty,
                                   "quoteQty": quote_quantity(price, qty), "time": time_ms,
                                   "isBuyerMaker": maker}
            if not self.futures:
                row["isBestMatch"] = best
            rows.append(row)
        return rows

    def _trades(self, query: Query, headers: Mapping[str, str]) -> Any:
        symbol = self._symbol(query)
        limit = _limit(query, 500, 1000)
        return self._trade_rows(symbol, self._state().tape(symbol).trades(None, limit))

    def _historical_trades(self, query: Query, headers: Mapping[str, str]) -> Any:
        if self.futures and not headers.get("X-MBX-APIKEY"):
            raise ApiError(401, -2014, "API-key format invalid.")
        symbol = self._symbol(query)
        limit = _limit(query, 500, 1000)
        from_id = _int_param(query, "fromId")
        return self._trade_rows(symbol, self._state().tape(symbol).trades(from_id, limit))

    def _agg_trades(self, query: Query, headers: Mapping[str, str]) -> Any:
        symbol = self._symbol(query)
        limit = _limit(query, 500, 1000)
        from_id = _int_param(query, "fromId")
        start, end = _int_param(query, "startTime"), _int_param(query, "endTime")
        if start is not None and end is not None and end - start > HOUR_MS:
            raise ApiError(400, -1127, "More than 1 hours between startTime and endTime.")
        tape = self._state().tape(symbol)
        keys = ("a", "p", "q", "f", "l", "T", "m") if self.futures else \
            ("a", "p", "q", "f", "l", "T", "m", "M")
        return [{key: tape.aggs[position][key] for key in keys if key in tape.aggs[position]}
                for position in tape.agg_positions(from_id, start, end, limit)]

    def _book_ticker(self, query: Query, headers: Mapping[str, str]) -> Any:
        symbol = self._optional_symbol(query)
        answers = [self._ticker(name) for name in ((symbol,) if symbol else self.symbols)]
        return answers[0] if symbol else answers

    def _ticker(self, symbol: str) -> dict[str, Any]:
        state = self._state()
        data = state.latest(state.tickers, symbol)
        if data is not None:
            answer: dict[str, Any] = {"symbol": symbol, "bidPrice": data.get("b"),
                                      "bidQty": data.get("B"), "askPrice": data.get("a"),
                                      "askQty": data.get("A")}
            if self.futures:
                answer.update({"time": data.get("T", data.get("E")),
                               "lastUpdateId": data.get("u")})
            return answer
        bid, ask = state.best(symbol)
        book = state.book(symbol)
        answer = {"symbol": symbol, "bidPrice": bid[0] if bid else "0",
                  "bidQty": bid[1] if bid else "0", "askPrice": ask[0] if ask else "0",
                  "askQty": ask[1] if ask else "0"}
        if self.futures:
            answer.update({"time": book.transaction_time, "lastUpdateId": book.last_update_id})
        return answer

    def _premium_index(self, query: Query, headers: Mapping[str, str]) -> Any:
        symbol = self._optional_symbol(query)
        answers = [self._premium(name) for name in ((symbol,) if symbol else self.symbols)]
        return answers[0] if symbol else answers

    def _premium(self, symbol: str) -> dict[str, Any]:
        now = self._now_ms()
        state = self._state()
        mark = state.latest(state.marks, symbol)
        if mark is not None:
            return {"symbol": symbol, "markPrice": mark.get("p"), "indexPrice": mark.get("i"),
                    "estimatedSettlePrice": mark.get("P"), "lastFundingRate": mark.get("r"),
                    "interestRate": DEFAULT_INTEREST_RATE, "nextFundingTime": mark.get("T"),
                    "time": mark.get("E")}
        bid, ask = state.best(symbol)
        mid = "0"
        if bid and ask:
            decimals = max(_decimals(bid[0])[1], _decimals(ask[0])[1])
            mid = f"{(float(bid[0]) + float(ask[0])) / 2:.{decimals}f}"
        return {"symbol": symbol, "markPrice": mid, "indexPrice": mid,
                "estimatedSettlePrice": mid, "lastFundingRate": "0.00000000",
                "interestRate": DEFAULT_INTEREST_RATE,
                "nextFundingTime": (now // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS,
                "time": now}
