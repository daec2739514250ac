"""Missed trades recovered by trade id, and trades polled while the socket is down.

Binance trade ids are consecutive per symbol, so a trade whose id is more than one past the last
one seen proves trades were missed (a reconnect, a dropped frame). The venue serves trades by id
(`historicalTrades?fromId=`), so the feed fetches exactly the missing ids and passes them on as
one REST-envelope frame before the trade that revealed the gap. The fill is stamped with that
trade's receive time, so stream order and receive-time order agree. When the venue will not give
them (an error, a key it wants, ids it no longer has) a "gap_unfilled" feed event names the ids:
the loss is journaled, never silent.
"""

from __future__ import annotations

from typing import Any

from dataflows.live.binance_rest import BinanceRest, RestError, envelope
from dataflows.live.frames import FrameBuffer

MAX_TRADES_PER_CALL = 1000


def _valid_trades(data: Any) -> list[dict[str, Any]]:
    """Trades of a REST answer that carry an integer id, in id order."""
    if type(data) is not list:
        return []
    trades = [trade for trade in data if type(trade) is dict and type(trade.get("id")) is int]
    return sorted(trades, key=lambda trade: trade["id"])


class TradeGapFiller:
    """Fetches missed trades by id for the feed; counts what it did in the feed's stats."""

    def __init__(self, rest: BinanceRest, buffer: FrameBuffer, stats: dict[str, int]) -> None:
        self.rest = rest
        self.buffer = buffer
        self.stats = stats

    async def fill(self, symbol: str, last_id: int, next_id: int, ts_recv: int) -> None:
        """Pass on trades last_id+1 .. next_id-1, or journal which of them could not be had."""
        collected: list[dict[str, Any]] = []
        from_id = last_id + 1
        reason = ""
        while from_id < next_id:
            limit = min(MAX_TRADES_PER_CALL, next_id - from_id)
            answer = await self.rest.historical_trades(symbol, from_id, limit)
            if isinstance(answer, RestError):
                reason = answer.reason
                break
            trades = [t for t in _valid_trades(answer.data) if from_id <= t["id"] < next_id]
            if not trades:
                reason = f"the venue returned no trades from id {from_id}"
                break
            collected.extend(trades)
            from_id = trades[-1]["id"] + 1
        if collected:
            path = self.rest.paths["historical_trades"]
            self.buffer.put(ts_recv, envelope(path, symbol, collected))
            self.stats["gap_fills"] += 1
            self.buffer.put_event("gap_filled", symbol, f"{len(collected)} missed trades "
                                  f"{collected[0]['id']}..{collected[-1]['id']} fetched by id")
        if from_id < next_id:
            self.stats["gaps_unfilled"] += 1
            self.buffer.put_event("gap_unfilled", symbol, f"trades {from_id}..{next_id - 1} "
                                  f"missed and not recovered: {reason}"[:500])

    async def poll_new_trades(self, symbol: str, last_id: int | None) -> int | None:
        """Poll recent trades; pass on those after `last_id` (gap-filling before them when the
        poll does not reach back far enough). Returns the newest id passed on, or None."""
        answer = await self.rest.trades(symbol, MAX_TRADES_PER_CALL)
        if isinstance(answer, RestError):
            self.stats["rest_poll_failures"] = self.stats.get("rest_poll_failures", 0) + 1
            return None
        trades = _valid_trades(answer.data)
        new = [trade for trade in trades if last_id is None or trade["id"] > last_id]
        if not new:
            return None
        if last_id is not None and new[0]["id"] > last_id + 1:
            await self.fill(symbol, last_id, new[0]["id"], answer.ts_recv)
        self.buffer.put(answer.ts_recv, envelope(self.rest.paths["trades"], symbol, new))
        return int(new[-1]["id"])
