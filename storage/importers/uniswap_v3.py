"""Uniswap v3 pool logs to a DEX tape (`storage.dex_tape`).

Two inputs (plain or gzip CSV), one result:
- raw `eth_getLogs` rows (`block_number, block_timestamp, transaction_hash, transaction_index,
  log_index, topics, data`): the Swap, Mint, Burn and Collect events are decoded from their
  topics and ABI words;
- decoded rows as demeter-fetch writes them (`tx_type` SWAP / MINT / BURN / COLLECT with
  amounts, sqrtPriceX96, tick, liquidity, tick range).
A test imports the bundled day both ways and gets the same swaps and liquidity events.

Rows are ordered by (block, log index). The pool's active liquidity is tracked through the
liquidity events: the last swap states it exactly; a mint or burn whose range holds the last
swap's tick changes it. Other pool events (Flash, protocol fees, oracle cardinality) and rows that
cannot be decoded become dead letters naming the file, line and reason. A file that cannot be
read at all raises `ImportFormatError`.

Decoding 256-bit words needs Python integers, so rows are decoded one by one into column lists
(an offline import, never the replay's hot path); the tables are built once, at the end.
"""

from __future__ import annotations

import ast
import csv
import gzip
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.batches import DeadLetter
from storage.dex_tape import LIQUIDITY_SCHEMA, SWAP_SCHEMA, DexPool, write_dex_tape
from storage.importers.csv_blocks import ImportFormatError
from storage.importers.session import DeadLetterLog

SWAP_TOPIC = "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
MINT_TOPIC = "0x7a53080ba414158be7ec69b987b5fb7d07dee101fe85488f0853ae16239d0bde"
BURN_TOPIC = "0x0c396cd989a39f4459b5fa1aed6a9a8dcdbc45908acfd67e028cd568da98982c"
COLLECT_TOPIC = "0x70935338e69775456a85ddef226c395fb668b63fa0115f5f20610b388e6ca9c0"
_RAW_COLUMNS = ("block_number", "block_timestamp", "transaction_hash", "log_index", "topics",
                "data")
_DECODED_COLUMNS = ("block_number", "block_timestamp", "tx_type", "transaction_hash",
                    "pool_log_index", "sender", "receipt", "amount0", "amount1",
                    "total_liquidity", "sqrtPriceX96", "current_tick", "tick_lower",
                    "tick_upper", "liquidity")
_Q192 = float(2**192)


