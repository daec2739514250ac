"""Whether a symbol's market data is fresh, as the live feed reported it in the stream.

The feed writes "stale" when a symbol has been silent for its alarm time and "fresh" when data
flows again (see `dataflows.live.feed`). The events travel in the stream itself, so a replay of a
recording blocks exactly the entries the live run blocked. Entries decided at an event time
inside a stale stretch carry `data_stale=True`, and the risk rule `stale_data` rejects them;
exits are never blocked.

>>> from engine.batches import FeedEvent
>>> health = FeedHealth()
>>> health.observe([FeedEvent("BTCUSDT", 100, 90, "stale", "no data for 30 s"),
...                 FeedEvent("BTCUSDT", 200, 190, "fresh", "data flows again")])
>>> health.is_stale(99), health.is_stale(150), health.is_stale(200)
(False, True, False)
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from engine.batches import FeedEvent

STALE = "stale"
FRESH = "fresh"


class FeedHealth:
    """Stale/fresh transitions of one symbol in event time."""

    def __init__(self) -> None:
        self._times: list[int] = []
        self._stale: list[bool] = []

    def observe(self, events: Iterable[FeedEvent]) -> None:
        """Take the stale/fresh events of a batch; other feed events do not change freshness."""
        for event in events:
            if event.kind not in (STALE, FRESH):
                continue
            stale = event.kind == STALE
            # Event times come from receive times and never step back per symbol in practice;
            # keep the list sorted anyway so a late event cannot rewrite the past.
            at = max(event.ts_event, self._times[-1]) if self._times else event.ts_event
            self._times.append(at)
            self._stale.append(stale)

    def is_stale(self, ts_event: int) -> bool:
        """True if the latest transition at or before `ts_event` was "stale"."""
        index = bisect_right(self._times, ts_event)
        return index > 0 and self._stale[index - 1]
