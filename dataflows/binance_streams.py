"""Classification of Binance frames: which kind of event a decoded frame is, and its symbol.

Combined-stream envelopes `{"stream": "<name>", "data": ...}` are classified by the stream name
(`stream_kind`): `<sym>@trade`, `@aggTrade`, `@bookTicker`, `@depth[@0ms|@100ms|@250ms|@500ms|
@1000ms]` (diff depth), `@depth<5|10|20>[@speed]` (partial book), `@markPrice[@1s]`,
`@kline_<interval>[@<utc offset>]`, and the all-market `!markPrice@arr[@1s]` (data is a list)
and `!bookTicker`. The data's `s` names the symbol when present and must agree with the stream's.

Bare frames are classified by their `e` field, or by their shape when they have none: a list of
markPriceUpdates, the live feed's REST envelopes (`rest`) and feed events (`feed`), subscription
replies (`result` and `id`: control frames), error replies (`error` or `code` with `id`: a
"venue_error"), depth snapshots (`lastUpdateId`) and spot bookTickers (u, b, A).

Anything else raises `FrameError("unknown_stream")` naming the stream, event type or keys.
"""

from __future__ import annotations

import re
from typing import Any

from dataflows.binance_fields import FrameError
from dataflows.binance_frames import KLINE_INTERVAL_NS
from dataflows.binance_rest import envelope_symbol

TRADE = "trade"
AGG_TRADE = "aggTrade"
QUOTE = "bookTicker"
DEPTH = "depth"
PARTIAL_DEPTH = "partial_depth"
SNAPSHOT = "snapshot"
MARK = "markPrice"
MARK_ARRAY = "markPrice_array"
KLINE = "kline"
REST = "rest"
FEED = "feed"
CONTROL = "control"

_DEPTH_SPEEDS = frozenset({"", "@0ms", "@100ms", "@250ms", "@500ms", "@1000ms"})
_PARTIAL_LEVELS = frozenset({"5", "10", "20"})
_TIMEZONE = re.compile(r"[+-]\d{1,2}(:\d{2})?")
_BARE_KINDS = {
    "trade": TRADE, "aggTrade": AGG_TRADE, "depthUpdate": DEPTH, "bookTicker": QUOTE,
    "markPriceUpdate": MARK, "kline": KLINE,
}
LIST_KINDS = frozenset({MARK_ARRAY, REST})  # frames whose rows are items of a list


def stream_kind(stream: str) -> tuple[str | None, str]:
    """(frame kind or None if unknown, upper-case symbol or "" for all-market streams) of a
    combined-stream name such as 'btcusdt@depth@100ms'."""
    symbol, _, rest = stream.partition("@")
    if symbol.startswith("!"):
        if symbol == "!markPrice" and rest in ("arr", "arr@1s"):
            return MARK_ARRAY, ""
        if symbol == "!bookTicker" and not rest:
            return QUOTE, ""
        return None, ""
    kind: str | None = None
    if rest == "trade":
        kind = TRADE
    elif rest == "aggTrade":
        kind = AGG_TRADE
    elif rest == "bookTicker":
        kind = QUOTE
    elif rest.startswith("depth"):
        levels, at, speed = rest[5:].partition("@")
        if at + speed in _DEPTH_SPEEDS:
            kind = DEPTH if not levels else PARTIAL_DEPTH if levels in _PARTIAL_LEVELS else None
    elif rest in ("markPrice", "markPrice@1s"):
        kind = MARK
    elif rest.startswith("kline_"):
        interval, at, zone = rest[6:].partition("@")
        if interval in KLINE_INTERVAL_NS and (not at or _TIMEZONE.fullmatch(zone)):
            kind = KLINE
    return kind, symbol.upper() if kind and symbol else ""


