"""The strategy interface (Freqtrade-like, small) and the guard that runs user code safely.

A strategy is a small class:

- `timeframes()`: the bar timeframes it wants `on_bar` calls for; the first is the primary one
  (the engine marks positions to market at its bar closes);
- `required_indicators()`: the `IndicatorSpec`s the dataflow computes on those bars;
- `on_bar(timeframe, bars, position)`: called at every bar close, in event time, with a
  `BarView` of the closed bars of that timeframe and a `PositionView` of the symbol's position.
  For bars of several timeframes closing at the same time, the longer timeframe is called first
  (so a trend timeframe is known before the entry timeframe decides). It returns actions:
  - `Signal`: an evaluation worth journaling; with `act=True` the engine turns it into intents:
    an entry when flat, or with `reverse=True` a close of the opposite position followed by an
    entry. `quantity` None asks risk to size it from the stop (`exits.stop_distance`);
  - `MoveStop`: tighten the protective stop (the engine ignores a stop that would loosen it);
  - `ClosePosition`: close the whole position at market.

Protective exits are declared once, at entry, as an `ExitPlan` in distances from the entry fill
price (stop, take profits, breakeven move, maximum holding time); the engine enforces them on the
trade path, so a strategy never has to look at individual trades.

Strategies run behind `GuardedStrategy`: an exception, an invalid action, or a look at a bar that
has not closed yet produces no orders and a `StrategyError`, which the engine journals as a dead
letter (stage "strategy"). Nothing a strategy does can raise into the engine.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from engine.indicator_spec import IndicatorSpec

_PAYLOAD_LIMIT = 2000


class LookAheadError(Exception):
    """A strategy asked for a bar that has not closed yet (or dated an output in the future)."""


class BarView:
    """Read-only view of the closed bars of one timeframe, oldest first, as of `now`.

    Only bars with `ts_close <= now` are reachable: `value(name, ago)` counts back from the latest
    closed bar (`ago=0`); a negative `ago` would be a bar not yet closed and raises
    `LookAheadError`. Asking further back than the kept history returns NaN, like an indicator
    still warming up.
    """

    __slots__ = ("_columns", "_end", "now", "timeframe")

    def __init__(
        self, timeframe: str, columns: Mapping[str, np.ndarray], end: int, now: int
    ) -> None:
        self.timeframe = timeframe
        self.now = now
        self._columns = columns
        self._end = end

    def __len__(self) -> int:
        return self._end

    def __getitem__(self, name: str) -> float:
        return self.value(name, 0)

    def has(self, name: str) -> bool:
        return name in self._columns

    def _column(self, name: str) -> np.ndarray:
        try:
            return self._columns[name]
        except KeyError:
            known = ", ".join(sorted(self._columns))
            raise KeyError(f"no column {name!r} on {self.timeframe} bars; known: {known}") from None

    def value(self, name: str, ago: int = 0) -> float:
        """The column's value `ago` closed bars back (0 = the bar that just closed)."""
        if ago < 0:
            raise LookAheadError(
                f"{self.timeframe} bar {-ago} ahead of now ({self.now}) has not closed yet"
            )
        column = self._column(name)
        index = self._end - 1 - ago
        if index < 0:
            return math.nan
        return float(column[index])

    def column(self, name: str, length: int | None = None) -> np.ndarray:
        """The last `length` values (all kept history when None), read-only, oldest first."""
        column = self._column(name)
        start = 0 if length is None else max(0, self._end - length)
        view = column[start : self._end].view()
        view.flags.writeable = False
        return view

    @property
    def ts_close(self) -> int:
        """Close time of the latest closed bar (never after `now`)."""
        return int(self._column("ts_close")[self._end - 1]) if self._end else -1


