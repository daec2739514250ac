"""The live feed's output: receive-stamped frames, in arrival order, across a thread boundary.

The feed's event loop appends, the dataflow's source (or the recorder) drains. Every frame that
enters the pipeline passes through here, websocket frames and the feed's own REST and
feed-event frames alike, so what is drained is exactly what a recorder must write to reproduce
the run. A frame is one line of a capture: raw newlines (legal JSON whitespace) become spaces.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import orjson


def one_line(frame: bytes) -> bytes:
    """The frame with CR and LF turned into spaces (only whitespace in valid JSON)."""
    if b"\n" in frame or b"\r" in frame:
        return frame.replace(b"\r", b" ").replace(b"\n", b" ")
    return frame


def feed_event_frame(kind: str, symbol: str, detail: str) -> bytes:
    """A feed-event frame: `{"feed": kind, "symbol": ..., "detail": ...}` (see the parser)."""
    return orjson.dumps({"feed": kind, "symbol": symbol, "detail": detail})


class FrameBuffer:
    """An unbounded FIFO of (receive ns, frame) with a wake-up for waiting consumers.

    Unbounded on purpose: back-pressure on a live socket would only move the loss to the venue
    (which disconnects slow readers); `pending` is exported as a metric instead.
    """

    def __init__(self) -> None:
        self._items: deque[tuple[int, bytes]] = deque()
        self._ready = threading.Event()
        self.total = 0

    def put(self, ts_recv: int, frame: bytes) -> None:
        self._items.append((ts_recv, one_line(frame)))
        self.total += 1
        self._ready.set()

    def put_event(self, kind: str, symbol: str, detail: str) -> None:
        self.put(time.time_ns(), feed_event_frame(kind, symbol, detail))

    @property
    def pending(self) -> int:
        return len(self._items)

    def drain(self, max_frames: int) -> tuple[list[int], list[bytes]]:
        """Up to `max_frames` oldest frames as (receive times, frames)."""
        times: list[int] = []
        frames: list[bytes] = []
        items = self._items
        self._ready.clear()
        while items and len(frames) < max_frames:
            ts_recv, frame = items.popleft()
            times.append(ts_recv)
            frames.append(frame)
        if items:
            self._ready.set()
        return times, frames

    def wait(self, timeout_s: float) -> bool:
        """Block until something is buffered or the timeout passes; True if something is."""
        return self._ready.wait(timeout_s) or bool(self._items)
