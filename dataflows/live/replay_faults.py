"""Fault injection for the loopback replay server: what to break, where, and the record of it.

A `FaultPlan` says how many faults of each kind to inject; `schedule_faults` places them on the
timeline with a RNG seeded by `FaultPlan.seed`, so the same captures and plan always give the
same faults on the same frames with the same junk bytes. Stream time is the capture's receive
time since its first frame, in seconds. The kinds, and what a client sees:

- `drop_connections_at_s`: at each stream time every client socket is aborted (TCP closed, no
  close frame), as a network failure would. Frames after it reach only clients that reconnect.
- `silences`: (start_s, duration_s) windows of stream time in which nothing goes out on the
  sockets: frames due then are lost to every client, and the server sends no keepalive pings.
  The timeline goes on, the REST book included, and the protocol layer still answers a client's
  own pings and subscription requests (the socket lives; the market data stops).
- `malformed_frames`: junk frames interleaved before randomly chosen frames and sent to the
  clients of that frame's stream, in a fixed mix of `MALFORMED_KINDS` (see `make_junk`).
- `depth_gaps`: depth diffs not sent (the server's own book still takes them).
- `duplicate_frames`: depth diffs and trades sent twice in a row.
- `reordered_pairs`: a depth diff held back and sent right after the next diff of its stream.

Gaps, duplicates and swaps never fall inside a silence, never overlap one another, and a pair
never spans a connection drop, so each one shows to a connected client exactly as recorded.
Every fault, when the timeline injects it, is appended to the server's `fault_log` as a
`FaultRecord` (also while no client is connected).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import orjson

from dataflows.live.replay_frames import (
    AGG_TRADE,
    BOOK_TICKER,
    DEPTH,
    MARK_PRICE,
    SNAPSHOT,
    TRADE,
    TimelineFrame,
)

MALFORMED_KINDS: tuple[str, ...] = (
    "truncated_json",   # a frame cut short
    "random_bytes",     # random bytes in a binary frame
    "invalid_utf8",     # a real frame with invalid UTF-8 inside, in a binary frame
    "wrong_types",      # a field of the wrong JSON type (price as number, id as string, ...)
    "missing_field",    # a real frame with one field removed
    "huge_number",      # an id or price far beyond int64 / float range
    "nan_string",       # NaN / Infinity prices or sizes, as strings or bare tokens
    "unknown_stream",   # a stream name (or event type) the venue does not have
    "deeply_nested",    # JSON nested thousands of levels deep
    "not_an_object",    # valid JSON that is not an object ([], null, 42, "x")
    "empty_frame",      # an empty or blank text frame
)
FAULT_KINDS = ("malformed", "depth_gap", "duplicate", "reorder", "connection_drop", "silence",
               "playback_restart")


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject; every count is placed deterministically from `seed`."""

    seed: int = 0
    drop_connections_at_s: tuple[float, ...] = ()
    silences: tuple[tuple[float, float], ...] = ()
    malformed_frames: int = 0
    depth_gaps: int = 0
    duplicate_frames: int = 0
    reordered_pairs: int = 0
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS

    def __post_init__(self) -> None:
        for name in ("malformed_frames", "depth_gaps", "duplicate_frames", "reordered_pairs"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"FaultPlan.{name} must be an integer >= 0, got {value!r}")
        for at in self.drop_connections_at_s:
            if not math.isfinite(at) or at < 0:
                raise ValueError(f"FaultPlan.drop_connections_at_s: {at!r} is not a time >= 0")
        for window in self.silences:
            if len(window) != 2 or not all(math.isfinite(x) and x >= 0 for x in window) \
                    or window[1] <= 0:
                raise ValueError(
                    f"FaultPlan.silences: {window!r} is not (start_s >= 0, duration_s > 0)"
                )
        unknown = sorted(set(self.malformed_kinds) - set(MALFORMED_KINDS))
        if unknown or not self.malformed_kinds:
            raise ValueError(
                f"FaultPlan.malformed_kinds: unknown {unknown} (allowed: {list(MALFORMED_KINDS)})"
            )

    @property
    def empty(self) -> bool:
        return not (self.drop_connections_at_s or self.silences or self.malformed_frames
                    or self.depth_gaps or self.duplicate_frames or self.reordered_pairs)


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault: its kind, stream time, the stream and ids of the frame concerned.

    `source` names the capture line of that frame ("<file>:line N"; empty for drops and
    silences) and `frame_index` its position on the timeline, snapshots included (-1 for drops
    and silences); `detail` names the malformed variant, the frame a held diff was sent after,
    a silence's length or a drop's count; `frame` is the junk bytes as a combined-stream client
    receives them (malformed only); `playback_pass` counts loops of `loop_playback`.
    """

    kind: str
    stream_time_s: float
    stream: str | None
    ids: Mapping[str, int]
    detail: str
    source: str = ""
    frame_index: int = -1
    frame: bytes | None = None
    playback_pass: int = 0


@dataclass(frozen=True)
class JunkFrame:
    """A fuzzed frame in its combined-stream and raw-stream forms."""

    variant: str
    combined: bytes
    raw: bytes
    binary: bool


@dataclass
class FaultSchedule:
    """Where the plan's faults fall on the timeline (frame positions and stream times in ns)."""

    gaps: frozenset[int] = frozenset()
    duplicates: frozenset[int] = frozenset()
    reorder_first: dict[int, int] = field(default_factory=dict)   # held frame -> its partner
    reorder_second: dict[int, int] = field(default_factory=dict)  # partner -> held frame
    junk: dict[int, list[JunkFrame]] = field(default_factory=dict)
    silences_ns: tuple[tuple[int, int], ...] = ()
    drops_ns: tuple[int, ...] = ()
    silenced_frames: tuple[int, ...] = ()  # frames lost to each silence


