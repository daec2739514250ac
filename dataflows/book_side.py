"""One side of a local L2 order book: price levels and their quantities, best level last.

Levels live in a dict (price -> quantity) beside a sorted list of keys, where the key is the
price for bids and the negated price for asks: on both sides the best level is the last key, and
the levels a diff-depth update touches, which cluster near the touch, sit near the end of the
list. Changing the quantity of an existing level is one dict store; adding or removing a level
is a bisect (O(log n)) plus a list insert or delete that moves only the keys behind it, few for
levels near the touch. Reading the best level is O(1); the levels within a price band, or the
best n levels, are a slice of the key list. Dict and list pickle as they are.
"""

from __future__ import annotations

import itertools
import math
import operator
from bisect import bisect_left

from engine.batches import ASK, BID


class BookSide:
    """Bid or ask levels of one book; sorted keys are `sign * price`, sign +1 (bids), -1 (asks)."""

    def __init__(self, side: int) -> None:
        if side not in (BID, ASK):
            raise ValueError(f"side must be BID ({BID}) or ASK ({ASK}), got {side}")
        self.sign = 1.0 if side == BID else -1.0
        self.levels: dict[float, float] = {}
        self.keys: list[float] = []

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, prices: list[float], qtys: list[float]) -> None:
        """Replace every level (a snapshot); for a price given twice the last quantity wins."""
        levels = dict(zip(prices, qtys, strict=True))
        self.levels = {price: qty for price, qty in levels.items() if qty != 0.0}
        sign = self.sign
        self.keys = sorted(sign * price for price in self.levels)

    def apply(self, prices: list[float], qtys: list[float]) -> None:
        """Set each level's absolute quantity in order; a quantity of 0 removes the level."""
        levels, keys, sign = self.levels, self.keys, self.sign
        for price, qty in zip(prices, qtys, strict=True):
            if qty == 0.0:
                if levels.pop(price, None) is not None:
                    del keys[bisect_left(keys, sign * price)]
            else:
                if price not in levels:
                    key = sign * price
                    keys.insert(bisect_left(keys, key), key)
                levels[price] = qty

    def best(self) -> tuple[float, float] | None:
        """(price, quantity) of the best level, None when the side is empty."""
        if not self.keys:
            return None
        price = self.sign * self.keys[-1]
        return price, self.levels[price]

    def depth_to(self, limit_price: float) -> float:
        """Total quantity on levels at least as good as `limit_price` (bids priced at or above
        it, asks at or below it), correctly rounded (`math.fsum`).

        When most levels qualify, it sums every quantity and the negated quantities of the few
        that do not, in one exact `fsum`: the same result, without a lookup per level.
        """
        keys, levels = self.keys, self.levels
        start = bisect_left(keys, self.sign * limit_price)
        if 2 * start < len(keys):
            outside = keys[:start] if self.sign > 0 else map(operator.neg, keys[:start])
            return math.fsum(itertools.chain(
                levels.values(), map(operator.neg, map(levels.__getitem__, outside))))
        inside = keys[start:] if self.sign > 0 else map(operator.neg, keys[start:])
        return math.fsum(map(levels.__getitem__, inside))

    def top(self, count: int) -> tuple[list[float], list[float]]:
        """Prices and quantities of the best `count` levels, best first."""
        sign = self.sign
        prices = [sign * key for key in self.keys[: -count - 1 : -1]]
        return prices, [self.levels[price] for price in prices]

    def as_dict(self) -> dict[float, float]:
        """A copy of the levels, price -> quantity."""
        return dict(self.levels)
