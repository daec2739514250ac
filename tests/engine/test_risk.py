"""PortfolioRisk and its rules: approve, cap and reject per rule; exits always pass; fail closed;
lazy application in key order."""

from __future__ import annotations

import itertools
import math
import pickle

import pytest

from engine.config import RiskConfig
from engine.risk import LocalGateway, PortfolioRisk
from engine.timeframes import NS_PER_DAY, NS_PER_HOUR
from engine.types import Fill, Mark, OrderIntent, PortfolioUpdate, intent_id_for, order_id_for

DAY0 = 20_000 * NS_PER_DAY  # a UTC midnight
EQUITY = 100_000.0


def intent(
    symbol: str = "AAA",
    ts: int = DAY0 + NS_PER_HOUR,
    sequence: int = 100,
    side: int = 1,
    quantity: float | None = None,
    price: float = 100.0,
    stop: float | None = 98.0,
    reduce_only: bool = False,
    kind: str = "entry",
) -> OrderIntent:
    return OrderIntent(
        intent_id=intent_id_for(symbol, sequence),
        symbol=symbol,
        ts_event=ts,
        sequence=sequence,
        side=side,
        intent_kind=kind,
        reduce_only=reduce_only,
        quantity=quantity,
        reference_price=price,
        stop_price=stop,
        reason="test",
    )


def fill(
    symbol: str,
    ts: int,
    sequence: int,
    side: int,
    quantity: float,
    price: float,
    stop: float | None = None,
    fee: float = 0.0,
    order_sequence: int | None = None,
) -> Fill:
    return Fill(
        fill_id=f"{symbol}:f{sequence}",
        order_id=order_id_for(symbol, sequence - 1 if order_sequence is None else order_sequence),
        symbol=symbol,
        ts_event=ts,
        sequence=sequence,
        side=side,
        quantity=quantity,
        price=price,
        reference_price=price,
        fee=fee,
        liquidity="taker",
        slippage_bps=0.0,
        latency_ms=0.0,
        stop_price=stop,
    )


def mark(symbol: str, ts: int, sequence: int, price: float, stop: float | None = None) -> Mark:
    return Mark(symbol, ts, sequence, price, stop)


def risk_with(*updates: PortfolioUpdate, config: RiskConfig | None = None) -> PortfolioRisk:
    risk = PortfolioRisk(config or RiskConfig(), EQUITY)
    risk.submit(list(updates))
    return risk


def open_position(
    symbol: str, quantity: float, price: float = 100.0, stop: float | None = 90.0, ts: int = DAY0
) -> Fill:
    return fill(symbol, ts, 1, 1 if quantity > 0 else -1, abs(quantity), price, stop)


# ---------------------------------------------------------------- sizing


def test_fixed_fractional_sizes_from_the_stop() -> None:
    decision = risk_with().decide(intent(quantity=None, price=100.0, stop=98.0))
    assert decision.approved
    assert decision.rule == "fixed_fractional"
    assert decision.quantity == pytest.approx(0.01 * EQUITY / 2.0)


def test_missing_stop_uses_default_stop_pct() -> None:
    decision = risk_with().decide(intent(quantity=None, price=100.0, stop=None))
    assert decision.quantity == pytest.approx(0.01 * EQUITY / (100.0 * 0.02))


def test_fixed_quantity_is_approved_as_asked() -> None:
    decision = risk_with().decide(intent(quantity=3.0))
    assert (decision.approved, decision.rule, decision.quantity) == (True, "fixed_quantity", 3.0)


# ---------------------------------------------------------------- portfolio heat


def test_heat_approves_within_the_limit() -> None:
    risk = risk_with(open_position("BBB", 300.0, stop=90.0))  # 3,000 at risk: 3%
    decision = risk.decide(intent(quantity=None))  # wants 1%
    assert decision.approved and decision.rule == "fixed_fractional"
    assert decision.portfolio_heat == pytest.approx(0.03)


def test_heat_caps_a_sized_entry_to_what_fits() -> None:
    risk = risk_with(open_position("BBB", 450.0, stop=90.0))  # 4.5% at risk
    decision = risk.decide(intent(quantity=None, price=100.0, stop=98.0))
    assert decision.approved
    assert decision.rule == "portfolio_heat"
    assert decision.quantity == pytest.approx(0.005 * EQUITY / 2.0)