def _in_windows(offset_ns: int, windows: Sequence[tuple[int, int]]) -> bool:
    return any(start <= offset_ns < end for start, end in windows)


def schedule_faults(plan: FaultPlan, frames: Sequence[TimelineFrame]) -> FaultSchedule:
    """Place the plan's faults on the frames; ValueError names a count the captures cannot
    hold (e.g. more depth gaps than depth diffs outside silences)."""
    rng = random.Random(plan.seed)
    silences = tuple(
        (round(start * 1e9), round((start + duration) * 1e9)) for start, duration in plan.silences
    )
    drops = tuple(sorted(round(at * 1e9) for at in plan.drop_connections_at_s))
    socket_frames = [frame for frame in frames if frame.kind != SNAPSHOT]
    open_frames = [frame for frame in socket_frames if not _in_windows(frame.offset_ns, silences)]
    used: set[int] = set()

    depth_by_stream: dict[str, list[TimelineFrame]] = {}
    for frame in open_frames:
        if frame.kind == DEPTH:
            depth_by_stream.setdefault(frame.stream, []).append(frame)
    pairs = [
        (first.position, second.position)
        for diffs in depth_by_stream.values()
        for first, second in pairwise(diffs)
        if not any(first.offset_ns < drop <= second.offset_ns for drop in drops)
    ]
    rng.shuffle(pairs)
    reorder_first: dict[int, int] = {}
    for first, second in pairs:
        if len(reorder_first) == plan.reordered_pairs:
            break
        if first not in used and second not in used:
            used.update((first, second))
            reorder_first[first] = second
    _require(len(reorder_first), plan.reordered_pairs, "reordered_pairs", "adjacent depth pairs")

    depth_free = [f.position for f in open_frames if f.kind == DEPTH and f.position not in used]
    gaps = _sample(rng, depth_free, plan.depth_gaps, "depth_gaps", "depth diffs")
    used.update(gaps)
    dup_free = [f.position for f in open_frames
                if f.kind in (DEPTH, TRADE) and f.position not in used]
    duplicates = _sample(rng, dup_free, plan.duplicate_frames, "duplicate_frames",
                         "depth diffs and trades")

    junk: dict[int, list[JunkFrame]] = {}
    if plan.malformed_frames:
        _require(len(open_frames), 1, "malformed_frames", "frames outside silences")
        variants = [plan.malformed_kinds[i % len(plan.malformed_kinds)]
                    for i in range(plan.malformed_frames)]
        rng.shuffle(variants)
        for variant in variants:
            base = open_frames[rng.randrange(len(open_frames))]
            junk.setdefault(base.position, []).append(make_junk(variant, base, rng))
    silenced = tuple(
        sum(1 for frame in socket_frames if start <= frame.offset_ns < end)
        for start, end in silences
    )
    return FaultSchedule(
        gaps=frozenset(gaps), duplicates=frozenset(duplicates), reorder_first=reorder_first,
        reorder_second={second: first for first, second in reorder_first.items()},
        junk=junk, silences_ns=silences, drops_ns=drops, silenced_frames=silenced,
    )


def _require(available: int, wanted: int, name: str, what: str) -> None:
    if available < wanted:
        raise ValueError(
            f"FaultPlan.{name} = {wanted}, but the captures have only {available} {what} "
            f"outside silences to apply it to"
        )


def _sample(rng: random.Random, pool: list[int], count: int, name: str, what: str) -> list[int]:
    _require(len(pool), count, name, what)
    return sorted(rng.sample(pool, count))


# ------------------------------------------------------------------------------ junk frames

def _envelope(stream: str, data: bytes) -> bytes:
    return b'{"stream":"%s","data":%s}' % (stream.encode(), data)


