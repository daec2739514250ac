"""Windowed DEX features, as columns over a pool's swaps and liquidity events.

Every feature is evaluated at chosen event times (`at`, usually each block with a swap) and uses
only events at or before that time: a trailing window (t - w, t]. All work is NumPy over the
tape's columns (binary searches and segment sums), never a Python loop per swap.

- `imbalance_<w>`: (base bought - base sold by takers) / (base bought + base sold) in the window;
  +1 all buying, -1 all selling, NaN without swaps.
- `volume_<w>`: quote volume traded in the window.
- `volume_ratio`: the last 30 s of volume against the average 30 s of the previous 30 minutes.
- `price_change_<w>`: log return of the pool price over the window (last price before t - w to
  the last price at t).
- `liquidity`, `liquidity_velocity`, `liquidity_acceleration`: the pool's active liquidity at t,
  its relative change per minute over the last minute, and that velocity's change from the
  minute before. The active liquidity is the last swap's, moved by later in-range mints and
  burns (`storage.dex_tape`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND


@dataclass(frozen=True)
class DexColumns:
    """What the features need of a DEX tape, as arrays sorted by event time."""

    swap_ts: np.ndarray  # int64 ns
    price: np.ndarray  # quote per base
    base_amount: np.ndarray  # pool's view: + the pool received base (a taker sold)
    quote_amount: np.ndarray
    liquidity_ts: np.ndarray  # int64 ns of every active-liquidity observation
    liquidity: np.ndarray  # the pool's active liquidity after it (NaN: not known yet)

    @classmethod
    def from_tables(cls, swaps: object, liquidity: object) -> DexColumns:
        """From the `swaps` and `liquidity` tables of `storage.dex_tape.read_dex_tape`."""
        def column(table: object, name: str) -> np.ndarray:
            return np.asarray(table.column(name).to_numpy(zero_copy_only=False))  # type: ignore[attr-defined]

        swap_ts = column(swaps, "ts_event").astype(np.int64)
        order = np.argsort(swap_ts, kind="stable")
        events_ts = np.concatenate([swap_ts, column(liquidity, "ts_event").astype(np.int64)])
        events_value = np.concatenate([column(swaps, "liquidity"),
                                       column(liquidity, "pool_liquidity")])
        # ties keep chain order: swaps and liquidity events of one block interleave by log index
        log_index = np.concatenate([column(swaps, "log_index"), column(liquidity, "log_index")])
        chain = np.lexsort((log_index, events_ts))
        return cls(swap_ts[order], column(swaps, "price")[order],
                   column(swaps, "base_amount")[order], column(swaps, "quote_amount")[order],
                   events_ts[chain], events_value[chain])

    @classmethod
    def empty(cls) -> DexColumns:
        no_times, no_values = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(no_times, no_values, no_values, no_values, no_times, no_values)

    def take(self, swaps: slice, liquidity: slice) -> DexColumns:
        """The swaps and liquidity observations at these positions."""
        return DexColumns(self.swap_ts[swaps], self.price[swaps], self.base_amount[swaps],
                          self.quote_amount[swaps], self.liquidity_ts[liquidity],
                          self.liquidity[liquidity])

    def concat(self, later: DexColumns) -> DexColumns:
        """These events followed by `later`'s (which must all come after them)."""
        return DexColumns(*(np.concatenate([mine, theirs]) for mine, theirs in (
            (self.swap_ts, later.swap_ts), (self.price, later.price),
            (self.base_amount, later.base_amount), (self.quote_amount, later.quote_amount),
            (self.liquidity_ts, later.liquidity_ts), (self.liquidity, later.liquidity))))

    def block_times(self) -> np.ndarray:
        """The distinct swap times: where features are usually evaluated."""
        return np.unique(self.swap_ts)


def _window_sum(ts: np.ndarray, values: np.ndarray, at: np.ndarray,
                window_ns: int) -> np.ndarray:
    """Sum of values with ts in (at - window, at], each window summed from its own rows only.
    (A difference of prefix sums would depend, in its last bits, on where the held history
    starts, and so on how a stream was sliced: a replay must not.)"""
    hi = np.searchsorted(ts, at, "right")
    lo = np.searchsorted(ts, at - window_ns, "right")
    out = np.zeros(len(at))
    nonempty = np.flatnonzero(hi > lo)
    if not len(nonempty):
        return out
    bounds = np.empty(2 * len(nonempty), np.int64)
    bounds[0::2], bounds[1::2] = lo[nonempty], hi[nonempty]
    padded = np.append(np.asarray(values, np.float64), 0.0)  # hi may be one past the end
    out[nonempty] = np.add.reduceat(padded, bounds)[0::2]
    return out


def _last_before(ts: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The last value with ts <= at (NaN before the first)."""
    index = np.searchsorted(ts, at, "right") - 1
    out = np.full(len(at), np.nan)
    known = index >= 0
    out[known] = values[index[known]]
    return out


def dex_features(columns: DexColumns, at: np.ndarray,
                 imbalance_windows_s: tuple[int, ...] = (10, 30)) -> dict[str, np.ndarray]:
    """The features of the module docs at each time of `at` (int64 ns, ascending)."""
    at = np.asarray(at, np.int64)
    taker_base = -columns.base_amount  # + a taker bought base
    bought = np.where(taker_base > 0, taker_base, 0.0)
    sold = np.where(taker_base < 0, -taker_base, 0.0)
    volume = np.abs(columns.quote_amount)
    features: dict[str, np.ndarray] = {}
    for seconds in imbalance_windows_s:
        window = seconds * NS_PER_SECOND
        buy = _window_sum(columns.swap_ts, bought, at, window)
        sell = _window_sum(columns.swap_ts, sold, at, window)
        total = buy + sell
        with np.errstate(invalid="ignore", divide="ignore"):
            features[f"imbalance_{seconds}s"] = np.where(total > 0, (buy - sell) / total, np.nan)
        features[f"volume_{seconds}s"] = _window_sum(columns.swap_ts, volume, at, window)
        before = _last_before(columns.swap_ts, columns.price, at - window)
        now = _last_before(columns.swap_ts, columns.price, at)
        with np.errstate(invalid="ignore", divide="ignore"):
            features[f"price_change_{seconds}s"] = np.log(now / before)
    recent = _window_sum(columns.swap_ts, volume, at, 30 * NS_PER_SECOND)
    history = _window_sum(columns.swap_ts, volume, at - 30 * NS_PER_SECOND, 30 * NS_PER_MINUTE)
    with np.errstate(invalid="ignore", divide="ignore"):
        features["volume_ratio"] = np.where(history > 0, recent / (history / 60.0), np.nan)
    liquidity_now = _last_before(columns.liquidity_ts, columns.liquidity, at)
    liquidity_minute = _last_before(columns.liquidity_ts, columns.liquidity, at - NS_PER_MINUTE)
    liquidity_two = _last_before(columns.liquidity_ts, columns.liquidity, at - 2 * NS_PER_MINUTE)
    with np.errstate(invalid="ignore", divide="ignore"):
        velocity = (liquidity_now - liquidity_minute) / liquidity_minute
        previous = (liquidity_minute - liquidity_two) / liquidity_two
    features["liquidity"] = liquidity_now
    features["liquidity_velocity"] = velocity
    features["liquidity_acceleration"] = velocity - previous
    features["price"] = _last_before(columns.swap_ts, columns.price, at)
    return features
