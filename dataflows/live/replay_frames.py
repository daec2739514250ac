"""Raw captures loaded as one market timeline for the loopback replay server.

The captures are the project's raw files, one frame per line, `<receive time ns> <frame>` (read
with `dataflows.capture.read_capture`), given in market order (e.g. day 1, then day 2). Every
line becomes one `TimelineFrame`, in file order:
- a combined-stream envelope `{"stream": "<name>", "data": {...}}` is served exactly as recorded
  to combined-stream clients, and its `data` bytes (cut out of the line, not re-encoded) to raw
  `/ws/` clients;
- a bare stream payload (a capture recorded from a raw `/ws/` stream) is given its stream name
  from the event: `<symbol>@trade`, `@aggTrade`, `@depth` (the diff speed is not in the payload),
  `@bookTicker` (the spot bookTicker has no `e`: keys u, s, b, B, a, A), `@markPrice`;
- a REST depth snapshot (bare `{"lastUpdateId", "bids", "asks"}`, or the live feed's REST envelope
  `{"rest": ".../depth", "symbol": ..., "data": ...}`) is not sent on any socket: it seeds the
  server's order book. A bare snapshot names no symbol; it belongs to the captures' only symbol.
- the live feed's other REST envelopes and its feed events are not market data: they are counted
  in `LoadedCaptures.skipped` and not replayed.

Stream time is the receive time minus the first frame's, never decreasing (a line stamped
earlier than the one before it keeps the earlier line's time). A line that cannot be placed on a
stream, or that `read_capture` rejects, is listed in `LoadedCaptures.problems` with its file and
line: the server reports it and replays the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from dataflows.capture import read_capture

TRADE = "trade"
AGG_TRADE = "aggTrade"
DEPTH = "depth"
BOOK_TICKER = "bookTicker"
MARK_PRICE = "markPrice"
OTHER = "other"
SNAPSHOT = "snapshot"

_ENVELOPE_HEAD = b'{"stream":"'
_DATA_KEY = b',"data":'
_BARE_EVENTS = {
    "trade": ("trade", TRADE),
    "aggTrade": ("aggTrade", AGG_TRADE),
    "depthUpdate": ("depth", DEPTH),
    "bookTicker": ("bookTicker", BOOK_TICKER),
    "markPriceUpdate": ("markPrice", MARK_PRICE),
}
_SPOT_TICKER_KEYS = frozenset({"u", "s", "b", "B", "a", "A"})


class TimelineFrame(NamedTuple):
    """One capture line placed on the market timeline.

    `position` is the frame's place on the timeline (snapshots included), `combined` what a
    combined-stream client receives, `raw` what a raw-stream client receives (`combined` is
    empty for snapshots, whose `raw` is the snapshot JSON). `source` names the line
    ("<file>:line N").
    """

    position: int
    offset_ns: int
    ts_recv: int
    source: str
    kind: str
    symbol: str
    stream: str
    combined: bytes
    raw: bytes


@dataclass
class LoadedCaptures:
    """The timeline of a set of captures and what was learnt while loading them."""

    frames: list[TimelineFrame] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    stream_counts: Counter[str] = field(default_factory=Counter)

    @property
    def symbols(self) -> list[str]:
        return sorted({frame.symbol for frame in self.frames if frame.symbol})

    @property
    def socket_frames(self) -> int:
        """Frames that go out on sockets (everything but snapshots)."""
        return sum(self.stream_counts.values())


def stream_kind(stream: str) -> tuple[str, str]:
    """(kind, upper-case symbol) of a combined-stream name such as `btcusdt@depth@100ms`."""
    symbol, _, rest = stream.partition("@")
    if rest == "depth" or rest.startswith("depth@"):
        kind = DEPTH
    elif rest in (TRADE, AGG_TRADE, BOOK_TICKER):
        kind = rest
    elif rest == "markPrice" or rest.startswith("markPrice@"):
        kind = MARK_PRICE
    else:
        kind = OTHER
    return kind, symbol.upper()


def _split_envelope(frame: bytes) -> tuple[str, bytes] | None:
    """(stream, data bytes) of a canonical envelope, cut out without decoding the JSON."""
    if not frame.startswith(_ENVELOPE_HEAD) or not frame.endswith(b"}"):
        return None
    end = frame.find(b'"', len(_ENVELOPE_HEAD))
    if end < 0 or not frame.startswith(_DATA_KEY, end + 1):
        return None
    try:
        stream = frame[len(_ENVELOPE_HEAD) : end].decode("ascii")
    except UnicodeDecodeError:
        return None
    return stream, frame[end + 1 + len(_DATA_KEY) : -1]


def _bare_stream(data: dict[str, Any]) -> str | None:
    """The stream a bare payload was recorded from, when its fields tell."""
    symbol = data.get("s")
    if type(symbol) is not str or not symbol:
        return None
    event = data.get("e")
    if type(event) is str and event in _BARE_EVENTS:
        return f"{symbol.lower()}@{_BARE_EVENTS[event][0]}"
    if event is None and _SPOT_TICKER_KEYS <= data.keys():
        return f"{symbol.lower()}@bookTicker"
    return None


class _Loader:
    """Turns capture lines into timeline frames, keeping offsets monotonic."""

    def __init__(self) -> None:
        self.loaded = LoadedCaptures()
        self.first_ts: int | None = None
        self.last_offset = 0
        self.kinds: dict[str, tuple[str, str]] = {}

    def add(self, where: str, ts_recv: int, line: bytes) -> None:
        envelope = _split_envelope(line)
        if envelope is not None:
            stream, raw = envelope
            self._append(where, ts_recv, stream, line, raw)
            return
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            self.loaded.problems.append(f"{where}: not JSON ({error}); not replayed")
            return
        if type(message) is not dict:
            self.loaded.problems.append(
                f"{where}: a JSON {type(message).__name__}, not a stream frame; not replayed"
            )
            return
        named = message.get("stream")
        if type(named) is str and "data" in message:
            self._append(where, ts_recv, named, line, orjson.dumps(message["data"]))
        elif "rest" in message:
            self._rest(where, ts_recv, message, line)
        elif "feed" in message:
            self.loaded.skipped["feed events"] += 1
        elif {"lastUpdateId", "bids", "asks"} <= message.keys():
            self._append_snapshot(where, ts_recv, "", line)
        elif "result" in message and "id" in message:
            self.loaded.skipped["subscription replies"] += 1
        else:
            bare = _bare_stream(message)
            if bare is None:
                keys = ", ".join(sorted(message)[:8])
                self.loaded.problems.append(
                    f"{where}: no stream can be told from the fields ({keys}); not replayed"
                )
                return
            envelope_bytes = b'{"stream":"%s","data":%s}' % (bare.encode(), line)
            self._append(where, ts_recv, bare, envelope_bytes, line)

    def _rest(self, where: str, ts_recv: int, message: dict[str, Any], line: bytes) -> None:
        path = message.get("rest")
        symbol = message.get("symbol")
        data = message.get("data")
        if type(path) is str and path.endswith("/depth") and type(symbol) is str \
                and type(data) is dict:
            self._append_snapshot(where, ts_recv, symbol.upper(), orjson.dumps(data))
        else:
            self.loaded.skipped[f"REST answers {path}"] += 1

    def _offset(self, ts_recv: int) -> int:
        if self.first_ts is None:
            self.first_ts = ts_recv
        self.last_offset = max(self.last_offset, ts_recv - self.first_ts)
        return self.last_offset

    def _append(self, where: str, ts_recv: int, stream: str, combined: bytes, raw: bytes) -> None:
        known = self.kinds.get(stream)
        if known is None:
            known = self.kinds[stream] = stream_kind(stream)
        kind, symbol = known
        self.loaded.stream_counts[stream] += 1
        self.loaded.frames.append(TimelineFrame(
            len(self.loaded.frames), self._offset(ts_recv), ts_recv, where, kind, symbol, stream,
            combined, raw,
        ))

    def _append_snapshot(self, where: str, ts_recv: int, symbol: str, data: bytes) -> None:
        self.loaded.frames.append(TimelineFrame(
            len(self.loaded.frames), self._offset(ts_recv), ts_recv, where, SNAPSHOT, symbol, "",
            b"", data,
        ))

    def finish(self) -> LoadedCaptures:
        """Give bare snapshots the captures' only symbol (or list them as problems); index."""
        symbols = self.loaded.symbols
        kept: list[TimelineFrame] = []
        for frame in self.loaded.frames:
            if frame.kind == SNAPSHOT and not frame.symbol:
                if len(symbols) != 1:
                    self.loaded.problems.append(
                        f"{frame.source}: a depth snapshot without a symbol, and the captures "
                        f"hold {len(symbols)} symbols ({', '.join(symbols) or 'none'}); not used"
                    )
                    continue
                frame = frame._replace(symbol=symbols[0])
            if frame.position != len(kept):
                frame = frame._replace(position=len(kept))
            kept.append(frame)
        self.loaded.frames = kept
        return self.loaded


