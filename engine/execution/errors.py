"""The execution error taxonomy: what a failure means for the order, never what the key is.

ccxt exceptions are mapped to a `VenueError` with a `category`:
- "network": NetworkError, RequestTimeout, ExchangeNotAvailable (5xx) and DDoSProtection /
  RateLimitExceeded (418/429). Reads retry these with backoff; for a create or a cancel the
  outcome is unknown (the venue may have applied it): the order becomes UNKNOWN and is resolved
  by querying its client order id, never by resubmitting.
- "clock": InvalidNonce (-1021, timestamp outside recvWindow): the venue refused the request
  before acting. Reads retry it; a create with it is REJECTED.
- "rejected": InvalidOrder, InsufficientFunds, BadRequest, BadSymbol, OperationRejected and
  Binance rejection codes (-2019 margin, -2010, -2022 reduce-only, -4164 notional, -1111, ...)
  that ccxt reports as plain ExchangeError on non-Binance hosts. The order is REJECTED with reason.
- "not_found": OrderNotFound (-2011, -2013): the venue does not know the order (any more).
- "auth": AuthenticationError, PermissionDenied, AccountSuspended: fail closed, never retried.
- "exchange": anything else from ccxt; treated like "network" for creates (unknown outcome).
The message is rebuilt from the error class and Binance's code and msg only, then stripped of the
credentials and cut to 300 characters; the ccxt exception is not chained, so neither its text
(URLs with signatures) nor its traceback can carry a key.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_BINANCE_ERROR = re.compile(r'"code"\s*:\s*(-?\d+)\s*,\s*"msg"\s*:\s*"([^"]{0,200})"')
_REJECT_CODES = {-1013, -1102, -1111, -1116, -1121, -2010, -2019, -2022, -4003, -4164, -5022}
_NOT_FOUND_CODES = {-2011, -2013}
MESSAGE_LIMIT = 300


class ExecutionError(Exception):
    """Base of every error live execution raises."""


class TradingBlockedError(ExecutionError):
    """Trading is not allowed now: not reconciled, HALTED, or unresolved orders."""


class UnsafeApiKeyError(ExecutionError):
    """The API key has a permission trading must never hold (withdrawals)."""


class VenueError(ExecutionError):
    """A venue call failed; `category` says what it means (module docs), `code` Binance's code."""

    def __init__(self, category: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.category = category
        self.code = code

    def __reduce__(self) -> tuple[type[VenueError], tuple[str, str, int | None]]:
        """Picklable with its category and code (it crosses Ray from the ExecutionActor)."""
        return (type(self), (self.category, str(self), self.code))


def _category(error: Exception, code: int | None) -> str:
    import ccxt  # here, so importing the error classes does not load ccxt

    if isinstance(error, ccxt.OrderNotFound) or code in _NOT_FOUND_CODES:
        return "not_found"
    if isinstance(error, ccxt.AuthenticationError | ccxt.PermissionDenied
                  | ccxt.AccountSuspended):
        return "auth"
    if isinstance(error, ccxt.InvalidNonce) or code == -1021:
        return "clock"
    if isinstance(error, ccxt.NetworkError):
        return "network"
    if isinstance(error, ccxt.InvalidOrder | ccxt.InsufficientFunds | ccxt.BadRequest
                  | ccxt.BadSymbol | ccxt.OperationRejected) or code in _REJECT_CODES:
        return "rejected"
    return "exchange"


def wrap_ccxt_error(error: Exception, operation: str,
                    redact: Callable[[str], str]) -> VenueError:
    """A `VenueError` for `error` (raised by ccxt during `operation`) that cannot leak secrets."""
    found = _BINANCE_ERROR.search(str(error))
    code = int(found.group(1)) if found else None
    category = _category(error, code)
    detail = f" {found.group(1)} {found.group(2)}" if found else ""
    message = redact(f"{operation}: {category} ({type(error).__name__}{detail})")
    return VenueError(category, message[:MESSAGE_LIMIT], code)
