"""A loopback HTTP server speaking the Binance USD-M (and spot key-permission) REST shapes that
ccxt 4.5.90 calls for trading, with fault knobs for execution tests.

Routes (paths as ccxt 4.5.90 calls them, found by logging its requests):
- public: GET /fapi/v1/exchangeInfo, /fapi/v1/time, /fapi/v1/ping;
- signed (HMAC-SHA256 of the query or form body, `X-MBX-APIKEY` header, recvWindow checked):
  POST/GET/DELETE /fapi/v1/order, GET /fapi/v1/openOrders, DELETE /fapi/v1/allOpenOrders,
  POST/GET/DELETE /fapi/v1/algoOrder (STOP_MARKET / TAKE_PROFIT_MARKET), GET
  /fapi/v1/openAlgoOrders, DELETE /fapi/v1/algoOpenOrders, POST /fapi/v1/countdownCancelAll,
  GET /fapi/v2|v3/positionRisk, GET /fapi/v2|v3/account, GET /fapi/v2|v3/balance,
  GET /fapi/v1/leverageBracket, POST /fapi/v1/leverage, GET /fapi/v1/userTrades,
  GET /sapi/v1/account/apiRestrictions (spot key permissions, `enableWithdrawals`).
The trading state lives in `binance_trading_venue.TradingVenue`.

Fault knobs (`BinanceTradingServer`):
- `delay_next(kind, count, seconds)`: the next `count` "create" or "cancel" requests are
  applied, then answered only after `seconds` (the order exists; the client times out);
- `fail_next(kind, status, code, msg, count)`: the next requests of a kind ("create", "cancel",
  "read", "any") are refused without effect: a 5xx with a plain-text body, 429 (-1003), 400 with
  -1021 (timestamp outside recvWindow), ...;
- the venue itself (`server.venue`) can be changed out of band: `fill`, `cancel`, `place`,
  `set_mark`, positions, wallet, `withdrawals_enabled`;
- `requests` records every request (method, path, parameters, status) and `creates(client_id)`
  counts order submissions per client order id.
It binds 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.binance_trading_venue import SYMBOLS, TradingVenue, VenueOrder, VenueRejectError

TEST_API_KEY = "test-key-5b0e"
TEST_SECRET = "test-secret-91c4"
CREATE_PATHS = ("/fapi/v1/order", "/fapi/v1/algoOrder")
CANCEL_PATHS = ("/fapi/v1/order", "/fapi/v1/algoOrder", "/fapi/v1/allOpenOrders",
                "/fapi/v1/algoOpenOrders")
_FILTERS = [
    {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "1000000", "tickSize": "0.10"},
    {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
    {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
    {"filterType": "MIN_NOTIONAL", "notional": "5"},
]


def _usdm_symbol(symbol: str) -> dict[str, Any]:
    return {
        "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
        "baseAsset": symbol.removesuffix("USDT"), "quoteAsset": "USDT", "marginAsset": "USDT",
        "pricePrecision": 1, "quantityPrecision": 3, "baseAssetPrecision": 8,
        "quotePrecision": 8, "underlyingType": "COIN", "filters": _FILTERS,
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


USDM_INFO = {"timezone": "UTC", "serverTime": 0, "rateLimits": [], "assets": [],
             "symbols": [_usdm_symbol(symbol) for symbol in SYMBOLS]}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    status: int
    api_key: str | None


@dataclass
class _Fault:
    kind: str
    status: int = 0
    code: int | None = None
    msg: str = ""
    delay_s: float = 0.0


@dataclass
class BinanceTradingServer:
    """Shared state of the server: the venue, the request log and the injected faults."""

    venue: TradingVenue = field(default_factory=TradingVenue)
    api_key: str = TEST_API_KEY
    secret: str = TEST_SECRET
    recv_window_ms: int = 5_000
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def urls(self) -> dict[str, str]:
        """Overrides for ccxt's `urls['api']` pointing every API ccxt trades through here."""
        base = self.base
        return {"fapiPublic": f"{base}/fapi/v1", "fapiPublicV2": f"{base}/fapi/v2",
                "fapiPublicV3": f"{base}/fapi/v3", "fapiPrivate": f"{base}/fapi/v1",
                "fapiPrivateV2": f"{base}/fapi/v2", "fapiPrivateV3": f"{base}/fapi/v3",
                "fapiData": f"{base}/futures/data", "sapi": f"{base}/sapi/v1",
                "public": f"{base}/api/v3", "private": f"{base}/api/v3"}

    # ---------------------------------------------------------------- fault knobs

    def delay_next(self, kind: str, count: int = 1, seconds: float = 2.0) -> None:
        """Apply the next `count` requests of `kind` ("create"/"cancel"), answer after a delay."""
        with self.lock:
            self.faults.extend(_Fault(kind, delay_s=seconds) for _ in range(count))

    def fail_next(self, kind: str, status: int, code: int | None = None, msg: str = "",
                  count: int = 1) -> None:
        """Refuse the next `count` requests of `kind` with `status` (and a Binance error code)."""
        with self.lock:
            self.faults.extend(_Fault(kind, status, code, msg) for _ in range(count))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def creates(self, client_order_id: str) -> int:
        """How many order submissions carried this client order id (whatever their answer)."""
        with self.lock:
            return sum(1 for r in self.requests if r.method == "POST" and r.path in CREATE_PATHS
                       and client_order_id in (r.params.get("newClientOrderId"),
                                               r.params.get("clientAlgoId")))

    def paths(self) -> list[str]:
        with self.lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    # ---------------------------------------------------------------- request handling

    @staticmethod
    def kind_of(method: str, path: str) -> str:
        if method == "POST" and path in CREATE_PATHS:
            return "create"
        if method == "DELETE" and path in CANCEL_PATHS:
            return "cancel"
        return "read"

    def _take_fault(self, kind: str) -> _Fault | None:
        with self.lock:
            for index, fault in enumerate(self.faults):
                if fault.kind in (kind, "any"):
                    return self.faults.pop(index)
        return None

    def handle(self, method: str, path: str, query: str, body: str,
               headers: dict[str, str]) -> tuple[int, Any, float]:
        """Answer one request: (HTTP status, JSON body or text, delay before answering)."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        api_key = headers.get("x-mbx-apikey")
        status, answer, delay = self._answer(method, path, query, body, params, api_key)
        with self.lock:
            self.requests.append(RecordedRequest(method, path, params, status, api_key))
        return status, answer, delay

    def _answer(self, method: str, path: str, query: str, body: str, params: dict[str, str],
                api_key: str | None) -> tuple[int, Any, float]:
        self.venue.expire_countdowns()
        public = path in ("/fapi/v1/exchangeInfo", "/fapi/v1/time", "/fapi/v1/ping")
        fault = None if public else self._take_fault(self.kind_of(method, path))
        if fault is not None and fault.status:
            if fault.code is None:
                return fault.status, fault.msg or "injected failure", 0.0
            return fault.status, {"code": fault.code, "msg": fault.msg or "injected"}, 0.0
        try:
            if public:
                return 200, self._public(path), 0.0
            self._authenticate(method, query, body, params, api_key)
            answer = self._private(method, path, params)
        except VenueRejectError as reject:
            return reject.status, {"code": reject.code, "msg": reject.msg}, 0.0
        return 200, answer, fault.delay_s if fault else 0.0

    def _authenticate(self, method: str, query: str, body: str, params: dict[str, str],
                      api_key: str | None) -> None:
        if api_key != self.api_key:
            raise VenueRejectError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signed = body if method == "POST" and body else query
        payload, _, signature = signed.rpartition("&signature=")
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            raise VenueRejectError(400, -1022, "Signature for this request is not valid.")
        window = int(params.get("recvWindow", self.recv_window_ms))
        if abs(time.time() * 1000 - int(params.get("timestamp", "0"))) > window:
            raise VenueRejectError(400, -1021, "Timestamp for this request is outside of the "
                              "recvWindow.")

    def _public(self, path: str) -> Any:
        if path == "/fapi/v1/exchangeInfo":
            return {**USDM_INFO, "serverTime": self.venue.now_ms()}
        if path == "/fapi/v1/time":
            return {"serverTime": self.venue.now_ms()}
        return {}

    def _private(self, method: str, path: str, params: dict[str, str]) -> Any:
        venue = self.venue
        symbol = params.get("symbol")
        route = f"{method} {path}"
        if path in ("/fapi/v1/order", "/fapi/v1/algoOrder"):
            algo = path.endswith("algoOrder")
            if method == "POST":
                return venue.place(params, algo).as_json()
            order = self._lookup(params, algo)
            if method == "DELETE":
                cancelled = venue.cancel(order)
                if algo:
                    return {"algoId": cancelled.order_id,
                            "clientAlgoId": cancelled.client_order_id, "code": "200",
                            "msg": "success"}
                return cancelled.as_json()
            return order.as_json()
        if route in ("GET /fapi/v1/openOrders", "GET /fapi/v1/openAlgoOrders"):
            return [o.as_json() for o in venue.open_orders(symbol, path.endswith("AlgoOrders"))]
        if route in ("DELETE /fapi/v1/allOpenOrders", "DELETE /fapi/v1/algoOpenOrders"):
            venue.cancel_all(symbol or "", algo=path.endswith("algoOpenOrders"))
            return {"code": 200, "msg": "The operation of cancel all open order is done."}
        if route == "POST /fapi/v1/countdownCancelAll":
            countdown = int(params.get("countdownTime", "0"))
            venue.set_countdown(symbol or "", countdown)
            return {"symbol": symbol, "countdownTime": str(countdown)}
        if route in ("GET /fapi/v2/positionRisk", "GET /fapi/v3/positionRisk"):
            return [row for row in venue.position_rows() if symbol in (None, row["symbol"])]
        if route in ("GET /fapi/v2/account", "GET /fapi/v3/account"):
            return venue.account()
        if route in ("GET /fapi/v2/balance", "GET /fapi/v3/balance"):
            return [{"accountAlias": "test", **venue.account()["assets"][0]}]
        if route == "GET /fapi/v1/leverageBracket":
            return [{"symbol": s, "brackets": [{
                "bracket": 1, "initialLeverage": 125, "notionalCap": 10_000_000,
                "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0}]} for s in SYMBOLS]
        if route == "POST /fapi/v1/leverage":
            venue.leverage = int(params.get("leverage", venue.leverage))
            return {"leverage": venue.leverage, "maxNotionalValue": "10000000", "symbol": symbol}
        if route == "GET /fapi/v1/userTrades":
            with venue.lock:
                return [t for t in venue.trades if t["symbol"] == symbol][-int(
                    params.get("limit", "500")):]
        if route == "GET /sapi/v1/account/apiRestrictions":
            return {"ipRestrict": True, "createTime": 1700000000000,
                    "enableInternalTransfer": False, "enableFutures": True,
                    "enablePortfolioMarginTrading": False, "enableVanillaOptions": False,
                    "permitsUniversalTransfer": False, "enableReading": True,
                    "enableSpotAndMarginTrading": False, "enableMargin": False,
                    "enableWithdrawals": venue.withdrawals_enabled}
        raise VenueRejectError(404, -1, f"no route {route}")

    def _lookup(self, params: dict[str, str], algo: bool) -> VenueOrder:
        if algo:
            return self.venue.find(params.get("symbol", ""), params.get("algoId"),
                                   params.get("clientAlgoId"), algo=True)
        return self.venue.find(params.get("symbol", ""), params.get("orderId"),
                               params.get("origClientOrderId"), algo=False)


def _handler(state: BinanceTradingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, answer, delay = state.handle(self.command, parts.path, parts.query, body,
                                                 headers)
            if delay:
                state.stopping.wait(delay)
            text = isinstance(answer, str)
            payload = answer.encode() if text else json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (timed out) first

        do_GET = do_POST = do_DELETE = do_PUT = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def binance_trading_server(venue: TradingVenue | None = None) -> Iterator[BinanceTradingServer]:
    """Run the server on a free loopback port for the duration of the block."""
    state = BinanceTradingServer(venue=venue or TradingVenue())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


CANARY_SECRET = "CANARY-SECRET-7d1f"


class FakeClock:
    """A settable clock (seconds) for LiveExecution and the venue's countdown timers."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def reset_server(server: BinanceTradingServer, clock: FakeClock | None = None) -> None:
    """A fresh venue, request log and fault list for the next test (the server keeps running)."""
    server.venue = TradingVenue(clock=clock) if clock else TradingVenue()
    with server.lock:
        server.requests.clear()
        server.faults.clear()
