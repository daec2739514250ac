"""Deterministic client order ids.

`client_order_id` is `{run_tag}{symbol_tag}-{purpose}-{seq}`: run_tag is 8 base32 characters of
BLAKE2b(run id), symbol_tag 6 of BLAKE2b(symbol), purpose 1-4 characters [a-z0-9] (the tactics'
order names: "e", "em", "sl", "tp1", "x") and seq the sequence in base 36. At most 33
characters, always matching Binance's `^[\\.A-Z\\:/a-z0-9_-]{1,36}$`.

The layout is injective given the two tags (fixed widths, purpose delimited), so two ids can only
collide if the run or symbol hashes do (40 and 30 bits). No secret goes into it, and the run id
is hashed so ids do not disclose it. Binance wants a client id unique among a symbol's open
orders; ids that never repeat within a run also let a timed-out create be resolved by querying
the id, never by resubmitting.
"""

from __future__ import annotations

import base64
import hashlib
import re

CLIENT_ORDER_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_PURPOSE_PATTERN = re.compile(r"^[a-z0-9]{1,4}$")
_MAX_SEQUENCE = 2**64 - 1
_DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _tag(text: str, width: int) -> str:
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    return base64.b32encode(digest).decode().lower()[:width]


def run_tag(run_id: str) -> str:
    """The 8-character prefix every client order id of a run starts with (for reconciliation)."""
    return _tag(run_id, 8)


def _base36(value: int) -> str:
    digits = []
    while True:
        value, digit = divmod(value, 36)
        digits.append(_DIGITS36[digit])
        if value == 0:
            return "".join(reversed(digits))


def client_order_id(run_id: str, symbol: str, sequence: int, purpose: str = "e") -> str:
    """Deterministic client order id, unique per (run, symbol, sequence, purpose); see module doc.

    >>> first = client_order_id("run-1", "BTCUSDT", 35, "sl")
    >>> first == client_order_id("run-1", "BTCUSDT", 35, "sl") and len(first) <= 36
    True
    >>> len(client_order_id("run-1", "BTCUSDT", 2**64 - 1, "tp12")) <= 36
    True
    """
    if not run_id or not symbol:
        raise ValueError("client_order_id: run_id and symbol must not be empty")
    if not _PURPOSE_PATTERN.match(purpose):
        raise ValueError(f"client_order_id: purpose {purpose!r} must match [a-z0-9]{{1,4}}")
    if not isinstance(sequence, int) or not 0 <= sequence <= _MAX_SEQUENCE:
        raise ValueError(f"client_order_id: sequence {sequence!r} must be an int in [0, 2**64)")
    return f"{run_tag(run_id)}{_tag(symbol, 6)}-{purpose}-{_base36(sequence)}"


def is_run_client_order_id(value: str, run_id: str) -> bool:
    """True when `value` has the layout of `client_order_id` and belongs to `run_id`."""
    return bool(
        CLIENT_ORDER_ID_PATTERN.match(value)
        and re.match(r"^[a-z2-7]{14}-[a-z0-9]{1,4}-[0-9a-z]{1,13}$", value)
        and value.startswith(run_tag(run_id))
    )
