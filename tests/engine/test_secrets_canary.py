"""The secrets canary: an API key and secret never appear in logs, journal, metrics or tracebacks.

A unique canary key and secret are put into the environment variables live execution reads (the
names come from `ExecutionConfig`), and the local Binance server accepts only them. Live
execution is then driven through the faults it must survive: venue error bodies that echo the
credentials, 5xx, rate limits, clock errors, create and cancel timeouts (unknown outcomes
resolved by query), rejections, a revoked key, a kill whose cancel fails, and exceptions raised on
purpose. Everything a key could leak into is captured and searched for the key, the secret and
their first 8 characters:

- every log record of every logger at DEBUG (ccxt's request and response lines included) and
  what reached the process's stdout and stderr;
- every row of every journal table, written to a DuckDB journal and dumped back as text, and the
  raw bytes of the journal and state files: the orders and events of live execution, and the
  decisions and events of a PortfolioRisk that was shown every failed venue call (with its
  redacted reason) and refused an entry for the API error rate;
- the Prometheus exposition of the run's metrics registry and of the default registry;
- `traceback.format_exception` of every exception raised;
- `repr` and `str` of the config, the venue client, live execution, its status and its orders.

The search is shown to work: the same scan finds a canary planted in each kind of output.
"""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from engine.config import RiskConfig
from engine.execution import (
    ExecutionConfig,
    ExecutionError,
    LiveExecution,
    TradingBlockedError,
    VenueClient,
    VenueError,
)
from engine.metrics import RunMetrics
from engine.orders import OrderState
from engine.risk import PortfolioRisk
from engine.types import OrderIntent
from storage.journal import JournalWriter
from storage.schemas import JOURNAL_TABLES
from tests.engine.live_execution_helpers import BTC, ETH, make_config
from tests.support.binance_trading_server import (
    BinanceTradingServer,
    FakeClock,
    binance_trading_server,
    reset_server,
)

# A risk profile watching the venue's error rate (intraday plan's api_error_rate rule).
RISK_WITH_API_WATCH = RiskConfig(profile={
    "name": "canary_api_watch",
    "rules": [{"rule": "kill_switch"}, {"rule": "api_error_rate", "min_calls": 3},
              {"rule": "fixed_fractional"}],
})


def clock_ns(clock: FakeClock) -> int:
    return int(clock() * 1e9)


@dataclass(frozen=True)
class Canary:
    """A key and a secret no other test uses; 'K9'/'S9' make their first 8 characters unlike
    any hex id or signature."""

    key: str = field(default_factory=lambda: "K9" + secrets.token_hex(31))
    secret: str = field(default_factory=lambda: "S9" + secrets.token_hex(31))

    @property
    def probes(self) -> tuple[str, ...]:
        return (self.key, self.secret, self.key[:8], self.secret[:8])

    def found_in(self, text: str) -> list[str]:
        """The probes `text` contains (the whole key or secret, or their first 8 characters)."""
        return [probe for probe in self.probes if probe in text]


def render(value: object) -> str:
    """An exception as its full traceback (with chained causes), anything else as repr + str."""
    if isinstance(value, BaseException):
        return "".join(traceback.format_exception(value))
    return f"{value!r}\n{value}"


def dump_journal(path: Path) -> str:
    """Every row of every journal table as text, plus the raw bytes of the DuckDB files."""
    lines: list[str] = []
    with duckdb.connect(str(path), read_only=True) as connection:
        for table in JOURNAL_TABLES:
            for row in connection.execute(f'SELECT * FROM "{table}"').fetchall():
                lines.append(f"{table}: {row!r}")
    raw = b"".join(candidate.read_bytes() for candidate in path.parent.iterdir()
                   if candidate.name.startswith(path.name))
    return "\n".join(lines) + "\n" + raw.decode("latin-1")


def metrics_text(registry: CollectorRegistry) -> str:
    return (generate_latest(registry).decode()
            + generate_latest(prometheus_client.REGISTRY).decode())


@pytest.fixture(scope="module")
def server() -> Iterator[BinanceTradingServer]:
    with binance_trading_server() as running:
        yield running


@pytest.fixture
def canary(server: BinanceTradingServer, monkeypatch: pytest.MonkeyPatch) -> Canary:
    """Fresh canary credentials: in the environment variables the config names, and the only
    ones the venue accepts."""
    planted = Canary()
    defaults = ExecutionConfig(run_id="r", state_file=Path("unused.json"))
    monkeypatch.setenv(defaults.api_key_env, planted.key)
    monkeypatch.setenv(defaults.api_secret_env, planted.secret)
    server.api_key = planted.key
    server.secret = planted.secret
    return planted


