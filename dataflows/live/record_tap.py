"""Recording beside a live run without slowing it: the recorder runs in its own thread.

The live source hands each batch of frames it parses to `BackgroundRecorder` (a cheap queue
put); a thread writes them to `storage.recorder.Recorder`, flushing when the feed is quiet so a
crash loses at most the last second. Rotation (seconds for a large segment) and disk trouble
stay off the thread that stamps receive times and feeds the dataflow. A recorder failure stops
the recording, is logged and counted, and is raised by `close()`; it never stops paper trading.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

log = logging.getLogger(__name__)
_STOP = object()
IDLE_FLUSH_S = 1.0


class BackgroundRecorder:
    """A `Recorder` fed through a queue by a writer thread."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.frames = 0
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ats-recorder", daemon=True)
        self._thread.start()

    def __call__(self, times: list[int], frames: list[bytes]) -> None:
        if self.error is None:
            self._queue.put((times, frames))

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_FLUSH_S)
            except queue.Empty:
                self._guarded(self.recorder.flush)
                continue
            if item is _STOP:
                return
            times, frames = item
            if self._guarded(self.recorder.write_many, times, frames):
                self.frames += len(frames)

    def _guarded(self, action: Any, *args: Any) -> bool:
        if self.error is not None:
            return False
        try:
            action(*args)
            return True
        except Exception as error:  # disk full, permissions: stop recording, keep trading
            self.error = error
            log.error("recording stopped: %s", error)
            return False

    def close(self) -> Any:
        """Write what is queued, finalize the recording and return its manifest."""
        self._queue.put(_STOP)
        self._thread.join()
        manifest = self.recorder.close()
        if self.error is not None:
            raise RuntimeError(f"recording stopped early: {self.error}") from self.error
        return manifest
