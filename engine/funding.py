"""Perpetual funding: settlement times and rates read from the mark-price stream.

Binance USD-M settles funding every 8 hours (00:00, 08:00, 16:00 UTC). Each `markPriceUpdate`
carries the rate of the next settlement (`r`, `MarkPriceColumns.funding_rate`) and its time (`T`,
`next_funding_time`). `FundingSchedule.observe` collects, for every settlement time T it sees:
- the rate: the last row announcing T (next_funding_time == T) with ts_event <= T;
- the mark: the mark price of the last row with ts_event <= T (any announced time).
Rows with next_funding_time 0 (a contract without funding), a non-finite rate or an unusable
mark are ignored. Data is final for T once event time has passed T (a batch's rows before its
watermark are all delivered), so `due(until)` hands out the settlements with T < until, each once.

At a settlement the symbol's position pays quantity x mark x rate (`FundingPayment.amount`, what
the account paid: longs pay and shorts receive a positive rate). The engine settles before each
fill, each mark, each decision and at each batch end, with the position it holds then; since the
position only changes at fills, that is the position at T (a fill at exactly T counts, as it is
applied before the settlement at T is due). No payment is emitted for a flat position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.batches import MarkPriceColumns
from engine.types import FundingPayment


@dataclass
class _Candidate:
    rate: float = math.nan
    rate_ts: int = -(2**63)
    mark: float = math.nan
    mark_ts: int = -(2**63)


@dataclass(frozen=True)
class FundingSettlement:
    ts_event: int
    rate: float
    mark: float


class FundingSchedule:
    """One perpetual's funding settlements, from its mark stream; picklable."""

    def __init__(self) -> None:
        self._candidates: dict[int, _Candidate] = {}
        self._settled_through = -(2**63)  # every settlement at or before this was handed out
        # announced rates of the current batch by time, and the last one before it
        self._rate_ts = np.empty(0, dtype=np.int64)
        self._rates = np.empty(0, dtype=np.float64)
        self._earlier_rate: float | None = None

    def rate_at(self, ts_event: int) -> float | None:
        """The funding rate last announced at or before `ts_event` (never a later one), or None
        before any (a spot symbol has none)."""
        index = int(np.searchsorted(self._rate_ts, ts_event, "right")) - 1
        return float(self._rates[index]) if index >= 0 else self._earlier_rate

    def observe(self, marks: MarkPriceColumns | None) -> None:
        """Take a batch's mark rows (vectorised; a few settlement times per batch)."""
        if marks is None or not len(marks):
            return
        order = np.argsort(marks.ts_event, kind="stable")
        ts = marks.ts_event[order]
        mark = marks.mark_price[order]
        rate = marks.funding_rate[order]
        next_time = marks.next_funding_time[order]
        usable_mark = np.isfinite(mark) & (mark > 0)
        announced = usable_mark & (next_time > 0) & np.isfinite(rate)
        if len(self._rates):
            self._earlier_rate = float(self._rates[-1])
        self._rate_ts, self._rates = ts[announced], rate[announced]
        for settle_ts in np.unique(next_time[announced]).tolist():
            if settle_ts > self._settled_through:
                self._candidates.setdefault(int(settle_ts), _Candidate())
        mark_ts, mark_price = ts[usable_mark], mark[usable_mark]
        for settle_ts, candidate in self._candidates.items():
            rows = np.flatnonzero(announced & (next_time == settle_ts) & (ts <= settle_ts))
            if len(rows) and int(ts[rows[-1]]) >= candidate.rate_ts:
                candidate.rate, candidate.rate_ts = float(rate[rows[-1]]), int(ts[rows[-1]])
            last = int(np.searchsorted(mark_ts, settle_ts, "right")) - 1
            if last >= 0 and int(mark_ts[last]) >= candidate.mark_ts:
                candidate.mark, candidate.mark_ts = float(mark_price[last]), int(mark_ts[last])

    def due(self, until: int) -> list[FundingSettlement]:
        """Settlements with ts_event < `until` not handed out yet, oldest first. A time whose
        rate was never announced before it (rows only after T) settles nothing."""
        ready = sorted(settle_ts for settle_ts in self._candidates if settle_ts < until)
        settlements = []
        for settle_ts in ready:
            candidate = self._candidates.pop(settle_ts)
            self._settled_through = max(self._settled_through, settle_ts)
            if math.isfinite(candidate.rate) and math.isfinite(candidate.mark):
                settlements.append(FundingSettlement(settle_ts, candidate.rate, candidate.mark))
        return settlements


def funding_payment(
    symbol: str, settlement: FundingSettlement, position: float, sequence: int
) -> FundingPayment | None:
    """The payment of a position at a settlement (None when flat or not finite: fail closed)."""
    amount = position * settlement.mark * settlement.rate
    if position == 0 or not math.isfinite(amount):
        return None
    return FundingPayment(
        symbol=symbol,
        ts_event=settlement.ts_event,
        sequence=sequence,
        amount=amount,
        rate=settlement.rate,
        mark=settlement.mark,
        position=position,
    )


def funding_row(payment: FundingPayment) -> dict[str, Any]:
    """A `funding` journal row."""
    return {
        "key": f"{payment.symbol}:funding:{payment.ts_event}",
        "ts_event": payment.ts_event,
        "symbol": payment.symbol,
        "sequence": payment.sequence,
        "position": payment.position,
        "mark_price": payment.mark,
        "rate": payment.rate,
        "amount": payment.amount,
    }
