"""`ats live --execute`: the live feed (a loopback Binance websocket replaying real captures)
through the whole pipeline, with orders on a loopback Binance USD-M REST venue whose mark
follows the feed's trades. Every approved intent is one venue order, sent once; the journal's
fills are the venue's executions; the engine's position is the venue's; the key never shows."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from dataflows.live.replay_server import ReplayServer
from engine.execution.config import LiveTradingConfig
from engine.runtime import run_live
from tests.engine.live_execution_helpers import (
    BTC,
    assert_no_secret,
    make_config,
    use_canary_credentials,
)
from tests.engine.test_live_runtime import _config, _start_when_snapshot_taken, _stop_after_finish
from tests.support.binance_trading_server import binance_trading_server
from tests.support.binance_trading_venue import TradingVenue

pytestmark = pytest.mark.slow

_TRADE_PRICE = re.compile(rb'"e":"trade".*?"p":"([0-9.]+)"')


def _venue_follows_trades(venue: TradingVenue, then: Callable[[list[int], list[bytes]], None],
                          ) -> Callable[[list[int], list[bytes]], None]:
    """The venue's mark moves with the feed's last trade price, so market orders fill at the
    market and venue stops trigger when the market crosses them."""
    def observe(times: list[int], frames: list[bytes]) -> None:
        for frame in reversed(frames):
            match = _TRADE_PRICE.search(frame)
            if match:
                venue.set_mark("BTCUSDT", float(match.group(1)))
                break
        then(times, frames)

    return observe


def _journal_text(journal: Path) -> str:
    with duckdb.connect(str(journal), read_only=True) as connection:
        tables = [row[0] for row in connection.sql("show tables").fetchall()]
        return "\n".join(str(connection.sql(f"select columns(*)::varchar from {name}").fetchall())
                         for name in tables)


@pytest.mark.parametrize("actors", ["in_process", "ray"])
def test_live_execution_sends_each_approved_order_once_and_matches_the_venue(
        actors: str, tmp_path: Path, spot_captures: list[Path],
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    if actors == "ray":
        request.getfixturevalue("ray_session")
    journal = tmp_path / "live.duckdb"
    with binance_trading_server() as venue_server:
        use_canary_credentials(monkeypatch, venue_server)
        venue_server.venue.wallet = 10_000_000.0
        venue_server.venue.set_mark("BTCUSDT", 61_650.0)
        settings = LiveTradingConfig(
            symbols={"BTCUSDT": BTC},
            venue=make_config(venue_server, tmp_path / "execution.json", symbols=(BTC,)))
        with ReplayServer(spot_captures, speed=50.0).running() as feed_server:
            config = _config(feed_server).model_copy(
                update={"execution": settings, "actors": actors})
            stop, counted = threading.Event(), [0]
            watcher = _stop_after_finish(feed_server, stop, counted)
            observer = _venue_follows_trades(
                venue_server.venue, _start_when_snapshot_taken(feed_server, counted))
            result = run_live(["BTCUSDT"], config, journal, stop=stop, frame_observer=observer,
                              execute=True)
            watcher.join(5)
        venue_position = venue_server.venue.position("BTCUSDT").amount
        creates = venue_server.creates

    with duckdb.connect(str(journal), read_only=True) as connection:
        def rows(sql: str) -> list[tuple[object, ...]]:
            return connection.sql(sql).fetchall()

        approved = rows("select intent_id from risk_decisions where approved "
                        "and intent_kind <> 'position_check' order by intent_id")
        venue_orders = rows("select distinct intent_id, client_order_id from orders "
                            "where client_order_id is not null and intent_id is not null")
        refused = rows("select count(*) from dead_letters where reason = 'order_refused'")[0][0]
        fills = rows("select side, quantity, price, order_id from fills")
        (mode,) = rows("select mode from runs")[0]
        stops = rows("select count(*) from orders where order_type = 'stop_market'")[0][0]
    assert mode == "live"
    assert len(approved) >= 10, "the sample strategy trades a dozen times in these captures"
    assert sorted(intent for intent, _ in venue_orders) == sorted(
        intent for (intent,) in approved) or refused, "each approved intent is one venue order"
    assert len(venue_orders) + refused == len(approved)
    assert all(creates(client_id) == 1 for _, client_id in venue_orders)  # sent once each
    assert stops >= 1, "positions were also protected by a stop held on the venue"
    journal_position = sum(side * quantity for side, quantity, _, _ in fills)
    assert journal_position == pytest.approx(venue_position, abs=1e-9)
    assert all(price > 60_000 for _, _, price, _ in fills)
    assert result.summary["fills"] == len(fills) > 0
    assert_no_secret(_journal_text(journal), result.summary)