def test_heat_rejects_a_sized_entry_when_nothing_fits() -> None:
    risk = risk_with(open_position("BBB", 500.0, stop=90.0))  # 5% at risk
    decision = risk.decide(intent(quantity=None))
    assert not decision.approved
    assert (decision.rule, decision.quantity) == ("portfolio_heat", 0.0)


def test_heat_rejects_a_fixed_quantity_that_does_not_fit() -> None:
    risk = risk_with(open_position("BBB", 450.0, stop=90.0))
    decision = risk.decide(intent(quantity=400.0, price=100.0, stop=98.0))  # 800 at risk > 500
    assert not decision.approved and decision.rule == "portfolio_heat"


def test_heat_uses_default_stop_for_positions_without_one() -> None:
    risk = risk_with(open_position("BBB", 1000.0, stop=None))  # 1000 x 2.0 = 2%
    decision = risk.decide(intent(quantity=None))
    assert decision.portfolio_heat == pytest.approx(0.02)


def test_heat_follows_the_stop_carried_by_marks() -> None:
    risk = risk_with(
        open_position("BBB", 450.0, stop=90.0),
        mark("BBB", DAY0 + 10, 2, 100.0, stop=99.0),  # trailed: 450 x 1 = 0.45%
    )
    decision = risk.decide(intent(quantity=None))
    assert decision.portfolio_heat == pytest.approx(0.0045)
    assert decision.rule == "fixed_fractional"


# ---------------------------------------------------------------- leverage


def test_leverage_caps_a_sized_entry() -> None:
    decision = risk_with().decide(intent(quantity=None, price=100.0, stop=99.9))  # wants 10x
    assert decision.approved and decision.rule == "max_leverage"
    assert decision.quantity == pytest.approx(3.0 * EQUITY / 100.0)


def test_leverage_rejects_a_fixed_quantity_beyond_the_limit() -> None:
    decision = risk_with().decide(intent(quantity=4000.0, price=100.0, stop=99.99))
    assert not decision.approved and decision.rule == "max_leverage"


def test_leverage_rejects_when_nothing_fits() -> None:
    risk = risk_with(open_position("BBB", 3000.0, stop=99.99))
    decision = risk.decide(intent(quantity=None, price=100.0, stop=99.9))
    assert not decision.approved and decision.rule == "max_leverage"
    assert decision.gross_leverage == pytest.approx(3.0)


def test_leverage_approves_within_the_limit() -> None:
    decision = risk_with().decide(intent(quantity=1000.0, price=100.0, stop=99.99))
    assert decision.approved and decision.rule == "fixed_quantity"


# ---------------------------------------------------------------- open positions, flips


def test_max_open_positions() -> None:
    symbols = ["B1", "B2", "B3", "B4", "B5"]
    risk = risk_with(*[open_position(symbol, 1.0) for symbol in symbols])
    rejected = risk.decide(intent(symbol="AAA", quantity=1.0))
    assert not rejected.approved and rejected.rule == "max_open_positions"
    assert rejected.open_positions == 5
    adding = risk.decide(intent(symbol="B1", quantity=1.0, sequence=101))
    assert adding.approved
    config = RiskConfig(max_open_positions=6)
    approved = risk_with(*[open_position(s, 1.0) for s in symbols], config=config).decide(
        intent(symbol="AAA", quantity=1.0)
    )
    assert approved.approved


def test_entry_against_a_position_is_refused_as_a_flip() -> None:
    risk = risk_with(open_position("AAA", 10.0))
    decision = risk.decide(intent(side=-1, quantity=5.0, stop=102.0))
    assert not decision.approved and decision.rule == "net_flip"


def test_approved_orders_reserve_room_before_they_fill() -> None:
    risk = risk_with()
    first = risk.decide(intent(symbol="AAA", quantity=None, sequence=10))
    assert first.approved
    second = risk.decide(intent(symbol="BBB", quantity=None, sequence=10))
    assert second.portfolio_heat == pytest.approx(0.01)
    assert second.open_positions == 1


# ---------------------------------------------------------------- kill switch, daily loss


