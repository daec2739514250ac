"""A loopback HTTP server speaking the Binance REST shapes ccxt uses, fed with bundled real data.

Spot BTCUSDT trades and the depth snapshot come from the bundled spot capture
(data/binance-spot/btcusdt_20240808.gz), klines from the bundled 1-minute CSV
(data/binance-1m/BTCUSDT_1m.csv); the USD-M premium index is built from the first trade and
book ticker of the bundled USD-M capture (the captures hold no markPrice stream). exchangeInfo is
minimal: BTCUSDT (and ETHUSDT, with no data) on spot, BTCUSDT perpetual on USD-M.

The server records the monotonic time and path of every request, and can be told to fail the
next requests with an HTTP status (and a plain-text body), so tests can check rate limiting and
error handling. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import csv
import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[2]
SPOT_CAPTURE = REPO / "data" / "binance-spot" / "btcusdt_20240808.gz"
USDM_CAPTURE = REPO / "data" / "binance-usdm" / "btcusdt_20240808.gz"
KLINES_CSV = REPO / "data" / "binance-1m" / "BTCUSDT_1m.csv"


@dataclass
class RealData:
    """REST bodies built from the bundled captures."""

    trades: list[dict[str, Any]]
    depth: dict[str, Any]
    klines: list[list[Any]]
    premium_index: dict[str, Any]


def _spot_data(max_trades: int = 2000) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    trades: list[dict[str, Any]] = []
    depth: dict[str, Any] | None = None
    with gzip.open(SPOT_CAPTURE, "rt") as handle:
        for line in handle:
            frame = json.loads(line.split(" ", 1)[1])
            if "lastUpdateId" in frame and depth is None:
                depth = frame
            elif frame.get("stream") == "btcusdt@trade" and len(trades) < max_trades:
                data = frame["data"]
                trades.append({
                    "id": data["t"], "price": data["p"], "qty": data["q"],
                    "quoteQty": f"{float(data['p']) * float(data['q']):.8f}",
                    "time": data["T"], "isBuyerMaker": data["m"], "isBestMatch": True,
                })
            if depth is not None and len(trades) >= max_trades:
                break
    assert depth is not None
    return trades, depth


def _klines(count: int = 500) -> list[list[Any]]:
    rows = []
    with open(KLINES_CSV) as handle:
        for row in csv.DictReader(handle):
            close_ms = int(datetime.fromisoformat(row["close_datetime"]).timestamp() * 1000)
            open_ms = close_ms - 59_999
            rows.append([
                open_ms, row["open"], row["high"], row["low"], row["close"], row["volume"],
                close_ms, row["quote_volume"], int(row["trades"]), "0", "0", "0",
            ])
            if len(rows) >= count:
                break
    return rows


def _premium_index() -> dict[str, Any]:
    trade = ticker = None
    with gzip.open(USDM_CAPTURE, "rt") as handle:
        for line in handle:
            frame = json.loads(line.split(" ", 1)[1])
            stream = frame.get("stream", "")
            if stream.endswith("@trade") and trade is None:
                trade = frame["data"]
            if stream.endswith("@bookTicker") and ticker is None:
                ticker = frame["data"]
            if trade and ticker:
                break
    assert trade is not None and ticker is not None
    mid = (float(ticker["b"]) + float(ticker["a"])) / 2
    eight_hours = 8 * 3600 * 1000
    return {
        "symbol": "BTCUSDT", "markPrice": trade["p"], "indexPrice": f"{mid:.8f}",
        "estimatedSettlePrice": trade["p"], "lastFundingRate": "0.00010000",
        "interestRate": "0.00010000",
        "nextFundingTime": (trade["T"] // eight_hours + 1) * eight_hours, "time": trade["T"],
    }


def load_real_data() -> RealData:
    trades, depth = _spot_data()
    return RealData(trades, depth, _klines(), _premium_index())


_FILTERS = [
    {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"},
    {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": "0.00001"},
]


def _spot_symbol(symbol: str, base: str) -> dict[str, Any]:
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False, "filters": _FILTERS, "permissions": ["SPOT"],
        "permissionSets": [["SPOT"]],
    }


SPOT_INFO = {"timezone": "UTC", "serverTime": 1723161255000, "rateLimits": [],
             "symbols": [_spot_symbol("BTCUSDT", "BTC"), _spot_symbol("ETHUSDT", "ETH")]}
USDM_INFO = {"timezone": "UTC", "serverTime": 1723161255000, "rateLimits": [], "symbols": [{
    "symbol": "BTCUSDT", "pair": "BTCUSDT", "contractType": "PERPETUAL",
    "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
    "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": 2,
    "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
    "underlyingType": "COIN", "filters": _FILTERS, "orderTypes": ["LIMIT", "MARKET"],
    "timeInForce": ["GTC"],
}]}


@dataclass
class FakeBinance:
    """Shared state of the server: data, request log and injected failures."""

    data: RealData
    requests: list[tuple[float, str]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)  # HTTP statuses for the next requests
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def urls(self) -> dict[str, str]:
        """Overrides for ccxt's `urls['api']` pointing every public API at this server."""
        return {"public": f"{self.base}/api/v3", "v1": f"{self.base}/api/v1",
                "fapiPublic": f"{self.base}/fapi/v1", "fapiPublicV2": f"{self.base}/fapi/v2",
                "fapiPublicV3": f"{self.base}/fapi/v3", "dapiPublic": f"{self.base}/dapi/v1"}

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _, path in self.requests]

    def respond(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((time.monotonic(), path))
            if self.fail_next:
                return self.fail_next.pop(0), "injected failure"
        limit = int(query.get("limit", ["500"])[0])
        symbol = query.get("symbol", [""])[0]
        if path == "/api/v3/exchangeInfo":
            return 200, SPOT_INFO
        if path == "/fapi/v1/exchangeInfo":
            return 200, USDM_INFO
        if symbol != "BTCUSDT":
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if path == "/api/v3/trades":
            return 200, self.data.trades[-limit:]
        if path == "/api/v3/depth":
            depth = self.data.depth
            return 200, {"lastUpdateId": depth["lastUpdateId"], "bids": depth["bids"][:limit],
                         "asks": depth["asks"][:limit]}
        if path == "/api/v3/klines":
            return 200, self.data.klines[:limit]
        if path == "/fapi/v1/premiumIndex":
            return 200, self.data.premium_index
        return 404, {"code": -1, "msg": f"no route {path}"}


def _handler(state: FakeBinance) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            status, body = state.respond(parts.path, parse_qs(parts.query))
            text = isinstance(body, str)
            payload = body.encode() if text else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if text else "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def fake_binance(data: RealData) -> Iterator[FakeBinance]:
    """Run the server on a free loopback port for the duration of the block."""
    state = FakeBinance(data)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
