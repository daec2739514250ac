"""The replay server's market timeline: when each frame is due, what it does to the server's
market, which faults it carries, and the log of those faults.

One timeline serves every connection. A frame is due (its stream time) / speed seconds after the
pass starts, or at slot / frames_per_s with a fixed rate (a slot per socket frame; snapshots take
none). Drops and silence boundaries are events of their own, placed before the first frame at or
after their stream time, so which frames a fault affects never depends on wall-clock jitter.

Playing a frame always applies it to the server's market (`MarketState`): REST goes on whatever
the sockets see. What the sockets see depends on the fault schedule: junk frames first, then the
frame unless it is a gap or held back for a swap, the held frame after its partner, a duplicate
after the original; nothing at all during a silence. The sending itself, and aborting every
connection for a drop, are the server's (callbacks).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import orjson

from dataflows.live.replay_faults import FaultPlan, FaultRecord, schedule_faults
from dataflows.live.replay_frames import (
    AGG_TRADE,
    DEPTH,
    SNAPSHOT,
    LoadedCaptures,
    TimelineFrame,
    frame_ids,
)
from dataflows.live.replay_market import MarketState

log = logging.getLogger(__name__)
FRAME, SILENCE_START, SILENCE_END, DROP = range(4)
Send = Callable[[str, bytes, bytes, bool], None]  # stream, combined, raw, binary


class Timeline:
    """Plays the captures' frames on schedule, with the plan's faults (see the module doc)."""

    def __init__(self, loaded: LoadedCaptures, futures: bool, plan: FaultPlan, speed: float,
                 frames_per_s: float | None, loop_playback: bool, send: Send,
                 drop_all: Callable[[], int]) -> None:
        self.frames: list[TimelineFrame] = loaded.frames
        self.futures = futures
        self.speed, self.frames_per_s = speed, frames_per_s
        self.loop_playback = loop_playback
        self.schedule = schedule_faults(plan, self.frames)
        self._send, self._drop_all = send, drop_all
        self._agg_symbols = frozenset(f.symbol for f in self.frames if f.kind == AGG_TRADE)
        self.market = self._fresh_market()
        self.events = self._build_events()
        self.fault_log: list[FaultRecord] = []
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self.silent = 0
        self.frames_played = 0
        self.passes = 0
        self.pass_started = 0.0
        self.last_offset_ns = 0

    def stream_offset_ns(self, now: float, started: bool) -> int:
        """Stream time now: elapsed wall time x speed, or the last played frame's with a fixed
        frame rate (or before the start)."""
        if started and self.frames_per_s is None:
            return int((now - self.pass_started) * self.speed * 1e9)
        return self.last_offset_ns

    async def run(self) -> None:
        """Play every pass; set `finished` at the end (or on a failure, kept in `error`)."""
        loop = asyncio.get_running_loop()
        self.pass_started = loop.time()
        try:
            while True:
                base = self.pass_started
                for count, (due, kind, value) in enumerate(self.events):
                    delay = base + due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif count & 255 == 0:
                        await asyncio.sleep(0)  # let connections and REST in
                    self._play(kind, value)
                if not self.loop_playback:
                    break
                self.passes += 1
                self.market = self._fresh_market()
                self.pass_started = loop.time()
                self._record("playback_restart", 0, None, {}, f"pass {self.passes}")
        except Exception as error:
            log.exception("replay timeline failed")
            self.error = error
        self.finished.set()

    # ------------------------------------------------------------------ schedule

    def _fresh_market(self) -> MarketState:
        state = MarketState(self.futures, self._agg_symbols)
        state.seed(self.frames)
        return state

    def _due(self, offset_ns: int, slot: int) -> float:
        if self.frames_per_s is not None:
            return slot / self.frames_per_s
        return offset_ns / 1e9 / self.speed

    def _build_events(self) -> list[tuple[float, int, int]]:
        """(due seconds after the pass start, event kind, frame index or fault number)."""
        schedule = self.schedule
        controls = sorted(
            [(at, DROP, number) for number, at in enumerate(schedule.drops_ns)]
            + [(start, SILENCE_START, number)
               for number, (start, _) in enumerate(schedule.silences_ns)]
            + [(end, SILENCE_END, number) for number, (_, end) in enumerate(schedule.silences_ns)]
        )
        events: list[tuple[float, int, int]] = []
        slot = next_control = 0
        for frame in self.frames:
            while next_control < len(controls) and controls[next_control][0] <= frame.offset_ns:
                at, kind, number = controls[next_control]
                events.append((self._due(at, slot), kind, number))
                next_control += 1
            events.append((self._due(frame.offset_ns, slot), FRAME, frame.position))
            slot += frame.kind != SNAPSHOT
        for at, kind, number in controls[next_control:]:
            events.append((self._due(at, slot), kind, number))
        return events

    # ------------------------------------------------------------------ playing

    def _record(self, kind: str, offset_ns: int, frame: TimelineFrame | None,
                ids: dict[str, int], detail: str, junk: bytes | None = None) -> None:
        self.fault_log.append(FaultRecord(
            kind, offset_ns / 1e9, frame.stream if frame else None, ids, detail,
            frame.source if frame else "", frame.position if frame else -1, junk, self.passes,
        ))

    def _play(self, kind: int, value: int) -> None:
        if kind == FRAME:
            self._play_frame(self.frames[value])
        elif kind == SILENCE_START:
            self.silent += 1
            start, end = self.schedule.silences_ns[value]
            self._record("silence", start, None, {}, (
                f"{(end - start) / 1e9:g} s of stream time, "
                f"{self.schedule.silenced_frames[value]} frames not sent"))
        elif kind == SILENCE_END:
            self.silent -= 1
        else:
            aborted = self._drop_all()
            self._record("connection_drop", self.schedule.drops_ns[value], None, {},
                         f"{aborted} connections aborted")

    def _play_frame(self, frame: TimelineFrame) -> None:
        self.market.play(frame)
        self.last_offset_ns = frame.offset_ns
        if frame.kind == SNAPSHOT:
            return
        self.frames_played += 1
        if self.silent:
            return
        schedule, index, send = self.schedule, frame.position, self._send
        for junk in schedule.junk.get(index, ()):
            send(frame.stream, junk.combined, junk.raw, junk.binary)
            self._record("malformed", frame.offset_ns, frame, frame_ids(frame), junk.variant,
                         junk.combined)
        if index in schedule.gaps:
            self._record("depth_gap", frame.offset_ns, frame, frame_ids(frame), "not sent")
            return
        if index in schedule.reorder_first:
            return  # held back until its partner has been sent
        send(frame.stream, frame.combined, frame.raw, False)
        held_index = schedule.reorder_second.get(index)
        if held_index is not None:
            held = self.frames[held_index]
            send(held.stream, held.combined, held.raw, False)
            self._record("reorder", held.offset_ns, held, frame_ids(held),
                         f"sent after {orjson.dumps(frame_ids(frame)).decode()}")
        if index in schedule.duplicates:
            send(frame.stream, frame.combined, frame.raw, False)
            what = "depth diff" if frame.kind == DEPTH else "trade"
            self._record("duplicate", frame.offset_ns, frame, frame_ids(frame), f"{what} twice")
