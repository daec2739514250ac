"""A quick pre-scan of raw captures: which symbols they hold and how many lines.

The supervisor must know every symbol before the first risk decision (cross-symbol ordering), and
the progress bar wants a total. A byte-level regex over the stream names is enough for both.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

_STREAM = re.compile(rb'"stream":"([a-z0-9]+)@')
_SYMBOL = re.compile(rb'"s":"([A-Z0-9]+)"')


def scan_capture_symbols(path: Path) -> tuple[set[str], int]:
    """Symbols named by the frames of a capture file, and its line count."""
    opener = gzip.open if path.suffix == ".gz" else open
    symbols: set[bytes] = set()
    lines = 0
    with opener(path, "rb") as handle:
        for line in handle:
            lines += 1
            match = _STREAM.search(line, 0, 200) or _SYMBOL.search(line)
            if match:
                symbols.add(match.group(1))
    return {symbol.decode().upper() for symbol in symbols}, lines
