"""Risk scenarios: a scripted tape of marks, fills, intents and venue events replayed through a
`PortfolioRisk`, to show (and test) what each rule of a profile does and how it is journaled.

A scenario is a YAML file (bundled ones live in `configs/risk/scenarios/`):

    name: intraday_breakout
    profile: intraday_breakout          # bundled name or path
    initial_equity: 100000
    start: "2024-03-01T00:00:00Z"
    expect_rules: [daily_loss_limit, portfolio_heat]   # each must trigger at least once
    default_features: {spread_bps: 1.0}  # merged under every intent's own features
    steps:
      - {at: 0, mark: {symbol: BTCUSDT, price: 60000}}
      - {at: 60, intent: {symbol: BTCUSDT, side: 1, price: 60000, stop: 59400,
                          features: {atr: 300}, expect: approve}}
      - {at: 61, fill: {symbol: BTCUSDT, quantity: approved, price: 60010, fee: 3}}
      - {at: 90, api_call: {ok: false, what: create_order}}
      - {at: 99, funding: {symbol: BTCUSDT, amount: 1.5}}
      - {at: 120, fill: {symbol: BTCUSDT, side: -1, quantity: position, price: 59000}}
      - {at: 130, reset_halt: operator}

`at` is seconds after `start` (steps must not go back in time). An intent's `expect` is
"approve", "reject", or a rule name that must decide it. A fill's `quantity` is a number,
"approved" (the last approved entry on that symbol, filled under its order id) or "position"
(closes the whole position; `side` defaults to the closing side). A rule *triggers* when it
rejects or resizes an intent or emits a risk event. Everything runs on event time, so two runs of
a scenario journal the same rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from engine.config import RiskConfig
from engine.risk import PortfolioRisk
from engine.rules.profile import load_profile
from engine.types import Fill, FundingPayment, Mark, OrderIntent, RiskDecision

SCENARIO_DIR = Path(__file__).resolve().parent.parent.parent / "configs" / "risk" / "scenarios"
_NS = 1_000_000_000


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the step and the key."""


@dataclass
class ScenarioResult:
    name: str
    profile: str
    decisions: list[RiskDecision] = field(default_factory=list)
    journal: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    triggered: dict[str, int] = field(default_factory=dict)  # rule -> times it acted
    mismatches: list[str] = field(default_factory=list)  # intent expectations not met
    missing_rules: list[str] = field(default_factory=list)  # expect_rules that never triggered
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.missing_rules


def scenario_path(name_or_path: str) -> Path:
    if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")):
        return SCENARIO_DIR / f"{name_or_path}.yaml"
    return Path(name_or_path)


