"""Validation of parsed trades, agg trades, best bid/ask quotes and mark prices, vectorised.

The parser lets through every value that reads as a number; this stage decides what is usable.
Each validator keeps, per symbol, only the last accepted id and event time (a few ints), so it
pickles cheaply inside a Bytewax stateful step. Rejected rows become `DeadLetter`s with `source`
"<source> row <index in the batch>"; accepted rows keep their input order, and after validation
`ts_event` of trades, agg trades and quotes never decreases within a symbol.

Book deltas and snapshots are checked by the book synchronizer, not here; venue klines are not
checked (they ride on the tape only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.batches import (
    AggTradeColumns,
    DeadLetter,
    MarkPriceColumns,
    QuoteColumns,
    TradeColumns,
)

TRADE_STAGE = "validate_trades"
AGG_TRADE_STAGE = "validate_agg_trades"
QUOTE_STAGE = "validate_quotes"
MARK_STAGE = "validate_marks"
_NO_ID = np.iinfo(np.int64).min  # "nothing accepted yet" for running maxima


@dataclass
class _TradeState:
    """What a symbol's trade validator remembers between batches."""

    last_trade_id: int = _NO_ID
    last_ts_event: int = _NO_ID


def _exclusive_running_max(values: np.ndarray, start: int) -> np.ndarray:
    """For each row, the maximum of `start` and every earlier row's value."""
    shifted = np.empty(len(values), dtype=np.int64)
    if len(values):
        shifted[0] = start
        shifted[1:] = values[:-1]
    return np.maximum.accumulate(shifted) if len(values) else shifted


