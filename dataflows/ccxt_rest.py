"""Public REST market data of any ccxt venue as ATS columns, and a rate-limited poller.

`CcxtRestAdapter` wraps one synchronous ccxt exchange (the pinned ccxt 4.5.90) and turns its
unified answers into the columnar containers of `engine.batches`:
- `fetch_trades` -> `TradeColumns`: `side` is ccxt's taker side ("buy" +1, "sell" -1); trade ids
  are the venue's when they are integers, else the adapter's own per-symbol counter (1, 2, ...),
  in which case repeated trades of overlapping polls cannot be recognised. On Binance venues the
  adapter asks ccxt for raw trades (`/api/v3/trades`, `/fapi/v1/trades`, `/dapi/v1/trades`)
  rather than ccxt's default aggregate trades, so that ids match the websocket trade stream.
- `fetch_order_book` -> `BookSnapshotColumns`: `last_update_id` is ccxt's `nonce` (Binance's
  lastUpdateId) when the venue gives one, else a per-symbol counter.
- `fetch_ohlcv` -> `KlineColumns`: ccxt's unified candles carry no quote volume, taker volume or
  trade count, so those are NaN, NaN and -1; `closed` is "the candle ended before the response
  was received", and ts_event is the earlier of the receive time and the candle's end.
- `fetch_funding_rate` -> `MarkPriceColumns` (NaN where ccxt has no value, -1 for an unknown
  next funding time).
Chunks are keyed by ATS symbols made from ccxt's unified symbols (`ats_symbol`): "BTC/USDT" ->
"BTCUSDT", "BTC/USDT:USDT" -> "BTCUSDT-SWAP", "BTC/USD:BTC-220527" -> "BTCUSD-220527", as the
OKX parser names instruments.
Rows carry `ts_recv` from the adapter's clock (wall clock by default); a response without an
exchange time gets ts_event = ts_recv.

Rate limits: ccxt's limiter is always on (`enableRateLimit=True`; options that would turn it off
are refused) and `rate_limit_ms` may only make it slower. The synchronous ccxt client sleeps
before each request until `rateLimit x cost` of that endpoint has passed since the previous one,
and `RestPoller` issues its requests one at a time through the same exchange, so the poller never
outruns the limiter.

Credentials: public data needs none. The adapter refuses API keys in its configuration and never
reads them from the environment; error messages are cut to 300 characters and stripped of any
credential value ccxt might hold, before they are logged or kept.

`urls` overrides entries of ccxt's `exchange.urls['api']` (for Binance: "public" = spot
`/api/v3`, "fapiPublic" = USD-M `/fapi/v1`, ...), e.g. to point a test at a loopback server;
`options` is merged into `exchange.options` (Binance: `{"fetchMarkets": {"types": ["spot"]}}`
loads spot markets only).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ccxt
import numpy as np

from engine.batches import (
    BookSnapshotColumns,
    KlineColumns,
    MarketChunk,
    MarkPriceColumns,
    TradeColumns,
)

log = logging.getLogger(__name__)

ENDPOINTS = ("trades", "order_book", "ohlcv", "funding_rate")
_CREDENTIAL_KEYS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress",
                    "token", "twofa", "login", "accountId")
_RAW_TRADES_METHODS = {"spot": "publicGetTrades", "linear": "fapiPublicGetTrades",
                       "inverse": "dapiPublicGetTrades"}
_MESSAGE_LIMIT = 300
NS_PER_MS = 1_000_000


def _number(value: object) -> float:
    """ccxt number (or None) as float; None is NaN."""
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def _ms_to_ns(value: object) -> int | None:
    return None if value is None else int(value) * NS_PER_MS  # type: ignore[call-overload]


class CcxtRestAdapter:
    """One ccxt venue's public REST endpoints, answered as ATS columns (see module docs)."""

    def __init__(
        self,
        exchange_id: str,
        *,
        urls: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        sandbox: bool = False,
        timeout_ms: int = 10_000,
        rate_limit_ms: float | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        exchange_class = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
        if exchange_class is None:
            raise ValueError(f"unknown ccxt exchange id {exchange_id!r}; see ccxt.exchanges")
        options = dict(options or {})
        refused = sorted(set(options) & {*_CREDENTIAL_KEYS, "enableRateLimit", "rateLimit"})
        if refused:
            raise ValueError(
                f"CcxtRestAdapter({exchange_id}): options may not set {refused}: public data "
                "needs no credentials, the rate limiter stays on, and rate_limit_ms sets its pace"
            )
        self.exchange: Any = exchange_class({"enableRateLimit": True, "timeout": timeout_ms})
        self.exchange.options.update(options)
        if rate_limit_ms is not None:
            if not rate_limit_ms >= self.exchange.rateLimit:
                raise ValueError(
                    f"rate_limit_ms={rate_limit_ms} is below {exchange_id}'s own limit of "
                    f"{self.exchange.rateLimit} ms per request: it may only slow requests down"
                )
            self.exchange.rateLimit = rate_limit_ms
        if sandbox:
            self.exchange.set_sandbox_mode(True)
        if urls:
            api = self.exchange.urls["api"]
            if isinstance(api, dict):
                api.update(urls)
            elif set(urls) == {"api"}:
                self.exchange.urls["api"] = urls["api"]
            else:
                raise ValueError(f"{exchange_id} has one API url: pass urls={{'api': ...}}")
        session = getattr(self.exchange, "session", None)
        if session is not None:
            session.trust_env = False  # no proxy or netrc credentials from the environment
        self.exchange_id = exchange_id
        self.clock = clock
        self._counters: dict[tuple[str, str], int] = {}

    # ---------------------------------------------------------------- markets and symbols

    @property
    def rate_limit_ms(self) -> float:
        """Milliseconds ccxt waits per unit of request cost."""
        return float(self.exchange.rateLimit)

    def load_markets(self) -> dict[str, Any]:
        return dict(self.exchange.load_markets())

    @staticmethod
    def ats_symbol(symbol: str) -> str:
        """The ATS symbol of a ccxt unified symbol: base and quote without separator, plus the
        contract suffix for derivatives so that they never collide with the spot pair.

        >>> CcxtRestAdapter.ats_symbol("BTC/USDT"), CcxtRestAdapter.ats_symbol("BTC/USDT:USDT")
        ('BTCUSDT', 'BTCUSDT-SWAP')
        >>> CcxtRestAdapter.ats_symbol("BTC/USD:BTC-220527")
        'BTCUSD-220527'
        """
        pair, _, contract = symbol.upper().partition(":")
        base = pair.replace("/", "")
        if not contract:
            return base
        _, _, expiry = contract.partition("-")
        return f"{base}-{expiry or 'SWAP'}"

    # ---------------------------------------------------------------- endpoints

    def fetch_trades(
        self, symbol: str, since: int | None = None, limit: int | None = None
    ) -> TradeColumns:
        params: dict[str, Any] = {}
        options = self.exchange.options
        if self.exchange_id.startswith("binance") and "fetchTradesMethod" not in options:
            self.exchange.load_markets()
            market = self.exchange.market(symbol)
            kind = next((kind for kind in _RAW_TRADES_METHODS if market.get(kind)), None)
            if kind is not None:
                params["fetchTradesMethod"] = _RAW_TRADES_METHODS[kind]
        trades = self.exchange.fetch_trades(symbol, since, limit, params)
        ts_recv = self.clock()
        ids = [trade.get("id") for trade in trades]
        if all(isinstance(value, str) and value.isdigit() and len(value) <= 18 for value in ids):
            trade_ids = [int(value) for value in ids]
        else:
            trade_ids = [self._next(symbol, "trades") for _ in ids]
        sides = [trade.get("side") for trade in trades]
        if any(side not in ("buy", "sell") for side in sides):
            raise ValueError(f"{self.exchange_id} {symbol}: trade sides {sides!r:.80} not buy/sell")
        return TradeColumns(
            ts_event=np.array([_ms_to_ns(trade["timestamp"]) or ts_recv for trade in trades],
                              dtype=np.int64),
            ts_recv=np.full(len(trades), ts_recv, dtype=np.int64),
            trade_id=np.array(trade_ids, dtype=np.int64),
            price=np.array([_number(trade["price"]) for trade in trades], dtype=np.float64),
            qty=np.array([_number(trade["amount"]) for trade in trades], dtype=np.float64),
            side=np.array([1 if side == "buy" else -1 for side in sides], dtype=np.int8),
        )

    def fetch_order_book(self, symbol: str, limit: int | None = None) -> BookSnapshotColumns:
        book = self.exchange.fetch_order_book(symbol, limit)
        ts_recv = self.clock()
        nonce = book.get("nonce")
        last_update_id = nonce if isinstance(nonce, int) else self._next(symbol, "order_book")
        ts_event = _ms_to_ns(book.get("timestamp")) or ts_recv
        bids, asks = book["bids"], book["asks"]
        rows = len(bids) + len(asks)
        return BookSnapshotColumns(
            ts_event=np.full(rows, ts_event, dtype=np.int64),
            ts_recv=np.full(rows, ts_recv, dtype=np.int64),
            last_update_id=np.full(rows, last_update_id, dtype=np.int64),
            side=np.repeat(np.array([1, -1], dtype=np.int8), [len(bids), len(asks)]),
            price=np.array([_number(level[0]) for level in bids + asks], dtype=np.float64),
            qty=np.array([_number(level[1]) for level in bids + asks], dtype=np.float64),
        )

    def fetch_ohlcv(
        self, symbol: str, timeframe: str = "1m", since: int | None = None,
        limit: int | None = None,
    ) -> KlineColumns:
        candles = self.exchange.fetch_ohlcv(symbol, timeframe, since, limit)
        ts_recv = self.clock()
        interval_ns = int(self.exchange.parse_timeframe(timeframe)) * 1_000_000_000
        values = np.array([candle[:6] for candle in candles], dtype=np.float64).reshape(-1, 6)
        ts_open = np.array([int(candle[0]) * NS_PER_MS for candle in candles], dtype=np.int64)
        ts_close = ts_open + interval_ns
        count = len(candles)
        return KlineColumns(
            ts_event=np.minimum(ts_close, ts_recv),
            ts_recv=np.full(count, ts_recv, dtype=np.int64),
            ts_open=ts_open,
            ts_close=ts_close,
            interval_ns=np.full(count, interval_ns, dtype=np.int64),
            open=values[:, 1].copy(),
            high=values[:, 2].copy(),
            low=values[:, 3].copy(),
            close=values[:, 4].copy(),
            volume=values[:, 5].copy(),
            quote_volume=np.full(count, np.nan),
            taker_buy_volume=np.full(count, np.nan),
            trade_count=np.full(count, -1, dtype=np.int64),
            closed=ts_close <= ts_recv,
        )

    def fetch_funding_rate(self, symbol: str) -> MarkPriceColumns:
        rate = self.exchange.fetch_funding_rate(symbol)
        ts_recv = self.clock()
        next_funding = _ms_to_ns(rate.get("fundingTimestamp") or rate.get("nextFundingTimestamp"))
        return MarkPriceColumns(
            ts_event=np.array([_ms_to_ns(rate.get("timestamp")) or ts_recv], dtype=np.int64),
            ts_recv=np.array([ts_recv], dtype=np.int64),
            mark_price=np.array([_number(rate.get("markPrice"))]),
            index_price=np.array([_number(rate.get("indexPrice"))]),
            estimated_settle_price=np.array([_number(rate.get("estimatedSettlePrice"))]),
            funding_rate=np.array([_number(rate.get("fundingRate"))]),
            next_funding_time=np.array([next_funding if next_funding else -1], dtype=np.int64),
        )

    # ---------------------------------------------------------------- internals

    def redact(self, text: str) -> str:
        """`text` cut to 300 characters, with any credential value ccxt holds replaced."""
        for key in _CREDENTIAL_KEYS:
            value = getattr(self.exchange, key, None)
            if isinstance(value, str) and len(value) >= 4:
                text = text.replace(value, "<redacted>")
        return text[:_MESSAGE_LIMIT]

    def _next(self, symbol: str, what: str) -> int:
        value = self._counters.get((symbol, what), 0) + 1
        self._counters[(symbol, what)] = value
        return value


@dataclass(frozen=True)
class PollTask:
    """One request of a polling round: `endpoint` (one of `ENDPOINTS`) for a ccxt symbol."""

    symbol: str
    endpoint: str
    limit: int | None = None
    timeframe: str = "1m"

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; allowed: {', '.join(ENDPOINTS)}")


@dataclass(frozen=True)
class RestError:
    """A request that failed: the task, ccxt's error class (or "invalid_response"), message."""

    symbol: str
    endpoint: str
    kind: str
    message: str
    ts_recv: int


@dataclass(frozen=True)
class PollRound:
    """What one round produced: one MarketChunk per symbol that answered, and the failures."""

    chunks: list[MarketChunk]
    errors: list[RestError]


@dataclass
class _Collected:
    trades: list[TradeColumns] = field(default_factory=list)
    snapshots: list[BookSnapshotColumns] = field(default_factory=list)
    klines: list[KlineColumns] = field(default_factory=list)
    marks: list[MarkPriceColumns] = field(default_factory=list)


def _concat(parts: list[Any], empty: Any) -> Any:
    if not parts:
        return empty
    if len(parts) == 1:
        return parts[0]
    columns = [part.as_dict() for part in parts]
    return type(parts[0])(**{key: np.concatenate([c[key] for c in columns]) for key in columns[0]})


class RestPoller:
    """Polls `tasks` through one adapter, round after round, `interval_s` apart (start to start).

    Requests go one at a time through the adapter's ccxt exchange, whose limiter spaces them
    (a round that takes longer than the interval is followed at once by the next). A failed
    request is logged, counted in `stats` and kept in `errors` (the latest `max_errors_kept`);
    it never stops the poller. Trades already delivered by an earlier round (id not above the
    last delivered id of the symbol) are left out and counted as "repeated_trades". Chunks have
    the adapter's ATS symbols and a per-symbol `sequence`.
    """

    def __init__(
        self,
        adapter: CcxtRestAdapter,
        tasks: Sequence[PollTask],
        interval_s: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        max_errors_kept: int = 1000,
    ) -> None:
        if not tasks:
            raise ValueError("RestPoller needs at least one PollTask")
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.adapter = adapter
        self.tasks = list(tasks)
        self.interval_s = interval_s
        self.errors: deque[RestError] = deque(maxlen=max_errors_kept)
        self.stats: dict[str, int] = dict.fromkeys(
            ("rounds", "requests", "errors", "trades", "repeated_trades", "snapshots", "klines",
             "marks"), 0)
        self._sleep = sleep
        self._monotonic = monotonic
        self._sequences: dict[str, int] = {}
        self._last_trade_id: dict[str, int] = {}

    def poll_once(self) -> PollRound:
        """Run every task once, in order; one MarketChunk per symbol that returned rows."""
        collected: dict[str, _Collected] = {}
        errors: list[RestError] = []
        for task in self.tasks:
            self.stats["requests"] += 1
            try:
                symbol = self.adapter.ats_symbol(task.symbol)
                self._run(task, symbol, collected.setdefault(symbol, _Collected()))
            except ccxt.BaseError as error:
                errors.append(self._error(task, type(error).__name__, str(error)))
            except (ValueError, TypeError, KeyError, IndexError) as error:
                errors.append(self._error(task, "invalid_response", repr(error)))
        self.stats["rounds"] += 1
        chunks = []
        for symbol, parts in collected.items():
            if not (parts.trades or parts.snapshots or parts.klines or parts.marks):
                continue
            sequence = self._sequences.get(symbol, 0)
            self._sequences[symbol] = sequence + 1
            chunks.append(MarketChunk(
                symbol=symbol,
                sequence=sequence,
                trades=_concat(parts.trades, TradeColumns.empty()),
                snapshots=_concat(parts.snapshots, BookSnapshotColumns.empty()),
                klines=_concat(parts.klines, KlineColumns.empty()),
                marks=_concat(parts.marks, MarkPriceColumns.empty()),
            ))
        return PollRound(chunks, errors)

    def run(
        self, rounds: int | None = None, stop: Callable[[], bool] | None = None
    ) -> Iterator[MarketChunk]:
        """Yield the chunks of round after round until `rounds` are done or `stop()` is true."""
        done = 0
        while (rounds is None or done < rounds) and not (stop is not None and stop()):
            started = self._monotonic()
            yield from self.poll_once().chunks
            done += 1
            if rounds is not None and done >= rounds:
                return
            remaining = self.interval_s - (self._monotonic() - started)
            if remaining > 0:
                self._sleep(remaining)

    def _run(self, task: PollTask, symbol: str, parts: _Collected) -> None:
        adapter = self.adapter
        if task.endpoint == "trades":
            trades = adapter.fetch_trades(task.symbol, limit=task.limit)
            last = self._last_trade_id.get(symbol)
            if last is not None and len(trades):
                fresh = np.flatnonzero(trades.trade_id > last)
                self.stats["repeated_trades"] += len(trades) - len(fresh)
                trades = trades.take(fresh)
            if len(trades):
                self._last_trade_id[symbol] = int(trades.trade_id.max())
            self.stats["trades"] += len(trades)
            parts.trades.append(trades)
        elif task.endpoint == "order_book":
            parts.snapshots.append(adapter.fetch_order_book(task.symbol, task.limit))
            self.stats["snapshots"] += 1
        elif task.endpoint == "ohlcv":
            klines = adapter.fetch_ohlcv(task.symbol, task.timeframe, None, task.limit)
            self.stats["klines"] += len(klines)
            parts.klines.append(klines)
        else:
            parts.marks.append(adapter.fetch_funding_rate(task.symbol))
            self.stats["marks"] += 1

    def _error(self, task: PollTask, kind: str, message: str) -> RestError:
        error = RestError(task.symbol, task.endpoint, kind, self.adapter.redact(message),
                          self.adapter.clock())
        self.stats["errors"] += 1
        self.errors.append(error)
        log.warning("REST %s %s failed (%s): %s", task.endpoint, task.symbol, kind, error.message)
        return error