def _dumps(value: Any) -> bytes:
    """JSON without spaces; big integers and NaN kept (stdlib json, unlike orjson, allows both)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=True).encode()


def _text_prefix(data: bytes, cut: int) -> bytes:
    """The first `cut` bytes, shortened to whole UTF-8 characters (a text frame must be UTF-8)."""
    return data[:cut].decode("utf-8", "ignore").encode()


def _payload(frame: TimelineFrame) -> dict[str, Any]:
    try:
        data = orjson.loads(frame.raw)
    except orjson.JSONDecodeError:
        return {"e": "unknown"}
    return data if type(data) is dict and data else {"e": "unknown"}


# fields a Binance payload of each kind cannot do without: mutating one of them must make the
# frame invalid for any parser, not merely unusual
_REQUIRED: dict[str, tuple[str, ...]] = {
    TRADE: ("t", "p", "q", "T", "m"),
    DEPTH: ("U", "u", "b", "a"),
    BOOK_TICKER: ("u", "b", "B", "a", "A"),
    AGG_TRADE: ("a", "p", "q", "f", "l", "T", "m"),
    MARK_PRICE: ("E", "p"),
}
_NUMERIC_TEXT = frozenset({"p", "q", "b", "B", "a", "A"})


def _wrong_type(value: Any, rng: random.Random) -> Any:
    """A value of a JSON type no parser could take for `value`'s field."""
    if type(value) is str:
        return rng.choice([None, [], {"value": value}, True])
    if type(value) is int:
        return rng.choice([f"{value}x", None, [value], {"id": value}])
    if type(value) is list:
        return rng.choice(["levels", {"0": value[:1]}, 7, None])
    return rng.choice(["true", None, [], {"flag": value}])


def _mutated(variant: str, kind: str, data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    data = dict(data)
    keys = [key for key in _REQUIRED.get(kind, ()) if key in data] or sorted(data)
    if variant == "wrong_types":
        key = rng.choice(keys)
        data[key] = _wrong_type(data[key], rng)
    elif variant == "missing_field":
        del data[rng.choice(keys)]
    elif variant == "huge_number":
        ints = [key for key in keys if type(data[key]) is int]
        texts = [key for key in keys if key in _NUMERIC_TEXT and type(data[key]) is str]
        if ints and (not texts or rng.random() < 0.5):
            data[rng.choice(ints)] = 10 ** rng.randrange(19, 400)
        elif texts:
            data[rng.choice(texts)] = rng.choice(["1e400", "9" * 400, "-1e309"])
        else:
            data[rng.choice(keys)] = 10 ** 40
    elif variant == "nan_string":
        bad: Any = rng.choice(["NaN", "nan", "Infinity", "-Infinity", "inf", float("nan")])
        numeric = [key for key in keys if key in _NUMERIC_TEXT]
        key = rng.choice(numeric) if numeric else "p"
        if type(data.get(key)) is list:
            data[key] = [[bad, "1.0"], *data[key]]
        else:
            data[key] = bad
    return data


def make_junk(variant: str, base: TimelineFrame, rng: random.Random) -> JunkFrame:
    """A fuzzed frame of `variant`, built from the real frame `base` it is sent before."""
    stream, combined, raw = base.stream, base.combined, base.raw
    if variant == "truncated_json":
        return JunkFrame(variant, _text_prefix(combined, rng.randrange(1, len(combined))),
                         _text_prefix(raw, rng.randrange(1, max(2, len(raw)))), False)
    if variant == "random_bytes":
        noise = rng.randbytes(rng.randrange(1, 256))
        return JunkFrame(variant, noise, noise, True)
    if variant == "invalid_utf8":
        bad = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80"])
        return JunkFrame(variant, combined[:11] + bad + combined[11:], raw[:2] + bad + raw[2:],
                         True)
    if variant in ("wrong_types", "missing_field", "huge_number", "nan_string"):
        data = _dumps(_mutated(variant, base.kind, _payload(base), rng))
        return JunkFrame(variant, _envelope(stream, data), data, False)
    if variant == "unknown_stream":
        symbol = stream.partition("@")[0]
        bogus = rng.choice(["bogus", "depth@7ms", "tradeX", "kline_9z", "bookTicker@1ms"])
        renamed = {**_payload(base), "e": "unknownEvent"}
        return JunkFrame(variant, _envelope(f"{symbol}@{bogus}", raw), _dumps(renamed), False)
    if variant == "deeply_nested":
        depth = rng.randrange(600, 20_000)
        if rng.random() < 0.5:
            nested = b"[" * depth + b"]" * depth
        else:
            nested = b'{"a":' * depth + b"1" + b"}" * depth
        return JunkFrame(variant, _envelope(stream, nested), nested, False)
    if variant == "not_an_object":
        value = rng.choice([b"[]", b"null", b"42", b'"stream"', b"true", b'[{"stream":"x"}]'])
        return JunkFrame(variant, value, value, False)
    if variant == "empty_frame":
        value = rng.choice([b"", b" ", b"\n"])
        return JunkFrame(variant, value, value, False)
    raise ValueError(f"unknown malformed variant {variant!r} (allowed: {list(MALFORMED_KINDS)})")
