"""The supervisor's ordering rule, tested on its state alone (no Ray needed)."""

from __future__ import annotations

from actors.supervisor import FOREVER, Supervisor, _SymbolState


def _supervisor(states: dict[str, _SymbolState], live: bool = False) -> Supervisor:
    supervisor = object.__new__(Supervisor)
    supervisor._symbols = states  # type: ignore[attr-defined]
    supervisor.live = live
    return supervisor


def test_a_single_symbol_is_never_held_back() -> None:
    supervisor = _supervisor({"BTCUSDT": _SymbolState(actor=None, watermark=100)})
    assert supervisor._horizon("BTCUSDT") == FOREVER


def test_horizon_is_the_slowest_other_symbol_and_ties_go_to_the_smaller_name() -> None:
    states = {
        "AAA": _SymbolState(actor=None, watermark=500),
        "BBB": _SymbolState(actor=None, watermark=300),
        "CCC": _SymbolState(actor=None, watermark=900),
    }
    supervisor = _supervisor(states)
    # AAA may decide up to BBB's watermark, and at it too (AAA < BBB).
    assert supervisor._horizon("AAA") == 301
    # CCC may decide only strictly before BBB's watermark (CCC > BBB).
    assert supervisor._horizon("CCC") == 300
    assert supervisor._horizon("BBB") == 500  # BBB > AAA: strictly before AAA


def test_paused_symbols_bound_at_their_intent_and_finished_ones_not_at_all() -> None:
    states = {
        "AAA": _SymbolState(actor=None, watermark=500, paused=True, pending_intent_ts=200),
        "BBB": _SymbolState(actor=None, watermark=300, finished=True),
    }
    supervisor = _supervisor(states)
    assert states["BBB"].bound() == FOREVER
    assert supervisor._horizon("BBB") == 200  # BBB > AAA: strictly before AAA's intent
    assert supervisor._horizon("AAA") == FOREVER


def test_a_symbol_without_data_yet_holds_everyone_back() -> None:
    states = {"AAA": _SymbolState(actor=None, watermark=10**18), "ZZZ": _SymbolState(actor=None)}
    assert _supervisor(states)._horizon("AAA") == -FOREVER + 1


def test_live_mode_decides_in_arrival_order() -> None:
    states = {
        "AAA": _SymbolState(actor=None, watermark=500),
        "BBB": _SymbolState(actor=None, watermark=300, paused=True, pending_intent_ts=200),
    }
    supervisor = _supervisor(states, live=True)
    assert supervisor._horizon("AAA") == FOREVER and supervisor._horizon("BBB") == FOREVER
