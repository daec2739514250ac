"""A quick pre-scan of raw captures: which symbols they hold and how many lines.

The supervisor must know every symbol before the first risk decision (cross-symbol ordering),
and the progress bar wants a total. A byte-level regex pass is enough for both, without decoding
JSON. The scan must name at least every symbol the parser (`dataflows.binance`) will make a chunk
for, or a run would meet a symbol it has no actor for; so each line is read the parser's way:

- a combined-stream frame: its stream name decides (`dataflows.binance.stream_kind`). A known
  per-symbol stream names its symbol (the parser dead-letters data naming another); the
  all-market streams `!markPrice@arr` and `!bookTicker` name theirs in every `"s"` field; an
  unknown stream names none (the parser dead-letters it without a symbol);
- a REST envelope or feed event of the live feed: every `"symbol"` field (the envelope's, and
  those of the items of an all-symbols response);
- a bare frame of a known event type: every `"s"` field; a bare spot bookTicker (no `"e"`): its
  `"s"`; bare depth snapshots name none (they go to the symbol hint or the only symbol).
"""

from __future__ import annotations

import re
from pathlib import Path

from dataflows.binance import stream_kind
from dataflows.capture import open_capture

_STREAM = re.compile(rb'"stream"\s*:\s*"([^"]{1,200})"')
_S = re.compile(rb'"s"\s*:\s*"([^"]{1,100})"')
_SYMBOL = re.compile(rb'"symbol"\s*:\s*"([^"]{1,100})"')
_EVENT = re.compile(rb'"e"\s*:\s*"([^"]{1,100})"')
_OWN_FRAME = re.compile(rb'"(?:rest|feed)"\s*:\s*"')
_U_KEY = re.compile(rb'"u"\s*:')
_A_KEY = re.compile(rb'"A"\s*:')
_KNOWN_EVENTS = frozenset(
    {b"trade", b"aggTrade", b"depthUpdate", b"bookTicker", b"markPriceUpdate", b"kline"}
)
_STREAM_HEAD = 200  # the stream name sits right after the receive time


def _stream_symbols(name: bytes, cache: dict[bytes, tuple[bool, bytes]]) -> tuple[bool, bytes]:
    """(known stream, its symbol or b"" for all-market streams), cached per stream name."""
    known = cache.get(name)
    if known is None:
        kind, symbol = stream_kind(name.decode("utf-8", "replace"))
        known = cache[name] = (kind is not None, symbol.encode())
    return known


def line_symbols(line: bytes, cache: dict[bytes, tuple[bool, bytes]]) -> list[bytes]:
    """Symbols (as found, any case) that the parser may attribute the frame of `line` to."""
    stream = _STREAM.search(line, 0, _STREAM_HEAD)
    if stream is not None:
        known, symbol = _stream_symbols(stream.group(1), cache)
        if not known:
            return []
        return [symbol] if symbol else _S.findall(line)
    if _OWN_FRAME.search(line):
        return _SYMBOL.findall(line)
    event = _EVENT.search(line)
    if event is not None:
        return _S.findall(line) if event.group(1) in _KNOWN_EVENTS else []
    if _U_KEY.search(line) and _A_KEY.search(line):
        named = _S.search(line)
        return [named.group(1)] if named else []
    return []


def scan_capture_symbols(path: Path) -> tuple[set[str], int]:
    """Symbols named by the frames of a capture file (upper case), and its line count."""
    symbols: set[bytes] = set()
    cache: dict[bytes, tuple[bool, bytes]] = {}
    lines = 0
    with open_capture(Path(path)) as handle:
        for line in handle:
            lines += 1
            symbols.update(line_symbols(line, cache))
    return {symbol.decode("utf-8", "replace").upper() for symbol in symbols}, lines