@dataclass(frozen=True)
class PositionView:
    """What a strategy may know of its symbol's position.

    `quantity` is filled (signed: + long, - short); `pending_quantity` is the signed quantity of
    approved orders not yet filled. `highest_close`/`lowest_close` are the extremes of the primary
    timeframe's closes since entry (starting from the entry price); NaN when flat.
    """

    quantity: float = 0.0
    pending_quantity: float = 0.0
    entry_price: float = math.nan
    entry_ts: int | None = None
    stop_price: float | None = None
    take_profits_hit: int = 0
    highest_close: float = math.nan
    lowest_close: float = math.nan

    @property
    def projected_quantity(self) -> float:
        return self.quantity + self.pending_quantity

    @property
    def side(self) -> int:
        return 1 if self.quantity > 0 else -1 if self.quantity < 0 else 0

    @property
    def is_flat(self) -> bool:
        """No position and no order in flight."""
        return self.quantity == 0 and self.pending_quantity == 0


FLAT = PositionView()


@dataclass(frozen=True)
class TakeProfit:
    """Close `fraction` of the entry quantity once price moves `distance` in the trade's favour.

    The last take profit of a plan closes whatever remains.
    """

    distance: float
    fraction: float
    name: str


@dataclass(frozen=True)
class ExitPlan:
    """Protective exits, in price distances from the entry fill price; enforced by the engine."""

    stop_distance: float | None = None
    take_profits: tuple[TakeProfit, ...] = ()
    breakeven_offset_pct: float | None = None  # after the first take profit: stop to entry±offset
    max_holding_ns: int | None = None


@dataclass(frozen=True)
class Signal:
    """An evaluation: journaled always; acted on when `act` (and risk approves).

    `direction` +1 long, -1 short. `quantity` None lets risk size the entry from the stop.
    `bar_ts`, when given, is the close time of the bar the signal is based on (never after now).
    """

    direction: int
    reason: str
    act: bool = True
    score: float | None = None
    details: Mapping[str, object] | None = None
    quantity: float | None = None
    reverse: bool = False
    exits: ExitPlan | None = None
    bar_ts: int | None = None


@dataclass(frozen=True)
class MoveStop:
    """Tighten the protective stop; a stop that would loosen it is ignored."""

    stop_price: float
    reason: str = "trailing_stop"


@dataclass(frozen=True)
class ClosePosition:
    """Close the whole position at market."""

    reason: str


StrategyAction = Signal | MoveStop | ClosePosition


class Strategy(ABC):
    """Base class of strategies; see the module docstring for the contract."""

    name: ClassVar[str] = "strategy"

    @abstractmethod
    def timeframes(self) -> tuple[str, ...]:
        """Timeframes to receive `on_bar` calls for; the first is the primary timeframe."""

    @abstractmethod
    def required_indicators(self) -> list[IndicatorSpec]:
        """Indicators the dataflow must compute on this strategy's bars."""

    @abstractmethod
    def on_bar(
        self, timeframe: str, bars: BarView, position: PositionView
    ) -> Sequence[StrategyAction]:
        """Decide at a bar close. Must be deterministic and read only `bars` and `position`."""

    def primary_timeframe(self) -> str:
        return self.timeframes()[0]

    def history_bars(self) -> int:
        """How many closed bars per timeframe `BarView` keeps reachable."""
        return 2

    def retune(self, now: int, window_ns: int, min_signals: int) -> str | None:
        """Re-optimise the strategy's own thresholds on the data of the last `window_ns`, when
        the run's maintenance schedules it; returns what changed, for the journal. None: the
        strategy has nothing to tune (the default)."""
        return None


@dataclass(frozen=True)
class StrategyError:
    """What went wrong in one strategy call; journaled as a dead letter with stage "strategy"."""

    reason: str  # "exception", "invalid_output", "look_ahead"
    detail: str
    timeframe: str
    ts_event: int
    payload: str = ""


def _plain(value: object) -> object:
    """JSON-ready copy of `value`: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")


def details_json(details: Mapping[str, object] | None) -> str | None:
    """Canonical JSON of signal details (sorted keys, NaN as null) for the `signals` table."""
    if details is None:
        return None
    return json.dumps(_plain(details), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _positive(value: object) -> bool:
    """A finite number above zero (bools are not numbers here)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return False
    number = float(value)
    return math.isfinite(number) and number > 0


