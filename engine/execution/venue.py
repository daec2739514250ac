"""One ccxt Binance client for trading: built safely, every call wrapped (see `errors`).

- ccxt.binanceusdm (USD-M futures) or ccxt.binance (spot), `enableRateLimit=True` always,
  ccxt's own retries off (`maxRetriesOnFailure=0`: nothing is resent behind our back);
- environment "testnet" calls `set_sandbox_mode(True)` for spot; for USD-M, whose testnet ccxt
  4.5.90 no longer signs for, it enables Binance demo trading; "live" uses production URLs;
  `urls` overrides are applied last (tests point them at a loopback server);
- the key and secret come from the environment variables named in the config; they live only in
  the ccxt object, never in repr, logs (ccxt's debug log goes through a redacting logger) or
  exception messages;
- reads retry "network" failures with exponential backoff; `create` and `cancel` never retry.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import ccxt

from engine.execution.config import ExecutionConfig
from engine.execution.errors import ExecutionError, VenueError, wrap_ccxt_error

log = logging.getLogger(__name__)


class _RedactingLogger:
    """Stands in for ccxt's logger: formats the record, removes credentials, forwards it."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        self._redact = redact
        self._log = logging.getLogger("engine.execution.ccxt")

    def _emit(self, level: int, message: object, *args: object) -> None:
        if self._log.isEnabledFor(level):
            text = str(message) % args if args else str(message)
            self._log.log(level, "%s", self._redact(text))

    def debug(self, message: object, *args: object) -> None:
        self._emit(logging.DEBUG, message, *args)

    def info(self, message: object, *args: object) -> None:
        self._emit(logging.INFO, message, *args)

    def warning(self, message: object, *args: object) -> None:
        self._emit(logging.WARNING, message, *args)

    def error(self, message: object, *args: object) -> None:
        self._emit(logging.ERROR, message, *args)