def test_kill_switch_blocks_entries_not_exits() -> None:
    risk = risk_with(open_position("AAA", 10.0))
    risk.halt("operator")
    entry = risk.decide(intent(symbol="BBB", quantity=1.0))
    assert not entry.approved and entry.rule == "kill_switch" and "operator" in entry.reason
    exit_ = risk.decide(
        intent(symbol="AAA", side=-1, quantity=10.0, reduce_only=True, kind="exit", sequence=101)
    )
    assert exit_.approved and exit_.rule == "reduce_only" and exit_.quantity == 10.0
    risk.resume()
    assert risk.decide(intent(symbol="BBB", quantity=1.0, sequence=102)).approved


def test_daily_loss_limit_latches_until_midnight() -> None:
    risk = risk_with(
        open_position("AAA", 1000.0, price=100.0, stop=None, ts=DAY0 + 1),
        mark("AAA", DAY0 + 2 * NS_PER_HOUR, 2, 96.9),  # -3,100: 3.1% below the day's start
        mark("AAA", DAY0 + 4 * NS_PER_HOUR, 3, 100.0),  # recovered, same day
    )
    entry = risk.decide(intent(symbol="BBB", quantity=1.0, ts=DAY0 + 3 * NS_PER_HOUR))
    assert not entry.approved and entry.rule == "daily_loss_limit"
    assert entry.daily_pnl == pytest.approx(-3100.0)
    exit_ = risk.decide(
        intent(
            symbol="AAA",
            side=-1,
            quantity=500.0,
            reduce_only=True,
            kind="exit",
            ts=DAY0 + 3 * NS_PER_HOUR,
            sequence=101,
        )
    )
    assert exit_.approved and exit_.rule == "reduce_only"
    later = risk.decide(intent(symbol="BBB", quantity=1.0, ts=DAY0 + 5 * NS_PER_HOUR, sequence=5))
    assert not later.approved and later.rule == "daily_loss_limit"
    next_day = risk.decide(intent(symbol="BBB", quantity=1.0, ts=DAY0 + NS_PER_DAY + 1, sequence=6))
    assert next_day.approved
    assert next_day.daily_pnl == pytest.approx(0.0)


def test_loss_below_the_limit_still_approves() -> None:
    risk = risk_with(
        open_position("AAA", 1000.0, price=100.0, stop=None, ts=DAY0 + 1),
        mark("AAA", DAY0 + 2 * NS_PER_HOUR, 2, 97.1),  # -2.9%
    )
    decision = risk.decide(intent(symbol="BBB", quantity=1.0, ts=DAY0 + 3 * NS_PER_HOUR))
    assert decision.approved


# ---------------------------------------------------------------- fail closed


@pytest.mark.parametrize(
    "changes",
    [
        {"price": math.nan},
        {"price": -1.0},
        {"quantity": math.nan},
        {"quantity": -2.0},
        {"quantity": 0.0},
        {"stop": math.nan},
        {"stop": 101.0},  # a long's stop above the price
        {"side": 0},
    ],
)
def test_invalid_inputs_are_rejected(changes: dict[str, float]) -> None:
    arguments: dict[str, float | None] = {"quantity": 1.0, "price": 100.0, "stop": 98.0}
    arguments.update(changes)
    decision = risk_with().decide(intent(**arguments))  # type: ignore[arg-type]
    assert not decision.approved and decision.rule == "invalid_input"


def test_nan_equity_rejects_entries_but_exits_pass() -> None:
    risk = risk_with(fill("AAA", DAY0 + 1, 1, 1, 1.0, math.nan))
    entry = risk.decide(intent(symbol="BBB", quantity=1.0))
    assert not entry.approved and entry.rule == "invalid_input"
    exit_ = risk.decide(
        intent(
            symbol="AAA",
            side=-1,
            quantity=1.0,
            reduce_only=True,
            kind="exit",
            sequence=101,
            price=math.nan,
        )
    )
    assert exit_.approved and exit_.rule == "reduce_only"


def test_reduce_only_needs_a_valid_quantity() -> None:
    decision = risk_with().decide(intent(side=-1, quantity=math.nan, reduce_only=True, kind="exit"))
    assert not decision.approved and decision.rule == "invalid_input"