def load_scenario(name_or_path: str) -> dict[str, Any]:
    path = scenario_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ScenarioError(f"cannot read scenario {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"scenario {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {path}: top level must be a mapping")
    for key in ("profile", "steps"):
        if key not in data:
            raise ScenarioError(f"scenario {path}: missing key {key!r}")
    data.setdefault("name", path.stem)
    return data


def _number(step: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = step.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


class _Runner:
    def __init__(self, scenario: dict[str, Any]) -> None:
        self.name = str(scenario["name"])
        profile = load_profile(str(scenario["profile"]))
        equity = scenario.get("initial_equity", 100_000)
        self.risk = PortfolioRisk(RiskConfig(profile=profile), float(equity))
        start = datetime.fromisoformat(str(scenario.get("start", "2024-01-01T00:00:00+00:00"))
                                       .replace("Z", "+00:00"))
        self.start_ns = int(start.timestamp()) * _NS
        self.result = ScenarioResult(self.name, profile.name)
        self.sequence = 0
        self.default_features: dict[str, Any] = dict(scenario.get("default_features") or {})
        self.last_ts = self.start_ns
        self.approved_orders: dict[str, tuple[str, int, float]] = {}  # symbol -> (order, side, qty)

    def run(self, steps: list[Any]) -> ScenarioResult:
        for index, step in enumerate(steps):
            where = f"{self.name} step {index}"
            if not isinstance(step, dict) or "at" not in step:
                raise ScenarioError(f"{where}: must be a mapping with an `at` key")
            ts = self.start_ns + round(_number(step, "at", where) * _NS)
            if ts < self.last_ts:
                raise ScenarioError(f"{where}: `at` goes back in time")
            self.last_ts = ts
            self.sequence += 1
            kinds = [kind for kind in ("mark", "intent", "fill", "api_call", "funding",
                                       "reset_halt", "halt") if kind in step]
            if len(kinds) != 1:
                raise ScenarioError(f"{where}: needs exactly one of mark, intent, fill, api_call, "
                                    f"funding, reset_halt, halt; got {kinds or 'none'}")
            getattr(self, f"_{kinds[0]}")(step[kinds[0]], ts, f"{where} ({kinds[0]})")
        self.risk.finish()
        self._collect()
        self.result.summary = self.risk.summary()
        return self.result

    def _mark(self, body: dict[str, Any], ts: int, where: str) -> None:
        self.risk.submit([Mark(str(body["symbol"]), ts, self.sequence,
                               _number(body, "price", where), body.get("stop_price"))])
        self.risk.apply_all()

    def _funding(self, body: dict[str, Any], ts: int, where: str) -> None:
        self.risk.submit([FundingPayment(str(body["symbol"]), ts, self.sequence,
                                         _number(body, "amount", where),
                                         _number(body, "rate", where, 0.0),
                                         _number(body, "mark", where, 0.0))])
        self.risk.apply_all()

    def _api_call(self, body: dict[str, Any], ts: int, where: str) -> None:
        self.risk.observe_api_call(ts, bool(body.get("ok", True)), str(body.get("what", "")))

    def _reset_halt(self, body: Any, ts: int, where: str) -> None:
        self.risk.reset_halt()

    def _halt(self, body: Any, ts: int, where: str) -> None:
        self.risk.halt(str(body))

    def _intent(self, body: dict[str, Any], ts: int, where: str) -> None:
        symbol = str(body["symbol"])
        quantity = body.get("quantity")
        given = {**self.default_features, **(body.get("features") or {})}
        features = {str(key): float(value) for key, value in given.items()}
        intent = OrderIntent(
            intent_id=f"{self.name}:{self.sequence}", symbol=symbol, ts_event=ts,
            sequence=self.sequence, side=int(body.get("side", 1)),
            intent_kind=str(body.get("kind", "entry")),
            reduce_only=bool(body.get("reduce_only", False)),
            quantity=None if quantity is None else float(quantity),
            reference_price=_number(body, "price", where),
            stop_price=None if body.get("stop") is None else float(body["stop"]),
            score=None if body.get("score") is None else float(body["score"]),
            reason=str(body.get("reason", "scenario")), data_stale=bool(body.get("stale", False)),
            features=features,
        )
        decision = self.risk.decide(intent)
        self.result.decisions.append(decision)
        if decision.approved and not intent.reduce_only:
            self.approved_orders[symbol] = (intent.order_id, intent.side, decision.quantity)
        expect = body.get("expect")
        if expect is not None:
            met = {"approve": decision.approved, "reject": not decision.approved}.get(
                str(expect), decision.rule == expect)
            if not met:
                verdict = "approved" if decision.approved else "rejected"
                self.result.mismatches.append(f"{where}: expected {expect}, got {verdict} by "
                                              f"{decision.rule}: {decision.reason}")

    def _fill(self, body: dict[str, Any], ts: int, where: str) -> None:
        symbol = str(body["symbol"])
        quantity_spec = body.get("quantity", "approved")
        order_id = f"{symbol}:manual{self.sequence}"
        side = body.get("side")
        if quantity_spec == "approved":
            if symbol not in self.approved_orders:
                raise ScenarioError(f"{where}: no approved entry on {symbol} to fill")
            order_id, approved_side, quantity = self.approved_orders.pop(symbol)
            side = approved_side if side is None else side
        elif quantity_spec == "position":
            held, _ = self.risk.position(symbol)
            if held == 0:
                raise ScenarioError(f"{where}: no {symbol} position to close")
            quantity, side = abs(held), (-1 if held > 0 else 1) if side is None else side
        else:
            quantity = _number(body, "quantity", where)
        if side not in (1, -1):
            raise ScenarioError(f"{where}: side must be 1 or -1, got {side!r}")
        price = _number(body, "price", where)
        self.risk.submit([Fill(
            fill_id=f"{self.name}:f{self.sequence}", order_id=order_id, symbol=symbol,
            ts_event=ts, sequence=self.sequence, side=int(side), quantity=quantity, price=price,
            reference_price=_number(body, "reference_price", where, price),
            fee=_number(body, "fee", where, 0.0), liquidity=str(body.get("liquidity", "taker")),
            slippage_bps=_number(body, "slippage_bps", where, 0.0), latency_ms=0.0,
            stop_price=None if body.get("stop_price") is None else float(body["stop_price"]))])
        self.risk.apply_all()

    def _collect(self) -> None:
        journal = self.risk.drain_journal()
        self.result.journal = journal
        triggered: dict[str, int] = {}
        for row in journal["risk_decisions"]:
            if not row["approved"] and row["rule"] != "invalid_input":
                triggered[row["rule"]] = triggered.get(row["rule"], 0) + 1
            for note in filter(None, str(row.get("rules_applied") or "").split(" | ")):
                rule = note.split(":", 1)[0]
                triggered[rule] = triggered.get(rule, 0) + 1
        for row in journal["risk_events"]:
            triggered[row["rule"]] = triggered.get(row["rule"], 0) + 1
        self.result.triggered = dict(sorted(triggered.items()))


def write_journal(result: ScenarioResult, path: Path | str, run_id: str | None = None) -> None:
    """Write a scenario's journal (risk_decisions, risk_events, equity, positions) to DuckDB."""
    from storage.journal import JournalWriter

    with JournalWriter(path, run_id or f"scenario-{result.name}") as journal:
        journal.append_many(result.journal)


def run_scenario(name_or_path: str | dict[str, Any]) -> ScenarioResult:
    """Replay a scenario through a fresh PortfolioRisk; see the module docstring."""
    scenario = load_scenario(name_or_path) if isinstance(name_or_path, str) else name_or_path
    steps = scenario.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ScenarioError(f"scenario {scenario.get('name')}: `steps` must be a non-empty list")
    result = _Runner(scenario).run(steps)
    expected = scenario.get("expect_rules") or []
    result.missing_rules = [rule for rule in expected if rule not in result.triggered]
    return result
