"""Test inputs built from the real bundled data: multi-symbol tapes and corrupted captures."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

from engine.batches import MarketChunk
from engine.synth import synthesize_trades
from storage.klines import read_klines_csv
from storage.tape import TapeWriter

MINUTE_NS = 60 * 10**9


def two_symbol_tape(klines_csv: Path, out: Path, minutes: int = 240) -> Path:
    """BTCUSDT from the first `minutes` real bars and a second symbol from the next `minutes`,
    shifted onto the same clock, so both trade at the same times with different paths."""
    klines = read_klines_csv(klines_csv)
    first = synthesize_trades(klines, seed=1, minutes=minutes, start_minute=0)
    second = synthesize_trades(
        klines, seed=2, minutes=minutes, start_minute=minutes, first_trade_id=1
    )
    shift = minutes * MINUTE_NS
    second = replace(second, ts_event=second.ts_event - shift, ts_recv=second.ts_recv - shift)
    with TapeWriter(out, synthetic=True, source="tests: two-symbol tape") as writer:
        writer.write_chunk(MarketChunk(symbol="BTCUSDT", sequence=0, trades=first))
        writer.write_chunk(MarketChunk(symbol="ETHUSDT", sequence=0, trades=second))
    return out


def read_capture_lines(paths: list[Path]) -> list[str]:
    lines: list[str] = []
    for path in paths:
        with gzip.open(path, "rt") as handle:
            lines.extend(line.rstrip("\n") for line in handle)
    return lines


def _frame(line: str) -> tuple[int, dict]:
    ts, _, text = line.partition(" ")
    return int(ts), json.loads(text)


def corrupted_capture(captures: list[Path], out: Path) -> dict[str, int]:
    """The real spot capture with faults injected; returns how many of each was injected.

    Faults: a malformed frame, a NaN and a negative trade price, a duplicated trade, a trade
    moved later (out of order), a removed depth update (gap) and, 200 depth updates later, a REST
    snapshot rebuilt from the true book so the book can resync.
    """
    lines = read_capture_lines(captures)
    trade_rows = [i for i, line in enumerate(lines) if "@trade" in line[:80]]
    depth_rows = [i for i, line in enumerate(lines) if "@depth" in line[:80]]
    snapshot_row = next(i for i, line in enumerate(lines) if '"lastUpdateId"' in line[:60])

    def with_price(index: int, price: str) -> str:
        ts, frame = _frame(lines[index])
        frame["data"]["p"] = price
        return f"{ts} {json.dumps(frame, separators=(',', ':'))}"

    replaced = {
        trade_rows[1000]: with_price(trade_rows[1000], "NaN"),
        trade_rows[2000]: with_price(trade_rows[2000], "-61000.5"),
    }
    duplicate_after = trade_rows[3000]
    moved_from, moved_to = trade_rows[4000], trade_rows[4050]
    gap_index = next(i for i in depth_rows if i > snapshot_row + 5000)
    resync_after = depth_rows[depth_rows.index(gap_index) + 200]

    # The true book right after `resync_after`, rebuilt from the snapshot and every update.
    _, snapshot = _frame(lines[snapshot_row])
    book = {
        "bids": {price: qty for price, qty in snapshot["bids"]},
        "asks": {price: qty for price, qty in snapshot["asks"]},
    }
    last_update = snapshot["lastUpdateId"]
    for index in depth_rows:
        if index > resync_after:
            break
        _, frame = _frame(lines[index])
        data = frame["data"]
        if data["u"] <= snapshot["lastUpdateId"]:
            continue
        for side, key in (("bids", "b"), ("asks", "a")):
            for price, qty in data[key]:
                if float(qty) == 0.0:
                    book[side].pop(price, None)
                else:
                    book[side][price] = qty
        last_update = data["u"]
    resync_ts, _ = _frame(lines[resync_after])
    resync_snapshot = {
        "lastUpdateId": last_update,
        "bids": sorted(([p, q] for p, q in book["bids"].items()), key=lambda lv: -float(lv[0])),
        "asks": sorted(([p, q] for p, q in book["asks"].items()), key=lambda lv: float(lv[0])),
    }

    output: list[str] = []
    for index, line in enumerate(lines):
        if index == gap_index or index == moved_from:
            continue
        output.append(replaced.get(index, line))
        if index == duplicate_after:
            output.append(line)
        if index == moved_to:
            output.append(lines[moved_from])
        if index == resync_after:
            output.append(f"{resync_ts + 1} {json.dumps(resync_snapshot)}")
        if index == trade_rows[500]:
            output.append(f"{_frame(line)[0]} " + '{"stream":"btcusdt@trade","data":{"e":')
    with gzip.open(out, "wt") as handle:
        handle.write("\n".join(output) + "\n")
    return {"malformed_json": 1, "invalid_price": 2, "duplicate_trade_id": 1, "out_of_order": 1}