def load_captures(paths: Sequence[Path]) -> LoadedCaptures:
    """Load capture files, in the order given, as one timeline.

    Raises FileNotFoundError naming a missing file, ValueError when nothing can be replayed.
    """
    if not paths:
        raise ValueError("the replay server needs at least one capture file")
    loader = _Loader()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"capture {path} does not exist")
        for chunk, letters in read_capture(path):
            loader.loaded.problems.extend(f"{letter.source}: {letter.detail}" for letter in letters)
            for line_number, ts_recv, line in zip(
                chunk.line_numbers, chunk.ts_recv, chunk.frames, strict=True
            ):
                loader.add(f"{path.name}:line {line_number}", ts_recv, line)
    loaded = loader.finish()
    if not loaded.stream_counts:
        names = ", ".join(Path(path).name for path in paths)
        raise ValueError(f"captures {names} hold no stream frame to replay")
    return loaded


def frame_ids(frame: TimelineFrame) -> dict[str, int]:
    """The ids that identify a frame in a fault record: U/u/pu of depth diffs, t of trades, a of
    agg trades, u of book tickers, E otherwise; empty when the payload is not an object."""
    try:
        data = orjson.loads(frame.raw)
    except orjson.JSONDecodeError:
        return {}
    if type(data) is not dict:
        return {}
    names = {
        DEPTH: ("U", "u", "pu"), TRADE: ("t",), AGG_TRADE: ("a",), BOOK_TICKER: ("u",),
        SNAPSHOT: ("lastUpdateId",),
    }.get(frame.kind, ("E",))
    return {name: data[name] for name in names if type(data.get(name)) is int}
