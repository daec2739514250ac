"""The live feed against the loopback Binance (real captures): every frame, reconnects,
gap-fill by trade id, the stale alarm, REST fallback and rollover."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from dataflows.capture import read_capture
from dataflows.live.feed import BinanceFeed
from dataflows.live.replay_faults import FaultPlan
from dataflows.live.replay_server import ReplayServer
from engine.config import LiveConfig

pytestmark = pytest.mark.slow


def capture_trade_ids(paths: list[Path]) -> list[int]:
    ids = []
    for path in paths:
        for lines, _ in read_capture(path):
            for frame in lines.frames:
                if b"@trade" in frame[:40]:
                    ids.append(orjson.loads(frame)["data"]["t"])
    return ids


def live_config(server: ReplayServer, **overrides: object) -> LiveConfig:
    return LiveConfig(ws_url=server.ws_url, rest_url=server.rest_url,
                      **{"stale_after_s": 5.0, **overrides})  # type: ignore[arg-type]


@contextmanager
def feeding(config: LiveConfig) -> Iterator[BinanceFeed]:
    feed = BinanceFeed(config, ["BTCUSDT"])
    feed.start()
    try:
        yield feed
    finally:
        feed.stop()


def wait_for(condition: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def decoded(feed: BinanceFeed) -> list[dict]:
    _, frames = feed.buffer.drain(10**9)
    out = []
    for frame in frames:
        try:
            out.append(orjson.loads(frame))
        except orjson.JSONDecodeError:
            out.append({"malformed": frame})
    return out


def trades_of(messages: list[dict]) -> list[int]:
    """Trade ids in stream order, from websocket frames and REST envelopes alike."""
    ids: list[int] = []
    for message in messages:
        if str(message.get("stream", "")).endswith("@trade"):
            ids.append(message["data"]["t"])
        elif str(message.get("rest", "")).endswith(("trades", "Trades")):
            ids.extend(trade["id"] for trade in message["data"])
    return ids


def feed_events(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["feed"], m["detail"]) for m in messages if "feed" in m]


def test_every_frame_arrives_in_order_with_a_snapshot_first(spot_captures: list[Path]) -> None:
    with ReplayServer(spot_captures, speed=50).running() as server, \
            feeding(live_config(server)) as feed:
        wait_for(lambda: feed.stats["snapshots"] == 1)
        server.start()
        assert server.wait_finished(60)
        time.sleep(0.3)
    messages = decoded(feed)
    kinds = [next(iter(message)) for message in messages]
    assert kinds[0] == "feed" and messages[0]["feed"] == "connected"
    assert messages[1]["rest"] == "/api/v3/depth"  # before any diff: the book can bridge
    expected = [frame for path in spot_captures for lines, _ in read_capture(path)
                for frame in lines.frames if frame.startswith(b'{"stream"')]
    received = [orjson.dumps(m) for m in messages if "stream" in m]
    assert len(received) == len(expected)
    assert received == [orjson.dumps(orjson.loads(frame)) for frame in expected]
    assert feed.stats["disconnects"] == 0


def test_a_dropped_connection_reconnects_and_missed_trades_are_fetched_by_id(
        spot_captures: list[Path]) -> None:
    plan = FaultPlan(seed=3, drop_connections_at_s=(120.0, 400.0))
    with ReplayServer(spot_captures, speed=50, faults=plan).running() as server, \
            feeding(live_config(server, reconnect_initial_s=0.2)) as feed:
        wait_for(lambda: feed.stats["snapshots"] == 1)
        server.start()
        assert server.wait_finished(60)
        time.sleep(0.5)
    messages = decoded(feed)
    kinds = [kind for kind, _ in feed_events(messages)]
    assert kinds.count("disconnected") >= 2 and kinds.count("connected") >= 3
    assert "gap_filled" in kinds and "gap_unfilled" not in kinds
    assert trades_of(messages) == capture_trade_ids(spot_captures)  # none lost, none doubled
    snapshots = [m for m in messages if m.get("rest") == "/api/v3/depth"]
    assert len(snapshots) >= 3  # one per connection


def test_silence_raises_the_stale_alarm_and_data_clears_it(spot_captures: list[Path]) -> None:
    plan = FaultPlan(seed=1, silences=((100.0, 45.0),))  # 45 s of capture time, 0.9 s at 50x
    with ReplayServer(spot_captures, speed=50, faults=plan).running() as server, \
            feeding(live_config(server, stale_after_s=0.5)) as feed:
        wait_for(lambda: feed.stats["snapshots"] == 1)
        server.start()
        assert server.wait_finished(60)
        time.sleep(0.2)
    messages = decoded(feed)
    events = feed_events(messages)
    kinds = [kind for kind, _ in events]
    alarms = [kind for kind in kinds if kind in ("stale", "fresh")]
    # the injected 0.9 s silence raises one alarm; on a loaded machine a starved feed thread may
    # raise another (0.5 s is short): each must be cleared by data before the next one
    assert alarms and alarms == ["stale", "fresh"] * (len(alarms) // 2), kinds
    stale_indexes = [i for i, m in enumerate(messages) if m.get("feed") == "stale"]
    fresh_indexes = [i for i, m in enumerate(messages) if m.get("feed") == "fresh"]
    for stale_at, fresh_at in zip(stale_indexes, fresh_indexes, strict=True):
        assert "stream" in messages[fresh_at + 1]  # "fresh" comes right before the frame
        assert all("stream" not in m for m in messages[stale_at + 1:fresh_at])
    assert all("no data for" in detail for kind, detail in events if kind == "stale")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_rest_fallback_polls_within_five_seconds_of_losing_the_socket(
        spot_captures: list[Path]) -> None:
    with ReplayServer(spot_captures, speed=50).running() as server:
        server.start()
        config = LiveConfig(ws_url=f"ws://127.0.0.1:{_closed_port()}", rest_url=server.rest_url,
                            rest_fallback_after_s=2.0, rest_poll_interval_s=0.2,
                            reconnect_initial_s=0.5)
        started = time.monotonic()
        with feeding(config) as feed:
            wait_for(lambda: feed.stats["rest_polls"] >= 5, timeout_s=10)
            fallback_after = time.monotonic() - started
    messages = decoded(feed)
    kinds = [kind for kind, _ in feed_events(messages)]
    assert kinds[0] == "disconnected" and "rest_fallback_started" in kinds
    assert fallback_after < 5.0
    polled = trades_of(messages)
    assert polled and polled == sorted(set(polled))  # new trades only, each once
    assert any(m.get("rest") == "/api/v3/ticker/bookTicker" for m in messages)


def test_rollover_hands_over_without_losing_or_doubling_frames(
        spot_captures: list[Path]) -> None:
    with ReplayServer(spot_captures, speed=50).running() as server, \
            feeding(live_config(server, rollover_after_s=2.0)) as feed:
        wait_for(lambda: feed.stats["snapshots"] == 1)
        server.start()
        assert server.wait_finished(60)
        time.sleep(0.3)
    messages = decoded(feed)
    assert feed.stats["rollovers"] >= 3 and feed.stats["disconnects"] == 0
    assert trades_of(messages) == capture_trade_ids(spot_captures)
    depth_ids = [m["data"]["u"] for m in messages if "@depth" in str(m.get("stream", ""))]
    assert depth_ids == sorted(set(depth_ids))
    assert [kind for kind, _ in feed_events(messages)].count("rollover") >= 3


def test_the_venue_cut_after_max_connection_time_is_survived(spot_captures: list[Path]) -> None:
    with ReplayServer(spot_captures, speed=50, max_connection_s=3.0).running() as server, \
            feeding(live_config(server, reconnect_initial_s=0.1)) as feed:
        wait_for(lambda: feed.stats["snapshots"] == 1)
        server.start()
        assert server.wait_finished(60)
        time.sleep(0.5)
    messages = decoded(feed)
    assert feed.stats["disconnects"] >= 2
    assert trades_of(messages) == capture_trade_ids(spot_captures)