class _SkipRowError(Exception):
    """A row that becomes a dead letter: `reason` names the kind."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class _Event:
    """One decoded log, before pool-state tracking. Amounts are raw integers."""

    ts_event: int
    block_number: int
    log_index: int
    tx_hash: str
    kind: str  # swap, mint, burn, collect
    account: str = ""  # swap: sender; mint: caller; burn, collect: position owner
    recipient: str = ""
    amount0: int = 0
    amount1: int = 0
    sqrt_price_x96: int = 0
    tick: int = 0
    liquidity: int = 0  # swap: the pool's active liquidity; mint/burn: the position's amount
    tick_lower: int = 0
    tick_upper: int = 0


@dataclass
class UniswapImportResult:
    path: Path
    rows: dict[str, int]
    dead_letter_count: int
    dead_letter_reasons: dict[str, int]
    first_ts: int | None
    last_ts: int | None

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows": self.rows,
                "dead_letter_count": self.dead_letter_count,
                "dead_letter_reasons": self.dead_letter_reasons,
                "first_ts": self.first_ts, "last_ts": self.last_ts}


# ------------------------------------------------------------------ reading


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        handle = (gzip.open(path, "rt", newline="", encoding="utf-8") if path.suffix == ".gz"
                  else path.open(newline="", encoding="utf-8"))
    except OSError as error:
        raise ImportFormatError(f"{path}: cannot read: {error}") from None
    with handle:
        try:
            yield from _read(path, handle)
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
            raise ImportFormatError(f"{path}: unreadable: {error}") from None


def _read(path: Path, handle: Any) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(handle)
    header = reader.fieldnames or []
    if set(_RAW_COLUMNS) <= set(header):
        kind = "raw"
    elif set(_DECODED_COLUMNS) <= set(header):
        kind = "decoded"
    else:
        raise ImportFormatError(
            f"{path}: header {header} is neither raw eth_getLogs rows "
            f"({', '.join(_RAW_COLUMNS)}) nor decoded Uniswap v3 rows "
            f"({', '.join(_DECODED_COLUMNS)})")
    for line, row in enumerate(reader, start=2):
        row["__kind__"] = kind
        yield line, row


def _timestamp_ns(text: str) -> int:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000


def _integer(text: str, name: str) -> int:
    """An integer column (decoded files write some as "199045.0")."""
    value = text.strip()
    if value.endswith(".0"):
        value = value[:-2]
    try:
        return int(value)
    except ValueError:
        raise _SkipRowError("bad_number", f"{name} {text!r} is not an integer") from None


def _words(data: str, count: int) -> list[int]:
    body = data[2:] if data.startswith("0x") else data
    if len(body) != 64 * count:
        raise _SkipRowError("bad_data",
                            f"data has {len(body) // 2} bytes, the event has {32 * count}")
    try:
        return [int(body[index * 64:(index + 1) * 64], 16) for index in range(count)]
    except ValueError:
        raise _SkipRowError("bad_data", "data is not hexadecimal") from None


def _signed(word: int, bits: int = 256) -> int:
    return word - (1 << bits) if word >= 1 << (bits - 1) else word


def _address(word: int) -> str:
    return f"0x{word & ((1 << 160) - 1):040x}"


def _raw_event(row: dict[str, str]) -> _Event:
    try:
        topics = [str(topic).lower() for topic in ast.literal_eval(row["topics"])]
    except (ValueError, SyntaxError):
        raise _SkipRowError("bad_topics", f"topics {row['topics'][:80]!r} is not a list") from None
    if not topics:
        raise _SkipRowError("bad_topics", "no topics")
    head = _Event(_timestamp_ns(row["block_timestamp"]), _integer(row["block_number"], "block"),
                  _integer(row["log_index"], "log_index"), row["transaction_hash"], "")
    indexed = [int(topic, 16) for topic in topics[1:]]
    if topics[0] == SWAP_TOPIC and len(indexed) == 2:
        amount0, amount1, sqrt_price, liquidity, tick = _words(row["data"], 5)
        head.kind, head.account = "swap", _address(indexed[0])
        head.recipient = _address(indexed[1])
        head.amount0, head.amount1 = _signed(amount0), _signed(amount1)
        head.sqrt_price_x96, head.liquidity, head.tick = sqrt_price, liquidity, _signed(tick)
    elif topics[0] in (MINT_TOPIC, BURN_TOPIC, COLLECT_TOPIC) and len(indexed) == 3:
        head.account = _address(indexed[0])
        head.tick_lower, head.tick_upper = _signed(indexed[1]), _signed(indexed[2])
        if topics[0] == MINT_TOPIC:
            sender, head.liquidity, head.amount0, head.amount1 = _words(row["data"], 4)
            head.kind, head.account = "mint", _address(sender)  # the caller, as decoded rows
        elif topics[0] == BURN_TOPIC:
            head.liquidity, head.amount0, head.amount1 = _words(row["data"], 3)
            head.kind = "burn"
        else:
            recipient, head.amount0, head.amount1 = _words(row["data"], 3)
            head.kind, head.recipient = "collect", _address(recipient)
    else:
        raise _SkipRowError("unhandled_event", f"event topic {topics[0]} with {len(indexed)} "
                            "indexed topics is not a Swap, Mint, Burn or Collect")
    return head


def _decoded_event(row: dict[str, str]) -> _Event:
    kind = row["tx_type"].strip().lower()
    if kind not in ("swap", "mint", "burn", "collect"):
        raise _SkipRowError("unhandled_event", f"tx_type {row['tx_type']!r}")
    event = _Event(_timestamp_ns(row["block_timestamp"]), _integer(row["block_number"], "block"),
                   _integer(row["pool_log_index"], "pool_log_index"), row["transaction_hash"],
                   kind, account=row["sender"].lower(), recipient=row["receipt"].lower(),
                   amount0=_integer(row["amount0"], "amount0"),
                   amount1=_integer(row["amount1"], "amount1"))
    if kind == "swap":
        event.sqrt_price_x96 = _integer(row["sqrtPriceX96"], "sqrtPriceX96")
        event.tick = _integer(row["current_tick"], "current_tick")
        event.liquidity = _integer(row["total_liquidity"], "total_liquidity")
    else:
        event.tick_lower = _integer(row["tick_lower"], "tick_lower")
        event.tick_upper = _integer(row["tick_upper"], "tick_upper")
        if kind != "collect":
            event.liquidity = abs(_integer(row["liquidity"] or "0", "liquidity"))
    return event


# ------------------------------------------------------------------ tables


def _tables(events: list[_Event], pool: DexPool) -> tuple[pa.Table, pa.Table]:
    scale0, scale1 = 10.0 ** pool.token0.decimals, 10.0 ** pool.token1.decimals
    swaps: dict[str, list[Any]] = {name: [] for name in SWAP_SCHEMA.names}
    changes: dict[str, list[Any]] = {name: [] for name in LIQUIDITY_SCHEMA.names}
    tick: int | None = None
    active: int | None = None  # exact, as the chain keeps it
    for event in sorted(events, key=lambda item: (item.block_number, item.log_index)):
        common = (event.ts_event, event.block_number, event.log_index, event.tx_hash)
        amount0, amount1 = event.amount0 / scale0, event.amount1 / scale1
        if event.kind == "swap":
            tick, active = event.tick, event.liquidity
            ratio = float(event.sqrt_price_x96) ** 2 / _Q192 * scale0 / scale1  # token1 per 0
            base, quote = (amount1, amount0) if pool.base_is_token1 else (amount0, amount1)
            price = 1.0 / ratio if pool.base_is_token1 else ratio
            values: tuple[Any, ...] = (*common, event.account, event.recipient, amount0, amount1,
                      str(event.amount0), str(event.amount1), str(event.sqrt_price_x96), price,
                      event.tick, float(event.liquidity), str(event.liquidity), base, quote,
                      1 if base < 0 else -1)
            for name, value in zip(SWAP_SCHEMA.names, values, strict=True):
                swaps[name].append(value)
            continue
        sign = {"mint": 1, "burn": -1, "collect": 0}[event.kind]
        in_range = tick is not None and event.tick_lower <= tick < event.tick_upper
        if in_range and sign and active is not None:
            active += sign * event.liquidity
        values = (*common, event.kind, event.account, event.tick_lower, event.tick_upper,
                  sign * float(event.liquidity), str(sign * event.liquidity), amount0, amount1,
                  str(event.amount0), str(event.amount1), in_range,
                  math.nan if active is None else float(active))
        for name, value in zip(LIQUIDITY_SCHEMA.names, values, strict=True):
            changes[name].append(value)
    return (pa.table(swaps, schema=SWAP_SCHEMA), pa.table(changes, schema=LIQUIDITY_SCHEMA))


def import_uniswap_v3(paths: Sequence[str | Path], out: str | Path,
                      pool: DexPool) -> UniswapImportResult:
    """Import raw or decoded pool logs of `pool` into a DEX tape at `out` (module docs)."""
    if not paths:
        raise ImportFormatError("no input files")
    target = Path(out)
    if target.exists():
        raise FileExistsError(f"{target} already exists; choose another --out")
    events: list[_Event] = []
    letters = DeadLetterLog(target)
    try:
        for source in map(Path, paths):
            for line, row in _rows(source):
                decode = _raw_event if row.pop("__kind__") == "raw" else _decoded_event
                try:
                    events.append(decode(row))
                except (_SkipRowError, KeyError, ValueError) as error:
                    reason = error.reason if isinstance(error, _SkipRowError) else "bad_row"
                    where = f"{source.name}:{line}"
                    payload = ",".join(str(value) for value in row.values())
                    letters.add(source.name, line, DeadLetter(
                        "uniswap_v3_import", reason, f"{where}: {error}", where,
                        payload=payload[:2000]))
        swaps, liquidity = _tables(events, pool)
        times = [event.ts_event for event in events]
        result = UniswapImportResult(
            target, {"swaps": swaps.num_rows, "liquidity": liquidity.num_rows}, letters.count,
            dict(letters.reasons), min(times) if times else None, max(times) if times else None)
        meta = {"sources": [Path(path).name for path in paths], "rows": result.rows,
                "first_ts": result.first_ts, "last_ts": result.last_ts,
                "dead_letters": result.dead_letter_count,
                "dead_letter_reasons": result.dead_letter_reasons}
        write_dex_tape(target, pool, swaps, liquidity, meta, letters)
    except BaseException:
        letters.discard()
        raise
    return result
