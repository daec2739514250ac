"""BarFolder against a naive dict-grouping fold, on the real trades of the bundled capture."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
from capture_helpers import CAPTURE_FILES, read_capture, split_frames

from dataflows.book import TRACK_FIELDS, BookSynchronizer, BookTrack
from dataflows.windows import BarFolder, benchmark_fold
from engine.batches import BAR_FIELDS, BarColumns, TradeColumns
from engine.timeframes import DEFAULT_TIMEFRAMES, timeframe_ns

SECOND = 1_000_000_000
EXACT = ("ts_open", "ts_close", "open", "high", "low", "close", "trade_count")
SUMS = ("volume", "buy_volume", "sell_volume", "vwap", "order_flow_imbalance")


@pytest.fixture(scope="module")
def trades() -> TradeColumns:
    return TradeColumns.concat([read_capture(path).trades for path in CAPTURE_FILES])


def naive_bars(trades: TradeColumns, width: int) -> dict[str, np.ndarray]:
    """Group trades by window start in a dict, one trade at a time."""
    groups: dict[int, dict[str, float]] = {}
    rows = zip(trades.ts_event.tolist(), trades.price.tolist(), trades.qty.tolist(),
               trades.side.tolist(), strict=True)
    for ts, price, qty, side in rows:
        key = ts // width * width
        bar = groups.setdefault(key, {"open": price, "high": price, "low": price, "volume": 0.0,
                                      "buy_volume": 0.0, "sell_volume": 0.0, "notional": 0.0,
                                      "trade_count": 0})
        bar["high"] = max(bar["high"], price)
        bar["low"] = min(bar["low"], price)
        bar["close"] = price
        bar["volume"] += qty
        bar["buy_volume" if side > 0 else "sell_volume"] += qty
        bar["notional"] += price * qty
        bar["trade_count"] += 1
    keys = sorted(groups)
    out = {name: np.array([groups[key][name] for key in keys])
           for name in ("open", "high", "low", "close", "volume", "buy_volume", "sell_volume",
                        "trade_count")}
    out["ts_open"] = np.array(keys, dtype=np.int64)
    out["ts_close"] = out["ts_open"] + width
    out["vwap"] = np.array([groups[key]["notional"] / groups[key]["volume"] for key in keys])
    out["order_flow_imbalance"] = (out["buy_volume"] - out["sell_volume"]) / out["volume"]
    return out


def concat_bars(parts: list[dict[str, BarColumns]], timeframe: str) -> dict[str, np.ndarray]:
    return {name: np.concatenate([part[timeframe][name] for part in parts])
            for name in BAR_FIELDS}


def fold_in_batches(trades: TradeColumns, cuts: list[int], watermark_rule: str,
                    folder: BarFolder | None = None) -> list[dict[str, BarColumns]]:
    """Fold the trades cut at `cuts`; the watermark is the last trade of the batch ("last"),
    the next batch's first trade ("next", the most a source may promise) or the batch's first
    trade ("lagging"). Ends with a flush."""
    folder = folder or BarFolder(DEFAULT_TIMEFRAMES)
    edges = [0, *cuts, len(trades)]
    ts = trades.ts_event
    outputs = []
    watermark = int(ts[0]) - 1
    for start, stop in itertools.pairwise(edges):
        if stop > start:
            rule = {"last": ts[stop - 1], "lagging": ts[start],
                    "next": ts[stop] if stop < len(ts) else ts[-1] + 1}
            watermark = max(watermark, int(rule[watermark_rule]))
        outputs.append(folder.fold(trades.take(slice(start, stop)), watermark))
    outputs.append(folder.flush(int(ts[-1]) + 1))
    return outputs


def random_cuts(rng: np.random.Generator, length: int, count: int) -> list[int]:
    cuts = sorted(rng.integers(1, length, size=count).tolist())
    return sorted([*cuts, cuts[0], cuts[len(cuts) // 2]])  # repeats: empty batches


def test_one_shot_matches_naive_fold(trades: TradeColumns) -> None:
    outputs = fold_in_batches(trades, [], "last")
    for timeframe in DEFAULT_TIMEFRAMES:
        got = concat_bars(outputs, timeframe)
        expected = naive_bars(trades, timeframe_ns(timeframe))
        for name in EXACT:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        for name in SUMS:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, err_msg=name)
        for name in ("spread", "top_imbalance", "depth_bid_5pct", "depth_ask_5pct"):
            assert np.isnan(got[name]).all()  # no book given
        assert got["trade_count"].dtype == np.int64 and got["ts_close"].dtype == np.int64
    one_second = concat_bars(outputs, "1s")
    assert len(one_second["ts_open"]) < (trades.ts_event[-1] - trades.ts_event[0]) // SECOND
    assert one_second["trade_count"].sum() == len(trades)  # empty seconds emit no bar


@pytest.mark.parametrize("watermark_rule", ["last", "next", "lagging"])
def test_random_batch_splits_give_identical_bars(trades: TradeColumns,
                                                 watermark_rule: str) -> None:
    one_shot = fold_in_batches(trades, [], watermark_rule)
    rng = np.random.default_rng(11)
    for count in (7, 200, 1000):
        outputs = fold_in_batches(trades, random_cuts(rng, len(trades), count), watermark_rule)
        for timeframe in DEFAULT_TIMEFRAMES:
            got, expected = concat_bars(outputs, timeframe), concat_bars(one_shot, timeframe)
            for name in BAR_FIELDS:
                np.testing.assert_array_equal(got[name], expected[name],
                                              err_msg=f"{timeframe} {name}")


def test_bars_are_emitted_as_soon_as_the_watermark_closes_them(trades: TradeColumns) -> None:
    rng = np.random.default_rng(5)
    cuts = random_cuts(rng, len(trades), 400)
    folder = BarFolder(DEFAULT_TIMEFRAMES)
    previous = -math.inf
    ts = trades.ts_event
    for start, stop in itertools.pairwise([0, *cuts, len(trades)]):
        watermark = int(ts[stop]) if stop < len(ts) else int(ts[-1]) + 1
        out = folder.fold(trades.take(slice(start, stop)), watermark)
        for timeframe, bars in out.items():
            width = timeframe_ns(timeframe)
            assert (bars["ts_close"] <= watermark).all()
            assert (bars["ts_close"] > previous).all(), timeframe
            # Every window with trades that the watermark has closed is out by now.
            closed = np.unique(ts[:stop] // width * width)
            closed = closed[closed + width <= watermark]
            assert set(closed[closed + width > previous].tolist()) == set(
                bars["ts_open"].tolist())
        previous = watermark


def test_pickle_mid_stream_continues_identically(trades: TradeColumns) -> None:
    folder = BarFolder(DEFAULT_TIMEFRAMES)
    middle = len(trades) // 2 + 7
    folder.fold(trades.take(slice(0, middle)), int(trades.ts_event[middle - 1]))
    restored = pickle.loads(pickle.dumps(folder))
    assert len(pickle.dumps(folder)) < 20_000  # the carried state is small
    rest = trades.take(slice(middle, None))
    for copy in (folder, restored):
        copy.fold(rest, int(trades.ts_event[-1]))
    expected, got = folder.flush(int(trades.ts_event[-1]) + 1), restored.flush(
        int(trades.ts_event[-1]) + 1)
    for timeframe in DEFAULT_TIMEFRAMES:
        for name in BAR_FIELDS:
            np.testing.assert_array_equal(got[timeframe][name], expected[timeframe][name])


def test_late_trades_are_dead_lettered_not_folded(trades: TradeColumns) -> None:
    folder = BarFolder(("1s", "1m"))
    first = trades.take(slice(0, 1000))
    watermark = int(first.ts_event[-1]) + 5 * SECOND
    folder.fold(first, watermark)
    late = trades.take(slice(990, 1000))  # windows already closed by the watermark
    out = folder.fold(late, watermark)
    assert all(len(bars) == 0 for bars in out.values())
    letters = folder.take_dead_letters()
    assert [letter.reason for letter in letters] == ["late_trade"] * 10
    assert folder.take_dead_letters() == []


def test_unsorted_trades_are_refused(trades: TradeColumns) -> None:
    shuffled = trades.take(np.array([1, 0, 2]))
    with pytest.raises(ValueError, match="non-decreasing"):
        BarFolder(("1s",)).fold(shuffled, int(trades.ts_event[2]))


def synthetic_track(start: int, stop: int, step: int) -> BookTrack:
    """Samples every `step` ns; features encode the sample time, with an out-of-sync stretch."""
    times = np.arange(start, stop, step, dtype=np.int64)
    value = (times // SECOND % 1000).astype(np.float64)
    rows = [tuple(v + i for i in range(len(TRACK_FIELDS))) for v in value.tolist()]
    track = BookTrack.from_rows(times.tolist(), rows)
    out_of_sync = slice(len(times) // 3, len(times) // 3 + 20)
    for name in TRACK_FIELDS:
        getattr(track, name)[out_of_sync] = np.nan
    return track


def expected_book(track: BookTrack, ts_open: np.ndarray, ts_close: np.ndarray,
                  name: str) -> np.ndarray:
    out = []
    times = track.ts_event.tolist()
    values = getattr(track, name).tolist()
    for open_, close in zip(ts_open.tolist(), ts_close.tolist(), strict=True):
        inside = [v for t, v in zip(times, values, strict=True) if open_ < t <= close]
        out.append(inside[-1] if inside else math.nan)
    return np.array(out)


def test_book_features_come_from_the_last_sample_in_the_bar(trades: TradeColumns) -> None:
    ts = trades.ts_event
    start = int(ts[0]) // SECOND * SECOND + SECOND
    track = synthetic_track(start, int(ts[-1]) + 3 * SECOND, 2 * SECOND + SECOND // 2)
    rng = np.random.default_rng(3)
    cuts = random_cuts(rng, len(trades), 50)
    edges = [0, *cuts, len(trades)]
    folder = BarFolder(("1s", "5m"))
    parts = []
    watermark = delivered = -1
    for begin, stop in itertools.pairwise(edges):
        if stop > begin:
            watermark = int(ts[stop - 1])
        # Each batch brings the book samples up to a little past its watermark.
        mask = (track.ts_event > delivered) & (track.ts_event <= watermark + 2 * SECOND)
        delivered = max(delivered, watermark + 2 * SECOND)
        parts.append(folder.fold(trades.take(slice(begin, stop)), watermark, track.take(mask)))
    parts.append(folder.flush(int(ts[-1]) + 1, track.take(track.ts_event > delivered)))
    for timeframe in ("1s", "5m"):
        bars = concat_bars(parts, timeframe)
        for field in ("spread", "top_imbalance", "depth_bid_5pct", "depth_ask_5pct"):
            expected = expected_book(track, bars["ts_open"], bars["ts_close"], field)
            np.testing.assert_array_equal(bars[field], expected, err_msg=f"{timeframe} {field}")
    one_second = concat_bars(parts, "1s")["spread"]
    assert np.isnan(one_second).any() and not np.isnan(one_second).all()


def test_real_book_track_at_bar_close(trades: TradeColumns) -> None:
    book = BookSynchronizer("BTCUSDT")
    folder = BarFolder(("1s", "1m"))
    parts = []
    for path in CAPTURE_FILES:
        capture = read_capture(path)
        result = book.apply(*split_frames(capture.book_frames))
        parts.append(folder.fold(capture.trades, int(capture.trades.ts_event[-1]),
                                 result.track))
        tracks = result.track
        minute = parts[-1]["1m"]
        if len(minute):
            rows = np.searchsorted(tracks.ts_event, minute["ts_close"])
            np.testing.assert_array_equal(minute["spread"], tracks.spread[rows])
            np.testing.assert_array_equal(minute["depth_bid_5pct"], tracks.depth_bid_5pct[rows])
    seconds = concat_bars(parts, "1s")
    assert np.nanmin(seconds["spread"]) > 0 and np.isfinite(seconds["spread"]).mean() > 0.9


def test_benchmark_runs() -> None:
    result = benchmark_fold(50_000, batch_size=7_000)
    assert result["trades"] == 50_000 and result["bars"] > 0


@pytest.mark.parametrize("watermark_rule", ["last", "lagging"])
def test_live_sized_batches_give_identical_bars(trades: TradeColumns, watermark_rule: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Live batches hold one to three trades; most change no window and take the quiet path,
    which must leave exactly the state the full fold would."""
    quiet_calls = []
    original = BarFolder._absorb_quietly

    def counting(self: BarFolder, *args: object) -> dict[str, BarColumns]:
        quiet_calls.append(1)
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(BarFolder, "_absorb_quietly", counting)
    head = trades.take(slice(0, 6000))
    one_shot = fold_in_batches(head, [], watermark_rule)
    rng = np.random.default_rng(5)
    cuts = np.cumsum(rng.integers(0, 4, size=len(head))).tolist()
    cuts = [cut for cut in cuts if 0 < cut < len(head)]
    outputs = fold_in_batches(head, cuts, watermark_rule)
    assert len(quiet_calls) > len(cuts) // 2
    for timeframe in DEFAULT_TIMEFRAMES:
        got, expected = concat_bars(outputs, timeframe), concat_bars(one_shot, timeframe)
        for name in BAR_FIELDS:
            np.testing.assert_array_equal(got[name], expected[name],
                                          err_msg=f"{timeframe} {name}")
