"""ExecutionActor: the Ray shell trades through LiveExecution, fails closed before reconciling,
and its watchdog thread flattens a silent strategy on its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from actors.execution_actor import ExecutionActor
from tests.engine.live_execution_helpers import BTC, assert_no_secret, make_config
from tests.support.binance_trading_server import (
    CANARY_SECRET,
    TEST_API_KEY,
    BinanceTradingServer,
    binance_trading_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


@pytest.fixture(scope="module")
def server() -> Iterator[BinanceTradingServer]:
    with binance_trading_server() as running:
        running.secret = CANARY_SECRET
        yield running


def test_actor_trades_only_after_reconcile_and_watchdog_flattens(
        server: BinanceTradingServer, tmp_path: Path) -> None:
    config = make_config(server, tmp_path / "execution.json", symbols=(BTC,),
                         watchdog_timeout_s=1.5)
    credentials = {"ATS_BINANCE_KEY": TEST_API_KEY, "ATS_BINANCE_SECRET": CANARY_SECRET}
    actor = ExecutionActor.options(runtime_env={"env_vars": credentials}).remote(config, 0.1)
    try:
        with pytest.raises(ray.exceptions.RayTaskError, match="reconcile") as blocked:
            ray.get(actor.place.remote(BTC, 1, 0.01))
        assert ray.get(actor.reconcile.remote())["ready"] is True
        placed = ray.get(actor.place.remote(BTC, 1, 0.02))
        assert placed.state == "filled" and placed.filled_quantity == pytest.approx(0.02)
        assert placed.final and placed.average_fill_price > 0
        resting = ray.get(actor.place.remote(BTC, 1, 0.01, "limit", 50_000.0))
        assert resting.state == "accepted" and not resting.final
        ray.get(actor.heartbeat.remote())
        deadline = time.monotonic() + 15
        while server.venue.position("BTCUSDT").amount and time.monotonic() < deadline:
            time.sleep(0.2)  # no heartbeat: the actor's own watchdog thread must act
        assert server.venue.position("BTCUSDT").amount == 0
        assert server.venue.open_orders(None, algo=False) == []
        status = ray.get(actor.status.remote())
        assert status["ready"] is False and status["positions"] == {BTC: 0.0}
        kinds = [row["kind"] for row in ray.get(actor.drain_journal.remote())["execution_events"]]
        assert "watchdog" in kinds
        assert_no_secret(blocked.value, status)
    finally:
        ray.get(actor.stop.remote())
        ray.kill(actor)


def test_ray_port_raises_the_actors_execution_errors(server: BinanceTradingServer,
                                                    tmp_path: Path) -> None:
    """A refusal inside the actor reaches the order flow as the same ExecutionError (it fails
    closed on it), not as an opaque Ray error; a dead actor is an ExecutionError too."""
    from actors.execution_actor import Credentials, RayExecutionPort
    from engine.execution.errors import ExecutionError, TradingBlockedError, VenueError

    config = make_config(server, tmp_path / "execution.json", symbols=(BTC,))
    credentials = Credentials({"ATS_BINANCE_KEY": TEST_API_KEY,
                               "ATS_BINANCE_SECRET": CANARY_SECRET})
    assert CANARY_SECRET not in repr(credentials)
    actor = ExecutionActor.remote(config, 0.5, credentials)
    port = RayExecutionPort(actor)
    try:
        with pytest.raises(TradingBlockedError, match="reconcile"):
            port.place(BTC, 1, 0.01, False, "e", "BTCUSDT:o1", "BTCUSDT:i1")
        port.reconcile()
        with pytest.raises(VenueError, match="lot size") as refused:
            port.place(BTC, 1, 1e-9, False, "e", "BTCUSDT:o2", "BTCUSDT:i2")
        assert refused.value.category == "rejected"
        report = port.place(BTC, 1, 0.01, False, "e", "BTCUSDT:o3", "BTCUSDT:i3")
        assert report.final and report.order_id == "BTCUSDT:o3"
        port.stop()
        ray.kill(actor)
        with pytest.raises(ExecutionError, match="gone"):
            port.position(BTC)
    finally:
        ray.kill(actor)
