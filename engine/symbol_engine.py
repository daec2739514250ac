"""The per-symbol driver the SymbolActor wraps: strategy, protective exits, paper matching.

`step(batch, horizon, gateway)` processes one `FeatureBatch` in event-time order:

1. trades before the next bar close: orders in flight fill at their arrival (paper matcher) and
   protective exits (stop, take profits, trailing, time exit) trigger on the first trade crossing
   their level, found by a vectorised search over the trades since the last cursor;
2. at each bar close (`ts_close`; for equal closes the longer timeframe first) the guarded strategy
   is called; at each primary-timeframe close a `Mark` is appended to the updates;
3. every intent, entries and exits alike, goes through `gateway.decide(intent, updates)` with the
   fills and marks produced since the previous call (see `engine.order_flow`, which also documents
   how a reverse becomes a reduce-only close and an entry). An approved intent becomes an order.

Horizon: an intent with `ts_event >= horizon` is not decided; the step pauses and returns, and a
later `step(None, larger_horizon, gateway)` resumes exactly there. Everything before the pause is
state, so a paused and resumed run journals exactly what an unpaused run does.

Journal rows returned per step: `signals` (emitted once their outcome is known: rejected, not
acted on, or filled, with execution latency and slippage), `orders`, `fills`, `trades` (round
trips), `dead_letters` (strategy errors, out-of-order bars) and, only when a perpetual position
paid or received funding (`engine.funding`, from `batch.marks`), `funding`. Counters are deltas
since the previous step; `strategy_bars` (not `bars`, which the coordinator counts from the
batches), `marks`, `market_trades`, `signals`, `intents`, `approved_intents`, `rejected_intents`,
`orders`, `fills`, `round_trips`, `dead_letters`, `funding_payments`, `position_checks`,
`risk_flattens`. The engine is picklable, paused or not.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.bar_schedule import BarEvents, BarSchedule
from engine.batches import FeatureBatch
from engine.config import RunConfig
from engine.execution.config import LiveTradingConfig
from engine.execution.port import ExecutionPort
from engine.indicator_spec import IndicatorSpec
from engine.market_context import MarketContext
from engine.order_flow import OrderFlow, RiskGateway
from engine.position_tracker import PositionTracker
from engine.signal_enrichment import SignalEnrichment
from engine.strategies import make_strategy
from engine.strategies.base import BarView, ClosePosition, GuardedStrategy, MoveStop, Signal
from engine.timeframes import parse_duration_ns
from engine.types import PortfolioUpdate
from engine.venue_orders import VenueOrders
from online_ml.regime import MinuteRegime

if TYPE_CHECKING:
    from engine.bar_learner import BarLearner
    from engine.signal_learner import SignalLearner

__all__ = ["RiskGateway", "StepResult", "SymbolEngine"]


@dataclass
class StepResult:
    symbol: str
    paused: bool  # stopped before an intent whose ts_event >= horizon
    watermark: int  # every event of this symbol with ts_event < watermark is processed
    pending_intent_ts: int | None
    updates: list[PortfolioUpdate]  # fills/marks not yet handed to the gateway, in order
    journal: dict[str, list[dict[str, Any]]]  # rows per journal table
    counters: dict[str, int]  # deltas since the previous step


@dataclass
class _BatchCursor:
    """Where processing of the current batch stands."""

    batch: FeatureBatch
    events: BarEvents  # bar closes in processing order
    next_event: int = 0
    trade_cursor: int = 0  # trades before it are processed
    trigger_from: int = 0  # protective triggers are searched from here
    entries_until: int = -(2**63)  # working limit entries are matched up to here


class SymbolEngine(SignalEnrichment):
    """One symbol's strategy, positions and paper execution, driven batch by batch."""

    def __init__(self, symbol: str, config: RunConfig) -> None:
        self.symbol = symbol
        self.config = config
        self.strategy = GuardedStrategy(make_strategy(config.strategy))
        missing = [tf for tf in self.strategy.timeframes if tf not in config.timeframes]
        if missing:
            raise ValueError(
                f"strategy {self.strategy.name} needs timeframes {missing} that the run does not "
                f"compute; add them to `timeframes` (has {list(config.timeframes)})"
            )
        if config.strategy.kind == "dex_led" and symbol not in (
                config.dex.tapes() if config.dex is not None else {}):
            raise ValueError(f"strategy dex_led on {symbol}: no DEX pool leads it; map one in "
                             "`dex.pools` (cex_symbol)")
        market = (MarketContext(parse_duration_ns(config.risk.spread_window),
                                parse_duration_ns(config.risk.volume_window))
                  if config.risk.market_context_needed() else None)
        self.flow = OrderFlow(symbol, self.strategy.name, config.simulation, config.entry, market)
        checks = config.risk.position_checks
        self._position_checks = (config.risk.profile is not None or config.control.enabled
                                 if checks is None else checks)
        # bars that pace position checks: the primary timeframe, or a shorter one of its own
        self._check_timeframe = config.risk.check_timeframe or self.strategy.primary_timeframe
        checked = (self._check_timeframe,) if self._position_checks else ()
        timeframes = tuple(dict.fromkeys((*self.strategy.timeframes, *checked)))
        self.bars = BarSchedule(timeframes, self.strategy.history_bars)
        self.learner: BarLearner | None = None
        self.signal_learner: SignalLearner | None = None
        # River loads only when a run learns (~1 s of import)
        if config.learning is not None and config.learning.target == "reward_score":
            from engine.signal_learner import SignalLearner

            self.signal_learner = SignalLearner(config.learning, symbol)
            self.flow.signals.labelled = True
        elif config.learning is not None:
            from engine.bar_learner import BarLearner

            self.learner = BarLearner(config.learning)
        self.regime = MinuteRegime()  # journaled with every signal
        self._estimate_slippage = config.risk.slippage_estimate_needed()
        self.totals: Counter[str] = Counter()
        self._cursor: _BatchCursor | None = None
        self._watermark = -(2**63)
        self._last_price = math.nan
        self._last_ts: int | None = None
        self._finish_requested = False
        self._finished = False

    @property
    def tracker(self) -> PositionTracker:
        """The symbol's position tracker (read it; do not change it)."""
        return self.flow.tracker

    @staticmethod
    def required_indicators(config: RunConfig) -> list[IndicatorSpec]:
        """The indicators the run's strategy needs the dataflow to compute."""
        return list(make_strategy(config.strategy).required_indicators())

    # ------------------------------------------------------------------ public driving API

    def step(self, batch: FeatureBatch | None, horizon: int, gateway: RiskGateway) -> StepResult:
        """Process `batch` (or resume the paused one when None) up to the first intent at or
        beyond `horizon`."""
        if batch is not None:
            if self._cursor is not None:
                raise RuntimeError(
                    f"{self.symbol}: a batch is paused at an intent; resume it with batch=None"
                )
            if batch.symbol != self.symbol:
                raise ValueError(f"batch for {batch.symbol!r} sent to the {self.symbol} engine")
            if self.flow.venue is not None:  # live orders: what the venue did since last step
                self.flow.poll_venue(self._venue_time(batch), self._last_price)
            self._begin_batch(batch)
        elif self._cursor is None:
            return self._result(paused=False)
        if self._run(horizon, gateway):
            return self._result(paused=True)
        self._end_batch()
        return self._result(paused=False)

    def finish(self, gateway: RiskGateway) -> StepResult:
        """End of stream: a final Mark at the last trade price; open positions stay open.

        If a batch is still paused, the finish happens when that batch completes.
        """
        self._finish_requested = True
        if self._cursor is not None:
            return self._result(paused=True)
        self._finish_now()
        return self._result(paused=False)

    def attach_execution(self, port: ExecutionPort, settings: LiveTradingConfig) -> None:
        """Send this symbol's orders to live execution instead of the paper matcher (also
        after restoring a checkpoint, which never carries the connection)."""
        if self.flow.venue is None:
            self.flow.venue = VenueOrders(
                self.symbol, settings.venue_symbol(self.symbol),
                self.config.simulation.taker_fee_bps, settings.venue_stops,
                int(settings.order_poll_s * 1e9))
        self.flow.venue.port = port

    def _venue_time(self, batch: FeatureBatch) -> int:
        """Event time of venue reports taken before `batch`: not before anything processed."""
        if self._watermark > -(2**63):
            return self._watermark
        return int(batch.trades.ts_event[0]) if len(batch.trades) else batch.watermark

    # ------------------------------------------------------------------ batches

    def _begin_batch(self, batch: FeatureBatch) -> None:
        self.flow.feed_health.observe(batch.feed_events)
        self.flow.funding.observe(batch.marks)
        if self.flow.market is not None:
            self.flow.market.observe(batch)
        events, dropped = self.bars.begin(batch)
        for bar in dropped:
            self.flow.dead_letter(
                "symbol_engine",
                bar.reason,
                f"{bar.timeframe} bar closing at {bar.ts_close} dropped: {bar.reason}",
                f"feature batch bars[{bar.timeframe}] row {bar.row}",
                bar.ts_close,
            )
        self._cursor = _BatchCursor(batch, events)

    def _end_batch(self) -> None:
        cursor = self._cursor
        assert cursor is not None
        trades = cursor.batch.trades
        self.flow.matcher.end_batch(trades)
        if self.flow.limit_entries is not None:
            self.flow.limit_entries.end_batch(cursor.batch)
        if self.flow.market is not None:
            self.flow.market.end_batch()
        self.flow.counters["market_trades"] += len(trades)
        if len(trades):
            self._last_price = float(trades.price[-1])
            self._last_ts = int(trades.ts_event[-1])
        self._watermark = max(self._watermark, cursor.batch.watermark)
        self.flow.settle_funding(self._watermark)
        self.bars.trim()
        self._cursor = None
        if self._finish_requested or cursor.batch.end_of_stream:
            self._finish_now()

    def _finish_now(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._last_ts is not None and math.isfinite(self._last_price):
            self.flow.mark(self._last_ts, self._last_price)
        self.flow.finish()

    def _result(self, paused: bool) -> StepResult:
        queue = self.flow.queue
        pending_ts = queue[0].intent.ts_event if paused and queue else None
        watermark = self._watermark if pending_ts is None else pending_ts
        updates, journal, counters = self.flow.drain()
        self.totals.update(counters)
        counted = {name: int(value) for name, value in sorted(counters.items())}
        return StepResult(self.symbol, paused, watermark, pending_ts, updates, journal, counted)

    # ------------------------------------------------------------------ the event loop

    def _run(self, horizon: int, gateway: RiskGateway) -> bool:
        """Process the batch; True when paused before an intent at or beyond the horizon."""
        cursor = self._cursor
        assert cursor is not None
        trade_ts = cursor.batch.trades.ts_event
        while True:
            if self.flow.decide_queued(horizon, gateway, cursor.batch):
                return True
            if cursor.next_event < len(cursor.events):
                bar_close = int(cursor.events.ts_close[cursor.next_event])
                limit = int(np.searchsorted(trade_ts, bar_close, "left"))
            else:
                limit = len(trade_ts)
            if self._advance_limit_entries(cursor, limit):
                continue
            if self._advance_trades(cursor, limit):
                continue
            if cursor.next_event < len(cursor.events):
                self._bar_close(cursor.events, cursor.next_event)
                cursor.next_event += 1
                continue
            return False

    def _data_latency_ms(self, now: int) -> float | None:
        """How late the last trade before `now` reached us (receive minus event time, ms), or
        None when the data has no receive times (ts_recv = ts_event, e.g. public-data files).
        Negative when the local clock is behind the venue's (the bundled capture's is, by
        about 1.2 s): a measurement, kept as measured."""
        cursor = self._cursor
        if cursor is None:
            return None
        trades = cursor.batch.trades
        index = int(np.searchsorted(trades.ts_event, now, "left")) - 1
        if index < 0:
            return None
        received, happened = int(trades.ts_recv[index]), int(trades.ts_event[index])
        return (received - happened) / 1e6 if received != happened else None

    def _advance_limit_entries(self, cursor: _BatchCursor, limit: int) -> bool:
        """Match working limit entries up to the next bar close (or the batch's last trade), or
        to a tactic's deadline when that comes first, and act on the deadline; True if a
        deadline was handled (the loop runs again), False once matched up to the boundary."""
        flow = self.flow
        entries = flow.limit_entries
        if not entries:
            return False
        trades = cursor.batch.trades
        if cursor.next_event < len(cursor.events):
            until = int(cursor.events.ts_close[cursor.next_event])
        else:
            until = int(trades.ts_event[-1]) + 1 if len(trades) else cursor.entries_until
        deadline = entries.deadline()
        due = deadline is not None and deadline < until
        if deadline is not None and due:
            until = deadline
        if until > cursor.entries_until:
            last_fill = flow.advance_limit_entries(cursor.batch, until)
            cursor.entries_until = until
            if last_fill is not None:  # levels set by the entry count from the next trade on
                index = int(np.searchsorted(trades.ts_event, last_fill, "left"))
                cursor.trigger_from = max(cursor.trigger_from, min(index + 1, limit))
        if due:  # `until` is the deadline
            flow.limit_entry_time(cursor.batch, until)
            return True
        return False

    def _advance_trades(self, cursor: _BatchCursor, limit: int) -> bool:
        """Handle the next fill or protective trigger among trades before `limit`; True if one
        was handled, False once every trade before `limit` is processed."""
        flow = self.flow
        tracker = flow.tracker
        trades = cursor.batch.trades
        start = cursor.trade_cursor
        fill_index = flow.matcher.next_fill_index(
            trades, start, cursor.batch.depth, cursor.batch.quotes
        )
        if fill_index is not None and fill_index >= limit:
            fill_index = None
        if fill_index is None and tracker.has_levels() and not flow.busy:
            search_from = max(start, cursor.trigger_from)
            trigger = tracker.first_trigger(trades.ts_event, trades.price, search_from, limit)
            if trigger is not None:
                index = trigger.index
                tracker.observe_trades(trades.price[start : index + 1],
                                       trades.ts_event[start : index + 1])
                cursor.trade_cursor = index  # the exit order may fill at this very trade
                cursor.trigger_from = index + 1
                price = float(trades.price[index])
                ts_event = int(trades.ts_event[index])
                flow.queue_exit(
                    ts_event, price, trigger.quantity, trigger.reason, trigger.take_profit
                )
                return True
        if fill_index is not None:
            tracker.observe_trades(trades.price[start : fill_index + 1],
                                   trades.ts_event[start : fill_index + 1])
            flow.fill(cursor.batch, fill_index)
            # The trade stays available to the next order in flight (a trade is a price, not
            # consumed liquidity), but levels set by this fill are checked from the next trade.
            cursor.trade_cursor = fill_index
            cursor.trigger_from = max(cursor.trigger_from, fill_index + 1)
            return True
        if limit > start:
            tracker.observe_trades(trades.price[start:limit], trades.ts_event[start:limit])
            cursor.trade_cursor = limit
        return False

    def _bar_close(self, events: BarEvents, event: int) -> None:
        flow = self.flow
        timeframe = events.timeframe[event]
        now = int(events.ts_close[event])
        end = int(events.end[event])
        history = events.history[timeframe]
        close = float(history["close"][end - 1])
        if timeframe not in self.strategy.timeframes:  # a check-only timeframe
            if self._position_checks and flow.tracker.signed_quantity != 0:
                flow.mark(now, close)
                flow.queue_position_check(now, close)
            return
        primary = timeframe == self.strategy.primary_timeframe
        prediction: float | None = None
        bar: dict[str, float] | None = None
        if primary:
            flow.tracker.observe_close(close)
            self.regime.update(now, close)
            if self.signal_learner is not None:
                self._learn_signals(now, history, end)
            if self.learner is not None:
                bar = self._bar_values(history, end)
                prediction = self.learner.on_bar(now, bar)
                flow.counters["predictions"] += 1
        view = BarView(timeframe, history, end, now)
        position = flow.tracker.view(flow.pending_quantity())
        actions, error = self.strategy.on_bar(timeframe, view, position)
        flow.counters["strategy_bars"] += 1
        if error is not None:
            source = f"{self.strategy.name}.on_bar({error.timeframe})"
            flow.dead_letter(
                "strategy", error.reason, error.detail, source, error.ts_event, error.payload
            )
        for action in actions:
            if isinstance(action, MoveStop):
                flow.tracker.move_stop(action.stop_price, action.reason)
        if primary:
            flow.mark(now, close)
        closing = next((a for a in actions if isinstance(a, ClosePosition)), None)
        quantity = abs(flow.tracker.signed_quantity)
        if closing is not None and quantity > 0 and not flow.busy:
            flow.queue_exit(now, close, quantity, closing.reason, None)
        signals = [action for action in actions if isinstance(action, Signal)]
        if signals:
            bar = bar if bar is not None else self._bar_values(history, end)
            latency = self._data_latency_ms(now)
            if latency is not None:
                bar["data_latency_ms"] = latency
            for signal in signals:
                signal_id = flow.new_signal_id()
                if prediction is not None:
                    signal = self._with_prediction(signal, prediction)
                if self.signal_learner is not None:
                    signal = self._scored(signal, signal_id, now, close, bar)
                signal = self._with_slippage_estimate(signal, now)
                flow.on_signal(signal, timeframe, now, close, bar, signal_id, self.regime.regime)
        checks = self._position_checks and timeframe == self._check_timeframe
        if checks and flow.tracker.signed_quantity != 0:
            flow.queue_position_check(now, close)  # after the strategy's own exits and signals
