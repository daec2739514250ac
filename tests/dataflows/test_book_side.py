"""BookSide against a plain dict, under seeded random level changes on both sides.

Prices come from a small grid so that updates insert, change and remove levels and remove absent
ones; after every update the side's best level, best n levels and depth to a limit price (both
ways it sums: most levels inside the limit, or most outside) equal what the dict gives.
"""

from __future__ import annotations

import math
import pickle
import random

import pytest

from dataflows.book_side import BookSide
from engine.batches import ASK, BID


def brute_force(levels: dict[float, float], side: int, limit: float, count: int,
                ) -> tuple[tuple[float, float] | None, list[float], list[float], float]:
    better = (lambda a, b: a >= b) if side == BID else (lambda a, b: a <= b)
    ordered = sorted(levels, reverse=side == BID)
    best = (ordered[0], levels[ordered[0]]) if ordered else None
    depth = math.fsum(qty for price, qty in levels.items() if better(price, limit))
    return best, ordered[:count], [levels[p] for p in ordered[:count]], depth


@pytest.mark.parametrize("side", [BID, ASK])
def test_matches_a_dict_under_random_updates(side: int) -> None:
    rng = random.Random(side)
    grid = [round(100.0 + 0.1 * i, 1) for i in range(-200, 201)]
    start = {price: float(rng.randint(1, 9)) for price in rng.sample(grid, 150)}
    book_side = BookSide(side)
    book_side.load([*start, 1.0], [*start.values(), 0.0])  # a zero level is not loaded
    truth = dict(start)
    for step in range(400):
        prices = [rng.choice(grid) for _ in range(rng.randint(0, 12))]
        qtys = [0.0 if rng.random() < 0.4 else rng.randint(1, 50) / 8 for _ in prices]
        book_side.apply(prices, qtys)
        for price, qty in zip(prices, qtys, strict=True):
            if qty == 0.0:
                truth.pop(price, None)
            else:
                truth[price] = qty
        if step % 50 == 0:
            book_side = pickle.loads(pickle.dumps(book_side))
        assert book_side.as_dict() == truth and len(book_side) == len(truth)
        assert book_side.keys == sorted(book_side.sign * price for price in truth)
        for limit in (rng.choice(grid), grid[0] - 1, grid[-1] + 1, 100.0):
            best, top_prices, top_qtys, depth = brute_force(truth, side, limit, 7)
            assert book_side.best() == best
            assert book_side.top(7) == (top_prices, top_qtys)
            assert book_side.depth_to(limit) == depth  # exactly: both are correctly rounded


def test_empty_side_and_bad_side() -> None:
    empty = BookSide(ASK)
    assert empty.best() is None and empty.top(3) == ([], []) and empty.depth_to(1.0) == 0.0
    empty.apply([5.0], [0.0])  # removing an absent level is normal
    assert len(empty) == 0
    with pytest.raises(ValueError, match="side must be BID"):
        BookSide(0)