class VenueClient:
    """The ccxt calls live execution makes, with the error taxonomy applied."""

    def __init__(self, config: ExecutionConfig,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        key = os.environ.get(config.api_key_env)
        secret = os.environ.get(config.api_secret_env)
        if not key or not secret:
            raise ExecutionError(
                f"environment variables {config.api_key_env} and {config.api_secret_env} must "
                "hold the API key and secret"
            )
        self._credentials = (key, secret)
        self.config = config
        self._sleep = sleep
        exchange_class = ccxt.binanceusdm if config.venue == "binance-usdm" else ccxt.binance
        options: dict[str, Any] = {"fetchCurrencies": False, "maxRetriesOnFailure": 0}
        if config.venue == "binance-usdm":
            options["fetchMarkets"] = {"types": ["linear"]}
        self.exchange: Any = exchange_class({
            "enableRateLimit": True, "timeout": config.timeout_ms, "apiKey": key,
            "secret": secret, "options": options,
        })
        self.exchange.logger = _RedactingLogger(self.redact)
        if config.environment == "testnet":
            if config.venue == "binance-usdm":
                self.exchange.enable_demo_trading(True)
            else:
                self.exchange.set_sandbox_mode(True)
        elif config.environment == "demo":
            self.exchange.enable_demo_trading(True)
        if config.urls:
            self.exchange.urls["api"] = {**self.exchange.urls["api"], **config.urls}
        session = getattr(self.exchange, "session", None)
        if session is not None:
            session.trust_env = False  # no proxy or netrc credentials from the environment
        if not self.exchange.enableRateLimit:
            raise ExecutionError("the ccxt rate limiter must stay on")

    def __repr__(self) -> str:
        return (f"VenueClient(venue={self.config.venue}, environment={self.config.environment}, "
                "credentials=<redacted>)")

    @property
    def is_futures(self) -> bool:
        return self.config.venue == "binance-usdm"

    def redact(self, text: str) -> str:
        """`text` with the key and the secret replaced."""
        for value in self._credentials:
            if value:
                text = text.replace(value, "<redacted>")
        return text

    # ---------------------------------------------------------------- calls

    def _call(self, operation: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except ccxt.BaseError as error:
            wrapped = wrap_ccxt_error(error, operation, self.redact)
        except Exception as error:  # requests/urllib3 errors ccxt did not translate
            wrapped = VenueError("network", self.redact(f"{operation}: network "
                                                        f"({type(error).__name__})"))
        raise wrapped

    def read(self, operation: str, function: Callable[..., Any], *args: Any) -> Any:
        """A read: retried with backoff while its failure is a network one."""
        for attempt in range(self.config.read_retries + 1):
            try:
                return self._call(operation, function, *args)
            except VenueError as error:
                if error.category not in ("network", "exchange", "clock") or (
                        attempt == self.config.read_retries):
                    raise
                log.warning("%s; retry %d of %d", error, attempt + 1, self.config.read_retries)
                self._sleep(self.config.retry_backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def load_markets(self) -> None:
        self.read("load_markets", self.exchange.load_markets)

    def withdrawals_enabled(self) -> bool:
        """Whether the key may withdraw (spot apiRestrictions, which covers every key)."""
        answer = self.read("api_restrictions", self.exchange.sapiGetAccountApiRestrictions)
        value = answer.get("enableWithdrawals") if isinstance(answer, dict) else None
        if not isinstance(value, bool):
            raise VenueError("exchange", "api_restrictions: no enableWithdrawals in the answer")
        return value

    def to_precision(self, symbol: str, quantity: float,
                     price: float | None) -> tuple[float, float | None]:
        """Quantity and price as the venue will take them (ccxt rounds them on create), so the
        local order matches the venue's; a quantity that rounds to 0 is a VenueError
        "rejected" (nothing is sent)."""
        try:
            rounded = float(self.exchange.amount_to_precision(symbol, quantity))
        except ccxt.InvalidOrder:
            rounded = 0.0
        if not rounded > 0:
            raise VenueError("rejected",
                             f"{symbol}: quantity {quantity} is below the venue's lot size")
        if price is not None:
            price = float(self.exchange.price_to_precision(symbol, price))
        return rounded, price

    def create(self, symbol: str, order_type: str, side: str, amount: float,
               price: float | None, params: dict[str, Any]) -> dict[str, Any]:
        """Send one order; never retried (an error may hide an order the venue accepted)."""
        return dict(self._call("create_order", self.exchange.create_order, symbol, order_type,
                               side, amount, price, params))

    def cancel(self, symbol: str, client_order_id: str, trigger: bool) -> dict[str, Any]:
        params: dict[str, Any] = (
            {"clientOrderId": client_order_id, "trigger": True} if trigger
            else {"origClientOrderId": client_order_id})
        return dict(self._call("cancel_order", self.exchange.cancel_order, None, symbol, params))

    def cancel_all(self, symbol: str) -> None:
        self._call("cancel_all_orders", self.exchange.cancel_all_orders, symbol)
        if self.is_futures:
            self._call("cancel_all_orders", self.exchange.cancel_all_orders, symbol,
                       {"trigger": True})

    def fetch_order(self, symbol: str, client_order_id: str, trigger: bool) -> dict[str, Any]:
        params: dict[str, Any] = (
            {"clientOrderId": client_order_id, "trigger": True} if trigger
            else {"origClientOrderId": client_order_id})
        return dict(self.read("fetch_order", self.exchange.fetch_order, None, symbol, params))

    def open_orders(self, symbol: str) -> list[dict[str, Any]]:
        orders = list(self.read("fetch_open_orders", self.exchange.fetch_open_orders, symbol))
        if self.is_futures:
            triggers = self.read("fetch_open_orders", self.exchange.fetch_open_orders, symbol,
                                 None, None, {"trigger": True})
            orders.extend({**order, "trigger": True} for order in triggers)
        return [dict(order) for order in orders]

    def positions(self, symbols: list[str]) -> dict[str, float]:
        """Signed position size (base units) per symbol; spot has none."""
        if not self.is_futures:
            return {}
        sizes = dict.fromkeys(symbols, 0.0)
        for position in self.read("fetch_positions", self.exchange.fetch_positions, symbols):
            contracts = float(position.get("contracts") or 0.0)
            size = contracts * float(position.get("contractSize") or 1.0)
            if position.get("symbol") in sizes:
                sizes[position["symbol"]] = -size if position.get("side") == "short" else size
        return sizes

    def balances(self) -> dict[str, float]:
        """Total balance per asset (non-zero only)."""
        balance = self.read("fetch_balance", self.exchange.fetch_balance)
        totals = balance.get("total") or {}
        return {asset: float(value) for asset, value in totals.items() if value}

    def countdown_cancel_all(self, symbol: str, countdown_ms: int) -> None:
        """Binance USD-M countdown cancel-all: the venue cancels the symbol's orders unless
        refreshed within `countdown_ms` (0 switches it off)."""
        market_id = self.exchange.market(symbol)["id"]
        self._call("countdown_cancel_all", self.exchange.fapiPrivatePostCountdownCancelAll,
                   {"symbol": market_id, "countdownTime": countdown_ms})