class FrameClassifier:
    """Classifies decoded frames; caches the kind of each stream name it has seen."""

    def __init__(self) -> None:
        self._stream_kinds: dict[str, tuple[str | None, str]] = {}

    def classify(self, message: object) -> tuple[str, str | None, Any]:
        """(kind, upper-case symbol, data) of a decoded frame.

        The symbol is None for bare snapshots (the parser attributes them), list frames (each
        item names its own) and control frames; `data` is the object the kind's reader takes.
        """
        if type(message) is not dict:
            if type(message) is list and message and type(message[0]) is dict \
                    and message[0].get("e") == "markPriceUpdate":
                return MARK_ARRAY, None, message
            raise FrameError(
                "unknown_stream", f"frame is a JSON {type(message).__name__}, not an object"
            )
        stream = message.get("stream")
        if stream is not None:
            known = self._stream_kinds.get(stream) if type(stream) is str else None
            if known is None:
                known = self._cache_stream_kind(stream)
            kind, stream_symbol = known
            data = message.get("data")
            if kind is not None and kind != MARK_ARRAY and type(data) is dict:
                symbol = data.get("s")
                if symbol == stream_symbol and symbol:  # the common case: already upper case
                    return kind, symbol, data
                return kind, _data_symbol(stream, stream_symbol, symbol, kind), data
            return _unusual_stream(stream, kind, data)
        return _classify_bare(message)

    def _cache_stream_kind(self, stream: object) -> tuple[str | None, str]:
        if type(stream) is not str:
            return None, ""
        known = self._stream_kinds[stream] = stream_kind(stream)
        return known


def _data_symbol(stream: str, stream_symbol: str, symbol: object, kind: str) -> str:
    """The symbol of an enveloped frame whose `s` is absent or not the stream's in upper case."""
    if symbol is None:
        symbol = stream_symbol
    if type(symbol) is not str or not symbol:
        raise FrameError("missing_field", f"{kind} frame has no symbol 's'")
    if stream_symbol and symbol.upper() != stream_symbol:
        raise FrameError(
            "invalid_field", f"stream {stream!r:.80} carries symbol 's'={symbol!r:.40}"
        )
    return symbol.upper()


def _unusual_stream(stream: object, kind: str | None, data: object) -> tuple[str, None, Any]:
    """An all-market mark price list, or the error for an unknown stream or a bad `data`."""
    if kind is None:
        event = data.get("e") if type(data) is dict else None
        named = f" (event {event!r:.40})" if event is not None else ""
        raise FrameError("unknown_stream", f"unknown stream {stream!r:.80}{named}")
    if kind == MARK_ARRAY:
        if type(data) is not list:
            raise FrameError("invalid_field", f"{stream} data is not a list of updates")
        return kind, None, data
    raise FrameError("missing_field", f"envelope of {stream!r:.60} has no 'data' object")


def _classify_bare(data: dict[str, Any]) -> tuple[str, str | None, Any]:
    """Kind and symbol of a frame without a stream name (raw stream or the feed's own)."""
    event = data.get("e")
    if event is not None:
        kind = _BARE_KINDS.get(event) if type(event) is str else None
        if kind is None:
            raise FrameError("unknown_stream", f"unknown event type 'e'={event!r:.80}")
    elif "rest" in data:
        return REST, envelope_symbol(data, "REST envelope", required=False), data
    elif "feed" in data:
        return FEED, envelope_symbol(data, "feed event"), data
    elif "id" in data and "result" in data:
        return CONTROL, None, data
    elif "id" in data and ("error" in data or "code" in data):
        error = data.get("error", data)
        raise FrameError("venue_error", f"venue replied with an error: {error!r:.200}")
    elif "lastUpdateId" in data:
        return SNAPSHOT, None, data
    elif "u" in data and "b" in data and "A" in data:
        kind = QUOTE
    else:
        keys = ", ".join(list(data)[:8])
        raise FrameError("unknown_stream", f"frame with keys [{keys}] is no known event")
    symbol = data.get("s")
    if type(symbol) is not str or not symbol:
        raise FrameError("missing_field", f"{kind} frame has no symbol 's'")
    return kind, symbol.upper(), data
