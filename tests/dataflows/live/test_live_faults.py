"""Fault injection on the loopback Binance, through the live feed and the dataflow's own steps.

The feed's frames go through the live source's parser, validation and the book exactly as in
`ats live`, with the book's resync requests wired back to the feed as the sink does. Every
injected fault must be journaled with a reason (dead letter, book event or feed event), nothing
may crash, and after each resync the book must equal an independent reference rebuilt from the
capture the server plays, within 2 s of the resync snapshot.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from dataflows.book import BookSynchronizer
from dataflows.live.feed import BinanceFeed
from dataflows.live.replay_faults import FaultPlan
from dataflows.live.replay_server import ReplayServer
from dataflows.live.source import LivePartition
from dataflows.steps import StagedChunk, validate_events
from engine.batches import BookEvent, DeadLetter, FeedEvent
from engine.config import LiveConfig
from tests.dataflows.book_reference import Cursor, read_book_frames

pytestmark = pytest.mark.slow
TOP_LEVELS = 200  # a REST snapshot holds 1,000 levels a side: compare well inside them


class TopLevelsLockstep:
    """After each update the live book applies, the reference moved to the same u; compares the
    best `TOP_LEVELS` of each side once the book has been (re)synced."""

    def __init__(self, paths: list[Path]) -> None:
        self.cursor = Cursor(read_book_frames(paths), futures=False)
        self.trade_ids: list[int] = []  # of every trade that passed validation, in stream order
        self.book: BookSynchronizer | None = None
        self.compared: list[int] = []
        self.wall_times: list[tuple[str, float]] = []  # (book event kind, when the step saw it)
        self.last_applied_at: float | None = None

    def __call__(self, final_id: int) -> None:
        while (update := self.cursor.step()) is not None and update.final_id < final_id:
            pass
        assert update is not None and update.final_id == final_id, f"u={final_id} not in capture"
        assert self.book is not None
        reference = self.cursor.reference
        for ours, theirs, best_first in ((self.book.bids.levels, reference.bids, True),
                                         (self.book.asks.levels, reference.asks, False)):
            top_ours = sorted(ours.items(), reverse=best_first)[:TOP_LEVELS]
            top_theirs = sorted(theirs.items(), reverse=best_first)[:TOP_LEVELS]
            assert top_ours == top_theirs, f"book differs from the reference after u={final_id}"
        self.compared.append(final_id)
        self.last_applied_at = time.monotonic()


def _received_all(feed: BinanceFeed, server: ReplayServer) -> bool:
    """The feed has read every websocket frame the server sent (over all connections)."""
    return feed.stats["frames"] >= sum(server.stats.frames_sent.values())


def run_faulty_session(paths: list[Path], plan: FaultPlan, speed: float,
                       ) -> tuple[ReplayServer, list[DeadLetter], list[BookEvent],
                                  list[FeedEvent], TopLevelsLockstep]:
    letters: list[DeadLetter] = []
    book_events: list[BookEvent] = []
    feed_events: list[FeedEvent] = []
    lockstep = TopLevelsLockstep(paths)
    book = BookSynchronizer("BTCUSDT")
    lockstep.book = book
    with ReplayServer(paths, speed=speed, faults=plan).running() as server:
        config = LiveConfig(ws_url=server.ws_url, rest_url=server.rest_url,
                            stale_after_s=30.0 / speed, reconnect_initial_s=0.2)
        feed = BinanceFeed(config, ["BTCUSDT"])
        stop = threading.Event()
        partition = LivePartition(feed.buffer, ["BTCUSDT"], stop, 5000, None, "live:test")
        validate_state = None
        feed.start()
        try:
            server.start(wait_for_subscriber=True)
            finished_at: float | None = None
            last_count, last_change = 0, time.monotonic()
            while True:
                if finished_at is None and server.wait_finished(0):
                    finished_at = time.monotonic()
                if feed.stats["frames"] != last_count:
                    last_count, last_change = feed.stats["frames"], time.monotonic()
                if finished_at is not None and (
                        _received_all(feed, server) or time.monotonic() > last_change + 1.5):
                    stop.set()  # every frame the server sent is in, or the socket went quiet
                try:
                    chunks = partition.next_batch()
                except StopIteration:
                    break
                for chunk in chunks:
                    letters.extend(chunk.dead_letters)
                    feed_events.extend(chunk.feed_events)
                    validate_state, staged = validate_events(validate_state, StagedChunk(chunk))
                    letters.extend(staged.dead_letters[len(chunk.dead_letters):])
                    if staged.trades is not None:
                        lockstep.trade_ids.extend(staged.trades.trade_id.tolist())
                    result = book.apply(chunk.deltas, chunk.snapshots, observer=lockstep)
                    letters.extend(result.dead_letters)
                    book_events.extend(result.events)
                    lockstep.wall_times.extend((event.kind, time.monotonic())
                                               for event in result.events)
                    if result.resync_requested:
                        feed.request_snapshot(chunk.symbol)  # what the live sink does
                if not chunks:
                    time.sleep(0.001)
        finally:
            feed.stop()
    return server, letters, book_events, feed_events, lockstep


def assert_book_healed(book_events: list[BookEvent], lockstep: TopLevelsLockstep,
                       min_compared: int = 3_000) -> None:
    """Each resync request is followed by a sync within 2 s of wall time (the feed fetched the
    snapshot and the book bridged it), and the book equalled the reference after every update
    it applied in sync. (Event time runs 50 times faster than wall time here.) Only a request
    made as the capture ends, with no update left to bridge to, may stay open."""
    assert book_events and book_events[0].kind == "synced"
    open_since: float | None = None
    for kind, at in lockstep.wall_times:
        if kind == "resync_requested" and open_since is None:
            open_since = at
        elif kind == "synced" and open_since is not None:
            assert at - open_since < 2.0, f"resync took {at - open_since:.2f} s"
            open_since = None
    if open_since is not None:
        assert lockstep.last_applied_at is not None
        assert open_since >= lockstep.last_applied_at  # nothing came after it to bridge to
    assert len(lockstep.compared) > min_compared  # of 6,495 updates in the capture


def test_ten_thousand_malformed_frames_are_each_dead_lettered(spot_captures: list[Path]) -> None:
    plan = FaultPlan(seed=11, malformed_frames=10_000)
    server, letters, book_events, _feed_events, lockstep = run_faulty_session(
        spot_captures, plan, speed=50.0)
    assert Counter(record.kind for record in server.fault_log)["malformed"] == 10_000
    # One dead letter per fuzzed frame, from whichever step could tell it was bad (the parser
    # for broken JSON, validation for NaN or negative numbers, the book for bad levels).
    assert len(letters) == 10_000
    assert all(letter.reason and letter.detail for letter in letters)
    assert Counter(letter.stage for letter in letters)["parse_frames"] > 5_000
    # Bad levels make the book resync (it never applies half an update), so whole stretches of
    # updates are skipped while it waits; every one it did apply left it equal to the reference.
    assert_book_healed(book_events, lockstep, min_compared=1_500)


def test_depth_gaps_duplicates_and_reordering_are_journaled_and_the_book_heals(
        spot_captures: list[Path]) -> None:
    plan = FaultPlan(seed=11, depth_gaps=6, duplicate_frames=30, reordered_pairs=4)
    server, letters, book_events, _feed_events, lockstep = run_faulty_session(
        spot_captures, plan, speed=50.0)
    log = server.fault_log
    reasons = Counter(letter.reason for letter in letters)
    duplicated_trades = sum(1 for r in log if r.kind == "duplicate" and "@trade" in r.stream)
    assert duplicated_trades > 0 and reasons["duplicate_trade_id"] == duplicated_trades
    kinds = Counter(event.kind for event in book_events)
    gaps = sum(1 for r in log if r.kind in ("depth_gap", "reorder"))
    assert gaps > 0 and 1 <= kinds["gap"] <= gaps
    assert_book_healed(book_events, lockstep)


def test_network_faults_are_each_journaled_and_nothing_is_lost(
        spot_captures: list[Path]) -> None:
    # At 20x the 45 s silence lasts 2.25 s of wall time and the 30 s alarm fires after 1.5 s.
    plan = FaultPlan(seed=5, drop_connections_at_s=(200.0, 520.0), silences=((380.0, 45.0),))
    _server, letters, book_events, feed_events, lockstep = run_faulty_session(
        spot_captures, plan, speed=20.0)
    feed_kinds = Counter(event.kind for event in feed_events)
    assert feed_kinds["disconnected"] == 2 and feed_kinds["connected"] == 3
    kinds_in_order = [event.kind for event in feed_events if event.kind in ("stale", "fresh")]
    assert kinds_in_order[:2] == ["stale", "fresh"]  # the silence, then data again
    # Nothing lost: every trade id from the first to the last arrived exactly once, in order,
    # though the server played on while the socket was down. Missed trades came back by id (a
    # drop in a quiet second may miss none, so not every drop needs a fill).
    trade_ids = lockstep.trade_ids
    assert trade_ids == list(range(trade_ids[0], trade_ids[0] + len(trade_ids)))
    assert feed_kinds["gap_filled"] >= 1 and feed_kinds["gap_unfilled"] == 0
    assert not [letter for letter in letters if letter.stage == "parse_frames"]
    assert Counter(letter.reason for letter in letters)["duplicate_trade_id"] == 0
    assert_book_healed(book_events, lockstep)