def test_the_scan_finds_a_planted_canary(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    """Each output the canary test searches does show a canary that was put into it."""
    planted = Canary()
    assert planted.found_in(f"header X-MBX-APIKEY: {planted.key}") == [planted.key,
                                                                       planted.key[:8]]
    assert planted.found_in(f"key starts {planted.secret[:8]}...") == [planted.secret[:8]]
    assert planted.found_in("nothing here: 0123abcd " + secrets.token_hex(32)) == []
    caplog.set_level(logging.DEBUG)
    logging.getLogger("engine.execution.ccxt").debug("request headers %s", planted.key)
    print(f"stdout {planted.secret}")
    assert planted.found_in(caplog.text) and planted.found_in(capfd.readouterr().out)
    path = tmp_path / "journal.duckdb"
    with JournalWriter(path, "canary-self-check") as journal:
        journal.append("execution_events", [{"key": "k", "ts_event": 1, "symbol": "*",
                                             "kind": "probe", "detail": planted.secret}])
    assert planted.found_in(dump_journal(path))
    registry = CollectorRegistry()
    Counter("ats_probe", f"help text {planted.key}", registry=registry).inc()
    assert planted.found_in(metrics_text(registry))
    try:
        raise VenueError("auth", "plain message") from RuntimeError(f"cause {planted.key}")
    except VenueError as error:
        assert planted.found_in(render(error)) == [planted.key, planted.key[:8]]


@pytest.mark.slow
def test_canary_credentials_never_leak(server: BinanceTradingServer, canary: Canary,
                                       tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                       capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, ccxt's request/response lines included
    clock = FakeClock()
    reset_server(server, clock)
    venue = server.venue
    config = make_config(server, tmp_path / "execution.json")
    execution = LiveExecution(config, clock=clock)
    raised: list[BaseException] = []
    outputs: list[object] = [config, config.model_dump_json(), execution.client]
    echo = f"bad request from key {canary.key} signed with {canary.secret}"

    def expect(kind: type[BaseException], call: Any, *args: Any, **kwargs: Any) -> None:
        with pytest.raises(kind) as caught:
            call(*args, **kwargs)
        raised.append(caught.value)

    execution.reconcile()
    filled = execution.place(BTC, 1, 0.02)
    resting = execution.place(ETH, -1, 0.2, "limit", price=3_000.0)
    stop = execution.place_stop(BTC, -1, 0.02, stop_price=55_000.0)
    assert (filled.state, resting.state, stop.state) == (
        OrderState.FILLED, OrderState.ACCEPTED, OrderState.ACCEPTED)

    # venue error bodies echoing the credentials: a rejection, a 5xx (unknown outcome) and a
    # clock error on creates, then a create that times out although the venue took it
    server.fail_next("create", 400, -1102, echo)
    assert execution.place(BTC, 1, 0.01).state is OrderState.REJECTED
    server.fail_next("create", 503, msg=echo)
    lost = execution.place(ETH, 1, 0.1)
    assert lost.state is OrderState.UNKNOWN
    expect(TradingBlockedError, execution.place, ETH, 1, 0.1)
    clock.advance(config.unknown_grace_s + 1)
    assert execution.resolve_unknown() == [] and lost.state is OrderState.REJECTED
    server.fail_next("create", 400, -1021, echo)
    assert execution.place(BTC, 1, 0.01).state is OrderState.REJECTED
    server.delay_next("create", seconds=1.0)
    timed_out = execution.place(BTC, 1, 0.01, "limit", price=50_000.0)
    assert timed_out.state is OrderState.ACCEPTED and server.creates(
        timed_out.client_order_id) == 1

    # cancels: a 5xx echoing the key, a timeout, and one the venue no longer knows
    server.fail_next("cancel", 503, msg=echo)
    execution.cancel(resting.client_order_id)
    execution.resolve_unknown()
    server.delay_next("cancel", seconds=1.0)
    assert execution.cancel(timed_out.client_order_id).state is OrderState.CANCELED
    assert resting.is_open  # the refused cancel left it working; it fills before the next
    venue.fill(resting.client_order_id)
    assert execution.cancel(resting.client_order_id).state is OrderState.FILLED

    # reads: rate limits and 5xx echoing the key until retries run out, a revoked key
    server.fail_next("read", 429, -1003, echo, count=10)
    expect(VenueError, execution.reconcile)
    server.clear_faults()
    server.fail_next("read", 503, msg=echo, count=2)
    execution.reconcile()
    server.api_key = "another-key"
    expect(VenueError, execution.reconcile)
    server.api_key = canary.key
    execution.reconcile()

    # exceptions raised on purpose
    expect(VenueError, execution.place, BTC, 1, 1e-9)
    expect(ValueError, execution.place, BTC, 1, 0.01, "iceberg")
    expect(TradingBlockedError, execution.place, "DOGE/USDT:USDT", 1, 1.0)
    expect(KeyError, execution.cancel, "no-such-order")
    missing = config.model_copy(update={"api_key_env": "ATS_CANARY_UNSET_KEY"})
    expect(ExecutionError, VenueClient, missing)

    # the kill switch, with a cancel that fails: HALTED persisted, positions closed, error raised
    execution.heartbeat()
    server.fail_next("cancel", 503, msg=echo)
    expect(ExecutionError, execution.kill, "canary kill")
    assert all(position.amount == 0 for position in venue.positions.values())
    expect(TradingBlockedError, execution.place, BTC, 1, 0.01)
    restarted = LiveExecution(config, clock=clock)
    restarted.reconcile()
    expect(TradingBlockedError, restarted.place, BTC, 1, 0.01)

    # risk watches the venue calls (the failures with their redacted reasons) and refuses entries
    risk = PortfolioRisk(RISK_WITH_API_WATCH, 10_000.0)
    failures = [(record.ts_event, record.reason) for order in execution.orders.values()
                for record in order.history if record.reason.startswith(("create_", "cancel_"))]
    failures += [(clock_ns(clock), str(error)) for error in raised
                 if isinstance(error, VenueError)]
    assert len(failures) >= 5
    for ts, what in sorted(failures):
        risk.observe_api_call(ts, False, what)
    entry = OrderIntent("BTC:i1", BTC, clock_ns(clock), 1, 1, "entry", False, None, 60_000.0,
                        59_000.0, reason="canary entry")
    assert risk.decide(entry).rule == "api_error_rate"

    # journal: everything both instances and risk journaled, through a DuckDB journal
    journal_path = tmp_path / "journal.duckdb"
    drained = [execution.drain_journal(), restarted.drain_journal(), risk.drain_journal()]
    with JournalWriter(journal_path, "canary-run") as journal:
        for rows in drained:
            journal.append_many(rows)
    assert sum(len(rows.get("orders", [])) for rows in drained) > 20
    assert drained[2]["risk_events"] and drained[2]["risk_decisions"]
    # metrics: the run's registry with the execution's counts
    metrics = RunMetrics()
    orders = list(execution.orders.values())
    metrics.add("orders", len(orders))
    metrics.add("fills", sum(len(order.fills) for order in orders))
    metrics.add("rejected_intents",
                sum(order.state is OrderState.REJECTED for order in orders))
    outputs += [execution, execution.status(), restarted, restarted.status(), *orders,
                *(order.history for order in orders)]

    captured = capfd.readouterr()
    channels = {
        "logs": caplog.text + "\n".join(
            f"{record.getMessage()} {record.args!r}" for record in caplog.records),
        "stdout": captured.out,
        "stderr": captured.err,
        "journal": dump_journal(journal_path),
        "state file": (tmp_path / "execution.json").read_text(),
        "metrics": metrics_text(metrics.registry),
        "tracebacks": "\n".join(render(error) for error in raised),
        "objects": "\n".join(render(value) for value in outputs),
    }
    leaks = {name: canary.found_in(text) for name, text in channels.items()}
    assert leaks == {name: [] for name in channels}, leaks
    assert len(raised) == 11
    assert "<redacted>" in channels["logs"]  # the echoed credentials reached the logs redacted
    assert "engine.execution.ccxt" in {record.name for record in caplog.records}


@pytest.mark.parametrize("misplaced", [{"api_key_env": "key"}, {"api_secret_env": "secret"},
                                       {"apiKey": "key"}, {"secret": "secret"}])
def test_a_key_written_into_the_config_is_not_echoed(misplaced: dict[str, str]) -> None:
    """An operator pastes the key where the variable name goes: the refusal must not print it."""
    planted = Canary()
    values = {name: planted.key if value == "key" else planted.secret
              for name, value in misplaced.items()}
    with pytest.raises(ValueError) as refused:
        ExecutionConfig.model_validate({"run_id": "r", "state_file": "s.json", **values})
    assert planted.found_in(render(refused.value)) == []
