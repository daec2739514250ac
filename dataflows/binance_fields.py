"""Readers of single Binance frame fields, and the clock estimate for frames without time.

Every reader checks one JSON value and returns it in the column type ATS stores (float, int64
nanoseconds, bool), or raises `FrameError` with the dead-letter reason and a detail naming the
field, its value and the frame kind (`what`):
- "missing_field": a required key is absent (`require`);
- "invalid_number": a numeric field that is not a decimal string or JSON number (a bool is
  not a number), an id or time that is not an integer or does not fit int64 nanoseconds;
- "invalid_field": a non-numeric field of the wrong type or shape (`flag`, `parse_levels`).
Binance sends prices and quantities as decimal strings; NaN, infinite or negative values that
read as numbers pass here and are judged by `dataflows.validate`.
"""

from __future__ import annotations

from typing import Any

from dataflows.capture import INT64_MAX

NS_PER_MS = 1_000_000
MS_MAX = INT64_MAX // NS_PER_MS  # largest millisecond time that fits in int64 nanoseconds


class FrameError(Exception):
    """A frame is bad: carries the dead-letter reason and a detail naming the field."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def is_int64(value: object) -> bool:
    """True for a JSON integer (not a bool) that fits a signed 64-bit column."""
    return type(value) is int and -INT64_MAX <= value <= INT64_MAX


def is_ms_time(value: object) -> bool:
    """True for an integer millisecond time whose nanosecond value fits int64."""
    return type(value) is int and 0 <= value <= MS_MAX


def require(data: dict[str, Any], keys: tuple[str, ...], what: str) -> list[Any]:
    """The values of `keys` in `data`; `FrameError("missing_field")` names the first absent."""
    try:
        return [data[key] for key in keys]
    except KeyError as missing:
        raise FrameError("missing_field", f"{what} has no {missing.args[0]!r}") from None


def number(value: object, name: str, what: str) -> float:
    """A decimal string or JSON number as float; anything else is "invalid_number"."""
    if type(value) is not bool:
        try:
            return float(value)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            pass
    raise FrameError("invalid_number", f"{what}: {name!r} is {value!r:.40}, not a number")


def funding_rate(value: object, name: str, what: str) -> float:
    """A funding rate; "" (delivery contracts have no funding) reads as NaN."""
    return float("nan") if value == "" else number(value, name, what)


def ms_to_ns(value: object, name: str, what: str) -> int:
    """A millisecond time field as int64 nanoseconds; else "invalid_number"."""
    if not is_ms_time(value):
        raise FrameError("invalid_number", f"{what}: {name!r} is {value!r:.40}, not a ms time")
    return value * NS_PER_MS  # type: ignore[operator]


def int64(value: object, name: str, what: str) -> int:
    """An integer id or count that fits int64; else "invalid_number"."""
    if not is_int64(value):
        raise FrameError("invalid_number", f"{what}: {name!r} is {value!r:.40}, not an int64")
    return value  # type: ignore[return-value]


def flag(value: object, name: str, what: str) -> bool:
    """A JSON boolean; anything else is "invalid_field"."""
    if type(value) is not bool:
        raise FrameError("invalid_field", f"{what}: {name!r} is {value!r:.40}, not a bool")
    return value


_LIST_ONLY = {list}


def parse_levels(levels: object, name: str, what: str) -> tuple[list[float], list[float]]:
    """Prices and quantities of a `[[price, qty], ...]` list; `FrameError` says what is wrong.

    The fast path is one loop (this runs for every level of every depth frame); a level that is
    not a two-item list, or an item that is not a number, sends it to the slow path, which
    names the level. A JSON `true`/`false` inside a level is read as 1/0 (not checked per value:
    too dear for what no venue sends).
    """
    if type(levels) is not list:
        raise FrameError(
            "invalid_field", f"{what}: {name!r} is {type(levels).__name__}, not a list of levels"
        )
    prices: list[float] = []
    qtys: list[float] = []
    try:
        for price, qty in levels:
            prices.append(float(price))
            qtys.append(float(qty))
        if not levels or {*map(type, levels)} == _LIST_ONLY:
            return prices, qtys
    except (ValueError, TypeError):
        pass
    for position, level in enumerate(levels):
        if type(level) is not list or len(level) != 2:
            raise FrameError(
                "invalid_field", f"{what}: {name!r} level {position} is {level!r:.80}, not [p, q]"
            )
        for value in level:
            number(value, f"{name}[{position}]", what)
    raise FrameError("invalid_field", f"{what}: {name!r} could not be read")  # pragma: no cover


class ExchangeClock:
    """Exchange time for frames that carry none (spot bookTicker, spot snapshots, feed events).

    `offset_ns` is the latest observed `E_ns - ts_recv` of the stream (0 before the first frame
    with `E`); an estimate is `ts_recv + offset_ns`. Estimated quote times are also raised to the
    previous estimated quote time of their symbol: the offset jitters by a few milliseconds, and
    quotes must not step backwards.
    """

    def __init__(self) -> None:
        self.offset_ns = 0
        self._last_quote_ns: dict[str, int] = {}

    def observe(self, event_ms: object, ts_recv: int) -> None:
        """Take the offset of a frame's `E` field; a bad `E` is "invalid_number"."""
        if not is_ms_time(event_ms):
            raise FrameError("invalid_number", f"'E' is {event_ms!r:.40}, not a ms time")
        self.offset_ns = event_ms * NS_PER_MS - ts_recv  # type: ignore[operator]

    def estimate(self, ts_recv: int) -> int:
        """Estimated exchange time of a frame received at `ts_recv`."""
        return ts_recv + self.offset_ns

    def estimate_quote(self, symbol: str, ts_recv: int) -> int:
        """Estimated exchange time of a quote of `symbol`, never below its previous one."""
        estimate = max(ts_recv + self.offset_ns, self._last_quote_ns.get(symbol, 0))
        self._last_quote_ns[symbol] = estimate
        return estimate