def test_nan_mark_is_ignored_and_counted() -> None:
    risk = risk_with(open_position("AAA", 10.0), mark("AAA", DAY0 + 5, 2, math.nan))
    risk.apply_all()
    assert risk.equity == pytest.approx(EQUITY)
    assert risk.summary()["invalid_updates"] == 1


# ---------------------------------------------------------------- ordered lazy application


def _updates() -> list[PortfolioUpdate]:
    hour = NS_PER_HOUR
    return [
        fill("AAA", DAY0 + 1 * hour, 1, 1, 200.0, 100.0, 95.0, fee=2.0),
        fill("BBB", DAY0 + 1 * hour, 1, -1, 100.0, 50.0, 52.0, fee=1.0),
        mark("AAA", DAY0 + 2 * hour, 2, 101.0, 96.0),
        mark("BBB", DAY0 + 2 * hour, 2, 49.0, 52.0),
        mark("AAA", DAY0 + 3 * hour, 3, 99.0, 96.0),
        fill("BBB", DAY0 + 3 * hour, 3, 1, 50.0, 48.0, 52.0, fee=0.5, order_sequence=9),
        mark("AAA", DAY0 + 5 * hour, 4, 80.0, 96.0),  # after the decision: must not count
        mark("BBB", DAY0 + 5 * hour, 4, 60.0, 52.0),
    ]


def _decide_with(order: list[PortfolioUpdate]) -> tuple[object, dict[str, list[dict]]]:
    risk = PortfolioRisk(RiskConfig(), EQUITY)
    risk.submit(order)
    decision = risk.decide(intent(symbol="CCC", quantity=None, ts=DAY0 + 4 * NS_PER_HOUR))
    risk.finish()
    return decision, risk.drain_journal()


def test_updates_apply_in_key_order_whatever_the_arrival_order() -> None:
    updates = _updates()
    expected_decision, expected_journal = _decide_with(updates)
    for permutation in itertools.islice(itertools.permutations(updates), 0, 40320, 997):
        decision, journal = _decide_with(list(permutation))
        assert decision == expected_decision
        assert repr(journal) == repr(expected_journal)
    for reordered in (list(reversed(updates)), updates[1::2] + updates[0::2]):
        decision, journal = _decide_with(reordered)
        assert decision == expected_decision and repr(journal) == repr(expected_journal)


def test_updates_after_the_intent_do_not_affect_it() -> None:
    before = [update for update in _updates() if update.ts_event < DAY0 + 4 * NS_PER_HOUR]
    decision_all, _ = _decide_with(_updates())
    decision_before, _ = _decide_with(before)
    assert decision_all == decision_before
    # AAA: 200 long from 100 marked at 99; BBB: short 100 from 50, 50 bought back at 48
    # (realized +100), the rest marked at that fill's 48 (+100); fees 3.5.
    expected = EQUITY - 3.5 + 200 * (99.0 - 100.0) + 50 * (50.0 - 48.0) + 50 * (50.0 - 48.0)
    assert decision_all.equity == pytest.approx(expected)  # type: ignore[attr-defined]


def test_late_updates_are_counted() -> None:
    risk = PortfolioRisk(RiskConfig(), EQUITY)
    risk.decide(intent(ts=DAY0 + 10))
    risk.submit([mark("AAA", DAY0 + 5, 1, 100.0)])
    assert risk.summary()["late_updates"] == 1


# ---------------------------------------------------------------- journal and summary