def _check_exit_plan(plan: ExitPlan) -> str | None:
    if plan.stop_distance is not None and not _positive(plan.stop_distance):
        return f"stop_distance must be finite and > 0, got {plan.stop_distance!r}"
    for take_profit in plan.take_profits:
        if not _positive(take_profit.distance):
            return f"take profit {take_profit.name!r}: distance must be > 0"
        if not _positive(take_profit.fraction) or take_profit.fraction > 1:
            return f"take profit {take_profit.name!r}: fraction must be in (0, 1]"
    offset = plan.breakeven_offset_pct
    if offset is not None and not (math.isfinite(offset) and offset >= 0):
        return f"breakeven_offset_pct must be finite and >= 0, got {offset!r}"
    if plan.max_holding_ns is not None and plan.max_holding_ns <= 0:
        return f"max_holding_ns must be > 0, got {plan.max_holding_ns!r}"
    return None


def check_action(action: object, now: int) -> tuple[str, str] | None:
    """Why an action is unacceptable, as (reason, detail), or None when it is fine."""
    if isinstance(action, Signal):
        if action.direction not in (1, -1) or isinstance(action.direction, bool):
            return "invalid_output", f"signal direction must be +1 or -1, got {action.direction!r}"
        if action.bar_ts is not None and action.bar_ts > now:
            return "look_ahead", f"signal dated at bar {action.bar_ts}, after now ({now})"
        if action.quantity is not None and not _positive(action.quantity):
            return "invalid_output", f"signal quantity must be finite and > 0: {action.quantity!r}"
        if action.score is not None and not (
            isinstance(action.score, int | float | np.number) and math.isfinite(action.score)
        ):
            return "invalid_output", f"signal score must be finite, got {action.score!r}"
        if action.exits is not None:
            problem = _check_exit_plan(action.exits)
            if problem:
                return "invalid_output", problem
        try:
            details_json(action.details)
        except (TypeError, ValueError) as error:
            return "invalid_output", f"signal details are not JSON-serialisable: {error}"
        return None
    if isinstance(action, MoveStop):
        if not _positive(action.stop_price):
            return "invalid_output", f"stop price must be finite and > 0: {action.stop_price!r}"
        return None
    if isinstance(action, ClosePosition):
        return None
    return "invalid_output", f"unknown action type {type(action).__name__}"


class GuardedStrategy:
    """Runs a strategy's `on_bar` so that nothing it does can break the engine.

    On an exception, an invalid action or a look-ahead, the whole call's output is dropped and a
    `StrategyError` is returned instead.
    """

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.name = strategy.name
        self.timeframes = tuple(strategy.timeframes())
        self.primary_timeframe = strategy.primary_timeframe()
        self.history_bars = max(2, int(strategy.history_bars()))

    def required_indicators(self) -> list[IndicatorSpec]:
        return list(self.strategy.required_indicators())

    def on_bar(
        self, timeframe: str, bars: BarView, position: PositionView
    ) -> tuple[list[StrategyAction], StrategyError | None]:
        now = bars.now
        try:
            output = self.strategy.on_bar(timeframe, bars, position)
            actions = list(output) if output is not None else []
        except LookAheadError as error:
            return [], StrategyError("look_ahead", str(error), timeframe, now)
        except Exception as error:
            detail = f"{type(error).__name__}: {error}"
            return [], StrategyError("exception", detail[:_PAYLOAD_LIMIT], timeframe, now)
        for action in actions:
            try:
                problem = check_action(action, now)
            except Exception as error:
                problem = ("invalid_output", f"{type(error).__name__}: {error}")
            if problem is not None:
                reason, detail = problem
                payload = repr(actions)[:_PAYLOAD_LIMIT]
                return [], StrategyError(reason, detail, timeframe, now, payload)
        return actions, None

    def retune(self, now: int, window_ns: int, min_signals: int) -> str | None:
        """The strategy's `retune`; an exception keeps its settings and is reported, not
        raised."""
        try:
            return self.strategy.retune(now, window_ns, min_signals)
        except Exception as error:
            return f"re-tune failed, settings kept: {type(error).__name__}: {error}"[
                :_PAYLOAD_LIMIT]
