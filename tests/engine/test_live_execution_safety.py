"""Live execution safety switches on the local Binance server: kill switch, HALTED across a
restart, the dead-man watchdog and venue countdown, withdraw-capable keys, and the canary secret."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.execution import (
    ExecutionError,
    LiveExecution,
    TradingBlockedError,
    UnsafeApiKeyError,
    VenueError,
)
from engine.execution.state_file import ExecutionState, load_state, save_state
from engine.orders import OrderState
from tests.engine.live_execution_helpers import (
    BTC,
    ETH,
    assert_no_secret,
    make_config,
    use_canary_credentials,
)
from tests.support.binance_trading_server import (
    CANARY_SECRET,
    BinanceTradingServer,
    FakeClock,
    binance_trading_server,
    reset_server,
)


@pytest.fixture(scope="module")
def server() -> Iterator[BinanceTradingServer]:
    with binance_trading_server() as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def venue(server: BinanceTradingServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
          caplog: pytest.LogCaptureFixture) -> Iterator[BinanceTradingServer]:
    reset_server(server, clock)
    use_canary_credentials(monkeypatch, server)
    caplog.set_level(logging.DEBUG)
    yield server
    assert_no_secret(caplog.text)


def _execution(server: BinanceTradingServer, tmp_path: Path, clock: FakeClock,
               **overrides: object) -> LiveExecution:
    return LiveExecution(make_config(server, tmp_path / "execution.json", **overrides),
                         clock=clock)


def _open_book(execution: LiveExecution) -> None:
    """A long BTC and a short ETH position, resting limits and exchange-held stops."""
    execution.place(BTC, 1, 0.05)
    execution.place_stop(BTC, -1, 0.05, stop_price=55_000.0)
    execution.place_stop(BTC, -1, 0.05, stop_price=70_000.0, take_profit=True)
    execution.place(BTC, 1, 0.01, "limit", price=50_000.0)
    execution.place(ETH, -1, 0.4)
    execution.place(ETH, -1, 0.2, "limit", price=3_000.0)


def _assert_flat(server: BinanceTradingServer) -> None:
    assert server.venue.open_orders(None, algo=False) == []
    assert server.venue.open_orders(None, algo=True) == []
    assert all(p.amount == 0 for p in server.venue.positions.values())


@pytest.mark.slow
def test_kill_switch_flattens_fast_and_stays_halted_after_restart(
        venue: BinanceTradingServer, clock: FakeClock, tmp_path: Path) -> None:
    execution = _execution(venue, tmp_path, clock)
    execution.reconcile()
    _open_book(execution)
    assert len(venue.venue.open_orders(None, algo=True)) == 2

    started = time.monotonic()
    status = execution.kill("operator kill")
    assert time.monotonic() - started < 5.0
    _assert_flat(venue)
    assert status["halted"] and status["open_orders"] == []
    assert status["positions"] == {BTC: 0.0, ETH: 0.0}
    assert json.loads((tmp_path / "execution.json").read_text())["halted"] is True
    with pytest.raises(TradingBlockedError, match="HALTED"):
        execution.place(BTC, 1, 0.01)

    restarted = _execution(venue, tmp_path, clock)
    assert restarted.reconcile()["ready"] is False
    with pytest.raises(TradingBlockedError, match="HALTED") as blocked:
        restarted.place(BTC, 1, 0.01)
    restarted.reset_halt()
    with pytest.raises(TradingBlockedError, match="reconcile"):
        restarted.place(BTC, 1, 0.01)
    assert restarted.reconcile()["ready"] is True
    assert restarted.place(BTC, 1, 0.01).state is OrderState.FILLED
    assert_no_secret(blocked.value, restarted.status(), execution.drain_journal())


@pytest.mark.slow
def test_watchdog_flattens_after_silence(venue: BinanceTradingServer, clock: FakeClock,
                                         tmp_path: Path) -> None:
    execution = _execution(venue, tmp_path, clock, watchdog_timeout_s=60.0)
    execution.reconcile()
    _open_book(execution)
    execution.heartbeat()
    clock.advance(59.0)
    assert execution.check_watchdog() is False
    assert venue.venue.open_orders(None, algo=False)
    execution.heartbeat()
    clock.advance(59.0)
    assert execution.check_watchdog() is False  # the heartbeat reset the timer
    clock.advance(2.0)
    assert execution.check_watchdog() is True
    _assert_flat(venue)
    assert execution.check_watchdog() is False  # fires once
    with pytest.raises(TradingBlockedError):
        execution.place(BTC, 1, 0.01)
    kinds = [row["kind"] for row in execution.drain_journal()["execution_events"]]
    assert "watchdog" in kinds and "flatten" in kinds


@pytest.mark.slow
def test_heartbeat_refreshes_the_venue_countdown(venue: BinanceTradingServer, clock: FakeClock,
                                                 tmp_path: Path) -> None:
    execution = _execution(venue, tmp_path, clock, symbols=(BTC,), countdown_cancel_ms=30_000)
    execution.reconcile()
    resting = execution.place(BTC, 1, 0.01, "limit", price=50_000.0)
    execution.heartbeat()
    countdowns = [r for r in venue.requests if r.path == "/fapi/v1/countdownCancelAll"]
    assert [(r.params["symbol"], r.params["countdownTime"]) for r in countdowns] == [
        ("BTCUSDT", "30000")]
    clock.advance(25.0)
    execution.heartbeat()
    clock.advance(25.0)  # 50 s after the first, 25 s after the refresh: still alive
    assert execution.status()["open_orders"] == [resting.client_order_id]
    assert venue.venue.by_client_id(resting.client_order_id).open
    clock.advance(10.0)  # the process went silent: the venue cancels on its own
    status = execution.reconcile()  # its first request lets the venue's timer fire
    assert not venue.venue.by_client_id(resting.client_order_id).open
    assert venue.venue.countdown_fired == ["BTCUSDT"]
    assert status["open_orders"] == [] and resting.state is OrderState.CANCELED


@pytest.mark.slow
def test_withdraw_enabled_key_is_refused(venue: BinanceTradingServer, clock: FakeClock,
                                         tmp_path: Path) -> None:
    venue.venue.withdrawals_enabled = True
    execution = _execution(venue, tmp_path, clock)
    with pytest.raises(UnsafeApiKeyError, match="enableWithdrawals") as refused:
        execution.reconcile()
    assert execution.ready is False
    with pytest.raises(TradingBlockedError):
        execution.place(BTC, 1, 0.01)
    assert venue.creates("") == 0 and not any(p.startswith("POST") for p in venue.paths())
    assert_no_secret(refused.value)


@pytest.mark.slow
def test_canary_secret_never_leaks_from_errors(venue: BinanceTradingServer, clock: FakeClock,
                                               tmp_path: Path) -> None:
    execution = _execution(venue, tmp_path, clock)
    execution.reconcile()
    # a venue (or proxy) echoing credentials in its error body, on a create and on reads
    echo = f"bad request from key {venue.api_key} signed with {CANARY_SECRET}"
    venue.fail_next("create", 400, -1102, echo)
    rejected = execution.place(BTC, 1, 0.01)
    assert rejected.state is OrderState.REJECTED
    assert "<redacted>" in rejected.history[-1].reason
    venue.fail_next("read", 503, msg=echo, count=10)
    with pytest.raises(VenueError) as failed:
        execution.reconcile()
    assert failed.value.category == "network" and failed.value.__cause__ is None
    assert failed.value.__context__ is None  # the ccxt exception (URL, body) is not chained
    venue.clear_faults()
    venue.api_key = "another-key"  # the venue no longer knows our key
    with pytest.raises(VenueError) as refused:
        execution.reconcile()
    assert refused.value.category == "auth"
    assert_no_secret(failed.value, refused.value, execution.status(), repr(execution),
                     execution.drain_journal(), rejected.journal_rows())


@pytest.mark.slow
def test_kill_keeps_going_when_a_cancel_fails(venue: BinanceTradingServer, clock: FakeClock,
                                              tmp_path: Path) -> None:
    execution = _execution(venue, tmp_path, clock)
    execution.reconcile()
    _open_book(execution)
    venue.fail_next("cancel", 503)
    with pytest.raises(ExecutionError, match=r"flatten \(drawdown\) incomplete") as incomplete:
        execution.kill("drawdown")
    assert all(p.amount == 0 for p in venue.venue.positions.values())  # still closed
    assert load_state(tmp_path / "execution.json").halted
    assert_no_secret(incomplete.value)


def test_unreadable_state_file_counts_as_halted(tmp_path: Path) -> None:
    path = tmp_path / "execution.json"
    save_state(path, ExecutionState(False, "", 7))
    assert load_state(path) == ExecutionState(False, "", 7)
    path.write_text("{not json")
    state = load_state(path)
    assert state.halted and "unreadable" in state.halt_reason
    assert [p.name for p in tmp_path.iterdir()] == ["execution.json"]  # no temporary left over