def _sequential_order_check(
    trade_id: np.ndarray, ts_event: np.ndarray, last_id: int, last_ts: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact row-by-row id/time check; used only when a batch has pathological rows."""
    id_ok = np.zeros(len(trade_id), dtype=bool)
    ts_ok = np.zeros(len(trade_id), dtype=bool)
    for row, (row_id, row_ts) in enumerate(zip(trade_id.tolist(), ts_event.tolist(), strict=True)):
        id_ok[row] = row_id > last_id
        ts_ok[row] = row_ts >= last_ts
        if id_ok[row] and ts_ok[row]:
            last_id, last_ts = row_id, row_ts
    return id_ok, ts_ok


class _IdOrderValidator:
    """Shared judging of rows that carry an increasing venue id, a price and a size.

    A row is accepted when its price and size are finite and positive, its id is above every
    accepted id of its symbol and its `ts_event` is not below every accepted `ts_event`.
    """

    noun = "trade"
    duplicate_reason = "duplicate_trade_id"

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._states: dict[str, _TradeState] = {}

    def last_accepted(self, symbol: str) -> tuple[int, int] | None:
        """(id, ts_event) of the last accepted row of `symbol`, or None."""
        state = self._states.get(symbol)
        if state is None or state.last_trade_id == _NO_ID:
            return None
        return state.last_trade_id, state.last_ts_event

    def _judge(
        self, symbol: str, all_ids: np.ndarray, all_times: np.ndarray, price: np.ndarray,
        qty: np.ndarray,
    ) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
        """(rows kept, sorted (row, reason, detail) of the rows rejected); updates the state."""
        state = self._states.setdefault(symbol, _TradeState())
        price_ok = np.isfinite(price) & (price > 0)
        qty_ok = np.isfinite(qty) & (qty > 0)
        usable = np.flatnonzero(price_ok & qty_ok)
        ids = all_ids[usable]
        times = all_times[usable]

        # With running maxima over all usable rows, a rejected row only matters if it raised a
        # maximum; when none did, the maxima equal those over accepted rows and the result is
        # exact. Otherwise (e.g. a huge id with an old time) fall back to a row-by-row pass.
        prior_id = _exclusive_running_max(ids, state.last_trade_id)
        prior_ts = _exclusive_running_max(times, state.last_ts_event)
        id_ok = ids > prior_id
        ts_ok = times >= prior_ts
        rejected = ~(id_ok & ts_ok)
        if np.any(rejected & ((ids > prior_id) | (times > prior_ts))):
            id_ok, ts_ok = _sequential_order_check(
                ids, times, state.last_trade_id, state.last_ts_event
            )
        accepted = id_ok & ts_ok
        accepted_rows = np.flatnonzero(accepted)
        # Last accepted id and time before each row (accepted ids increase, times never fall).
        before = np.searchsorted(accepted_rows, np.arange(len(ids)))
        last_id = np.concatenate([[state.last_trade_id], ids[accepted_rows]])[before]
        last_ts = np.concatenate([[state.last_ts_event], times[accepted_rows]])[before]
        # An id that failed and equals an accepted one (necessarily earlier) is a duplicate.
        duplicate = ~id_ok & ((ids == state.last_trade_id) | np.isin(ids, ids[accepted_rows]))

        letters: list[tuple[int, str, str]] = []
        for row in np.flatnonzero(~price_ok).tolist():
            value = float(price[row])
            letters.append((row, "invalid_price", f"price {value!r} is not finite and positive"))
        for row in np.flatnonzero(price_ok & ~qty_ok).tolist():
            value = float(qty[row])
            letters.append((row, "invalid_qty", f"qty {value!r} is not finite and positive"))
        for position in np.flatnonzero(~accepted).tolist():
            row = int(usable[position])
            if duplicate[position]:
                letters.append((row, self.duplicate_reason, f"{self.noun} id was already accepted"))
            elif not id_ok[position]:
                detail = f"{self.noun} id is below the last accepted id {int(last_id[position])}"
                letters.append((row, "out_of_order", detail))
            else:
                detail = (
                    f"ts_event {int(times[position])} is earlier than the last accepted "
                    f"ts_event {int(last_ts[position])}"
                )
                letters.append((row, "out_of_order", detail))
        letters.sort()

        kept = usable[accepted_rows]
        if len(kept):
            state.last_trade_id = int(ids[accepted_rows[-1]])
            state.last_ts_event = int(times[accepted_rows[-1]])
        return kept, letters

    def _dead_letter(
        self, symbol: str, row: int, reason: str, detail: str, source: str, row_id: int,
        ts_event: int, ts_recv: int, payload: str,
    ) -> DeadLetter:
        return DeadLetter(
            stage=self.stage,
            reason=reason,
            detail=f"{symbol} {self.noun} {row_id} ({source} row {row}): {detail}",
            source=f"{source} row {row}",
            symbol=symbol,
            ts_event=ts_event,
            ts_recv=ts_recv,
            payload=payload,
        )


class TradeValidator(_IdOrderValidator):
    """Rejects trades with bad price or size, duplicate trade ids and out-of-order rows.

    Reasons: "invalid_price", "invalid_qty", "duplicate_trade_id" (id equal to the last accepted
    id, or to any id accepted earlier in the same batch), "out_of_order" (id below the last
    accepted id without being a known duplicate, or `ts_event` earlier than the last accepted
    one).
    """

    def __init__(self, stage: str = TRADE_STAGE) -> None:
        super().__init__(stage)

    def validate(
        self, symbol: str, trades: TradeColumns, source: str
    ) -> tuple[TradeColumns, list[DeadLetter]]:
        """Split `trades` of `symbol` into the accepted trades and dead letters for the rest."""
        self._states.setdefault(symbol, _TradeState())
        if len(trades) == 0:
            return trades, []
        kept, letters = self._judge(
            symbol, trades.trade_id, trades.ts_event, trades.price, trades.qty
        )
        dead = [
            self._letter(symbol, trades, row, reason, detail, source)
            for row, reason, detail in letters
        ]
        if len(kept) == len(trades):
            return trades, dead
        return trades.take(kept), dead

    def _letter(
        self, symbol: str, trades: TradeColumns, row: int, reason: str, detail: str, source: str
    ) -> DeadLetter:
        trade_id = int(trades.trade_id[row])
        ts_event = int(trades.ts_event[row])
        payload = (
            f'{{"trade_id": {trade_id}, "ts_event": {ts_event}, '
            f'"price": "{float(trades.price[row])!r}", "qty": "{float(trades.qty[row])!r}", '
            f'"side": {int(trades.side[row])}}}'
        )
        return self._dead_letter(symbol, row, reason, detail, source, trade_id, ts_event,
                                 int(trades.ts_recv[row]), payload)


class AggTradeValidator(_IdOrderValidator):
    """Judges aggregate trades like `TradeValidator` judges trades, on the aggregate id `a`.

    Reasons: "invalid_price", "invalid_qty", "duplicate_agg_id", "out_of_order". Its state is
    its own: agg ids and raw trade ids are different sequences.
    """

    noun = "agg trade"
    duplicate_reason = "duplicate_agg_id"

    def __init__(self, stage: str = AGG_TRADE_STAGE) -> None:
        super().__init__(stage)

    def validate(
        self, symbol: str, agg_trades: AggTradeColumns, source: str
    ) -> tuple[AggTradeColumns, list[DeadLetter]]:
        """Split `agg_trades` of `symbol` into the accepted rows and dead letters for the rest."""
        self._states.setdefault(symbol, _TradeState())
        if len(agg_trades) == 0:
            return agg_trades, []
        kept, letters = self._judge(
            symbol, agg_trades.agg_id, agg_trades.ts_event, agg_trades.price, agg_trades.qty
        )
        dead = []
        for row, reason, detail in letters:
            agg_id = int(agg_trades.agg_id[row])
            ts_event = int(agg_trades.ts_event[row])
            payload = (
                f'{{"agg_id": {agg_id}, "first_trade_id": {int(agg_trades.first_trade_id[row])}, '
                f'"last_trade_id": {int(agg_trades.last_trade_id[row])}, "ts_event": {ts_event}, '
                f'"price": "{float(agg_trades.price[row])!r}", '
                f'"qty": "{float(agg_trades.qty[row])!r}", "side": {int(agg_trades.side[row])}}}'
            )
            dead.append(self._dead_letter(symbol, row, reason, detail, source, agg_id, ts_event,
                                          int(agg_trades.ts_recv[row]), payload))
        if len(kept) == len(agg_trades):
            return agg_trades, dead
        return AggTradeColumns(
            **{key: value[kept] for key, value in agg_trades.as_dict().items()}
        ), dead


class QuoteValidator:
    """Rejects best bid/ask rows with bad numbers, crossed books or earlier event times.

    Reasons: "invalid_quote" (a price or size NaN, infinite or not positive), "crossed_quote"
    (bid above ask; a locked quote, bid equal to ask, passes) and "out_of_order" (`ts_event`
    earlier than the last accepted quote of the symbol). State: the last accepted `ts_event`.
    """

    def __init__(self, stage: str = QUOTE_STAGE) -> None:
        self.stage = stage
        self._last_ts_event: dict[str, int] = {}

    def validate(
        self, symbol: str, quotes: QuoteColumns, source: str
    ) -> tuple[QuoteColumns, list[DeadLetter]]:
        """Split `quotes` of `symbol` into the accepted quotes and dead letters for the rest."""
        last_ts = self._last_ts_event.get(symbol, _NO_ID)
        if len(quotes) == 0:
            return quotes, []
        values_ok = np.ones(len(quotes), dtype=bool)
        for column in (quotes.bid_price, quotes.bid_qty, quotes.ask_price, quotes.ask_qty):
            values_ok &= np.isfinite(column) & (column > 0)
        crossed = values_ok & (quotes.bid_price > quotes.ask_price)
        usable = np.flatnonzero(values_ok & ~crossed)
        # Rows failing value checks are out before the running maximum, and out-of-order rows
        # never raise it, so one vectorised pass is exact.
        times = quotes.ts_event[usable]
        in_order = times >= _exclusive_running_max(times, last_ts)

        kept = usable[in_order]
        before = np.searchsorted(kept, np.arange(len(quotes)))
        last_accepted = np.concatenate([[last_ts], quotes.ts_event[kept]])[before]
        letters: list[tuple[int, str, str]] = []
        for row in np.flatnonzero(~values_ok).tolist():
            letters.append((row, "invalid_quote", "a price or size is NaN, infinite or not > 0"))
        for row in np.flatnonzero(crossed).tolist():
            detail = (
                f"bid {float(quotes.bid_price[row])!r} is above ask "
                f"{float(quotes.ask_price[row])!r}"
            )
            letters.append((row, "crossed_quote", detail))
        for row in usable[~in_order].tolist():
            detail = (
                f"ts_event {int(quotes.ts_event[row])} is earlier than the last accepted "
                f"ts_event {int(last_accepted[row])}"
            )
            letters.append((row, "out_of_order", detail))
        letters.sort()
        if len(kept):
            self._last_ts_event[symbol] = int(quotes.ts_event[kept[-1]])
        dead = [
            self._letter(symbol, quotes, row, reason, detail, source)
            for row, reason, detail in letters
        ]
        if len(kept) == len(quotes):
            return quotes, dead
        return QuoteColumns(**{key: value[kept] for key, value in quotes.as_dict().items()}), dead

    def _letter(
        self, symbol: str, quotes: QuoteColumns, row: int, reason: str, detail: str, source: str
    ) -> DeadLetter:
        update_id = int(quotes.update_id[row])
        ts_event = int(quotes.ts_event[row])
        values = ", ".join(
            f'"{name}": "{float(column[row])!r}"'
            for name, column in (
                ("bid", quotes.bid_price), ("bid_qty", quotes.bid_qty),
                ("ask", quotes.ask_price), ("ask_qty", quotes.ask_qty),
            )
        )
        return DeadLetter(
            stage=self.stage,
            reason=reason,
            detail=f"{symbol} quote {update_id} ({source} row {row}): {detail}",
            source=f"{source} row {row}",
            symbol=symbol,
            ts_event=ts_event,
            ts_recv=int(quotes.ts_recv[row]),
            payload=f'{{"update_id": {update_id}, "ts_event": {ts_event}, {values}}}',
        )


class MarkValidator:
    """Rejects mark-price rows that funding or valuation must not use.

    Reasons: "invalid_mark_price" and "invalid_index_price" (NaN, infinite or not positive),
    "invalid_funding_rate" (NaN or infinite on a perpetual; a delivery contract, whose next
    funding time is 0, has no rate and passes with NaN). A NaN estimated settle price means
    "not sent" and passes. Stateless: marks are not checked for order.
    """

    def __init__(self, stage: str = MARK_STAGE) -> None:
        self.stage = stage

    def validate(
        self, symbol: str, marks: MarkPriceColumns, source: str
    ) -> tuple[MarkPriceColumns, list[DeadLetter]]:
        """Split `marks` of `symbol` into the accepted rows and dead letters for the rest."""
        if len(marks) == 0:
            return marks, []
        mark_ok = np.isfinite(marks.mark_price) & (marks.mark_price > 0)
        index_ok = np.isfinite(marks.index_price) & (marks.index_price > 0)
        rate_ok = np.isfinite(marks.funding_rate) | (
            np.isnan(marks.funding_rate) & (marks.next_funding_time == 0)
        )
        letters: list[DeadLetter] = []
        for row in np.flatnonzero(~(mark_ok & index_ok & rate_ok)).tolist():
            if not mark_ok[row]:
                reason, name = "invalid_mark_price", "mark price"
                value = float(marks.mark_price[row])
            elif not index_ok[row]:
                reason, name = "invalid_index_price", "index price"
                value = float(marks.index_price[row])
            else:
                reason, name = "invalid_funding_rate", "funding rate"
                value = float(marks.funding_rate[row])
            letters.append(self._letter(symbol, marks, row, reason, f"{name} {value!r}", source))
        kept = np.flatnonzero(mark_ok & index_ok & rate_ok)
        if len(kept) == len(marks):
            return marks, letters
        columns = {key: value[kept] for key, value in marks.as_dict().items()}
        return MarkPriceColumns(**columns), letters

    def _letter(
        self, symbol: str, marks: MarkPriceColumns, row: int, reason: str, detail: str,
        source: str,
    ) -> DeadLetter:
        ts_event = int(marks.ts_event[row])
        values = ", ".join(
            f'"{name}": "{float(column[row])!r}"'
            for name, column in (
                ("mark_price", marks.mark_price), ("index_price", marks.index_price),
                ("estimated_settle_price", marks.estimated_settle_price),
                ("funding_rate", marks.funding_rate),
            )
        )
        return DeadLetter(
            stage=self.stage,
            reason=reason,
            detail=f"{symbol} mark at {ts_event} ({source} row {row}): {detail} is not usable",
            source=f"{source} row {row}",
            symbol=symbol,
            ts_event=ts_event,
            ts_recv=int(marks.ts_recv[row]),
            payload=(
                f'{{"ts_event": {ts_event}, {values}, '
                f'"next_funding_time": {int(marks.next_funding_time[row])}}}'
            ),
        )