def test_journal_rows_and_summary() -> None:
    risk = PortfolioRisk(RiskConfig(), EQUITY)
    gateway = LocalGateway(risk)
    entry = intent(quantity=None, ts=DAY0 + 10, sequence=0)
    decision = gateway.decide(entry, [])
    filled = fill("AAA", DAY0 + 20, 1, 1, decision.quantity, 100.0, 98.0, fee=1.0, order_sequence=0)
    marked = mark("AAA", DAY0 + 60, 2, 101.0, 98.0)
    exit_ = intent(
        side=-1,
        quantity=decision.quantity,
        reduce_only=True,
        kind="exit",
        ts=DAY0 + 70,
        sequence=3,
        price=101.0,
    )
    gateway.decide(exit_, [filled, marked])
    closed = fill(
        "AAA", DAY0 + 80, 4, -1, decision.quantity, 102.0, None, fee=1.0, order_sequence=3
    )
    risk.submit([closed])
    risk.finish()
    journal = risk.drain_journal()
    assert [row["key"] for row in journal["risk_decisions"]] == ["AAA:i0", "AAA:i3"]
    assert (
        journal["risk_decisions"][0]["requested_qty"]
        != journal["risk_decisions"][0]["requested_qty"]
    )  # NaN: risk sized it
    assert [row["key"] for row in journal["equity"]] == [f"{DAY0 + 60}:AAA:2"]
    assert journal["equity"][0]["unrealized_pnl"] == pytest.approx(decision.quantity)
    assert [row["key"] for row in journal["positions"]] == ["AAA:f1", "AAA:f4"]
    assert journal["positions"][1]["quantity"] == 0.0
    summary = risk.summary()
    assert summary["realized_pnl"] == pytest.approx(2.0 * decision.quantity)
    assert summary["fees"] == pytest.approx(2.0)
    assert summary["equity"] == pytest.approx(EQUITY + 2.0 * decision.quantity - 2.0)
    assert (summary["approved"], summary["rejected"]) == (2, 0)
    assert summary["open_positions"] == 0
    assert risk.drain_journal() == {
        "risk_decisions": [], "equity": [], "positions": [], "risk_events": []
    }


def test_drawdown_tracks_the_peak() -> None:
    risk = risk_with(
        open_position("AAA", 100.0, price=100.0, ts=DAY0 + 1),
        mark("AAA", DAY0 + 2, 2, 110.0),
        mark("AAA", DAY0 + 3, 3, 90.0),
        mark("AAA", DAY0 + 4, 4, 105.0),
    )
    risk.finish()
    assert risk.peak_equity == pytest.approx(EQUITY + 1000.0)
    assert risk.max_drawdown == pytest.approx(2000.0 / (EQUITY + 1000.0))
    rows = risk.drain_journal()["equity"]
    assert rows[1]["drawdown"] == pytest.approx(2000.0 / (EQUITY + 1000.0))


def test_realized_pnl_on_partial_and_flip_fills() -> None:
    risk = risk_with(
        fill("AAA", DAY0 + 1, 1, 1, 10.0, 100.0),
        fill("AAA", DAY0 + 2, 2, 1, 10.0, 110.0),
        fill("AAA", DAY0 + 3, 3, -1, 5.0, 120.0),
        fill("AAA", DAY0 + 4, 4, -1, 20.0, 100.0),
    )
    risk.finish()
    assert risk.realized == pytest.approx(5 * 15.0 + 15 * -5.0)
    assert risk.position("AAA") == (-5.0, 100.0)


def test_state_is_picklable() -> None:
    risk = risk_with(*_updates())
    risk.decide(intent(symbol="CCC", quantity=None, ts=DAY0 + 4 * NS_PER_HOUR))
    clone = pickle.loads(pickle.dumps(risk))
    a = risk.decide(intent(symbol="DDD", quantity=None, ts=DAY0 + 6 * NS_PER_HOUR))
    b = clone.decide(intent(symbol="DDD", quantity=None, ts=DAY0 + 6 * NS_PER_HOUR))
    assert a == b


def test_initial_equity_must_be_valid() -> None:
    with pytest.raises(ValueError, match="initial equity"):
        PortfolioRisk(RiskConfig(), math.nan)


# ---------------------------------------------------------------- stale data (live feed alarm)


def test_an_entry_on_stale_data_is_rejected_with_its_rule() -> None:
    from dataclasses import replace

    risk = risk_with()
    decision = risk.decide(replace(intent(quantity=None), data_stale=True))
    assert not decision.approved
    assert decision.rule == "stale_data"
    assert "stale" in decision.reason and "AAA" in decision.reason


def test_an_exit_on_stale_data_still_passes() -> None:
    from dataclasses import replace

    risk = risk_with(open_position("AAA", 10.0))
    exit_intent = replace(intent(quantity=10.0, side=-1, reduce_only=True, kind="exit",
                                 sequence=200), data_stale=True)
    assert risk.decide(exit_intent).approved
