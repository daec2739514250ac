"""Which parser and which capture reader serve a venue or a file.

`make_parser(venue)` builds the frame parser of a venue: "binance" and "binance-usdm" (one
Binance parser reads spot and USD-M frames), "coinbase", "okx" and "kraken". Every parser has
the same interface (`FrameParser`): `parse_lines(chunk, source_name=None)` and
`parse_frames(frames, ts_recv, source)`, both returning `(chunks, dead_letters)`.

`capture_reader(path)` picks the reader of a raw capture by its first non-blank line:
`<receive time ns> <frame>` is the project's own capture (`dataflows.capture.read_capture`);
`<unix seconds>: <frame>` or `<url> <-|->|<-> <unix seconds>...` is a cryptofeed capture
(`dataflows.cryptofeed_capture.read_cryptofeed_capture`). `cryptofeed_venue(path)` tells the
venue of a cryptofeed capture from its file name ("COINBASE.ws.28.0" -> "coinbase").
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from dataflows.binance import BinanceParser
from dataflows.capture import CaptureChunk, read_capture
from dataflows.coinbase import CoinbaseParser
from dataflows.cryptofeed_capture import read_cryptofeed_capture
from dataflows.kraken import KrakenParser
from dataflows.okx import OkxParser
from engine.batches import DeadLetter, MarketChunk

CaptureReader = Callable[[str | Path, int], Iterator[tuple[CaptureChunk, list[DeadLetter]]]]


class ParsedLines(Protocol):
    """What a parser returns: `chunks` (one MarketChunk per symbol) and orphan `dead_letters`."""

    @property
    def chunks(self) -> list[MarketChunk]: ...

    @property
    def dead_letters(self) -> list[DeadLetter]: ...


class FrameParser(Protocol):
    """The interface every venue parser offers."""

    def parse_lines(self, lines: CaptureChunk, source_name: str | None = None) -> ParsedLines: ...

    def parse_frames(
        self, frames: list[bytes], ts_recv: list[int], source: str = "live"
    ) -> ParsedLines: ...


_PARSERS: dict[str, Callable[[str | None], FrameParser]] = {
    "binance": BinanceParser,
    "binance-usdm": BinanceParser,
    "coinbase": CoinbaseParser,
    "okx": OkxParser,
    "kraken": KrakenParser,
}
VENUES: tuple[str, ...] = tuple(_PARSERS)
_CRYPTOFEED_NAMES = {
    "BINANCE": "binance",
    "BINANCE_FUTURES": "binance-usdm",
    "COINBASE": "coinbase",
    "OKX": "okx",
    "KRAKEN": "kraken",
}
_OWN_LINE = re.compile(rb"\d{1,19} ")
_CRYPTOFEED_LINE = re.compile(rb"(\S+ (<-|->|<->) )?\d{1,11}(\.\d+)?(: |$)")
_SNIFF_LINES = 50


def make_parser(venue: str, symbol_hint: str | None = None) -> FrameParser:
    """A new parser for `venue` (one of `VENUES`); ValueError naming the allowed venues."""
    factory = _PARSERS.get(venue.lower())
    if factory is None:
        raise ValueError(f"unknown venue {venue!r}; allowed venues: {', '.join(VENUES)}")
    return factory(symbol_hint)


def cryptofeed_venue(path: str | Path) -> str | None:
    """The venue of a cryptofeed capture named like "COINBASE.ws.28.0", or None.

    >>> cryptofeed_venue("data/multi-venue/BINANCE_FUTURES.http.0.0")
    'binance-usdm'
    >>> cryptofeed_venue("BTCUSDT.gz") is None
    True
    """
    return _CRYPTOFEED_NAMES.get(Path(path).name.split(".")[0].upper())


def capture_reader(path: str | Path) -> CaptureReader:
    """`read_capture` or `read_cryptofeed_capture`, by the first non-blank line of `path`.

    ValueError naming the file and the line when neither shape fits (or the file is empty).
    """
    path = Path(path)
    with open(path, "rb") as probe:
        magic = probe.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                if number >= _SNIFF_LINES:
                    break
                continue
            if _OWN_LINE.match(line):
                return read_capture
            if _CRYPTOFEED_LINE.match(line):
                return read_cryptofeed_capture
            raise ValueError(
                f"{path} line {number}: neither '<receive time ns> <frame>' nor a cryptofeed "
                f"line ('<unix time>: <frame>', '<url> <-> <unix time>'): {line[:60]!r}"
            )
    raise ValueError(f"{path}: no non-blank line in its first {_SNIFF_LINES} lines")


def venue_of(path: str | Path, venue: str | None = None) -> str:
    """The venue to parse `path` with: `venue` if given, else a cryptofeed file's own venue,
    else Binance (the project's own captures)."""
    if venue is not None:
        make_parser(venue)  # ValueError naming the allowed venues
        return venue.lower()
    return cryptofeed_venue(path) or "binance"


def parse_captures(
    paths: list[Path], venue: str | None = None, symbol_hint: str | None = None,
    chunk_lines: int = 20_000,
) -> Iterator[tuple[list[MarketChunk], list[DeadLetter]]]:
    """Read and parse capture files in order as one stream per venue: (chunks, dead letters of
    the reader and of lines no symbol claims) per chunk of lines. The files share one parser
    (the stream's state carries over, as in `dataflows.binance.parse_capture`); they must all
    be of one venue."""
    venues = {venue_of(path, venue) for path in paths}
    if len(venues) > 1:
        raise ValueError(f"captures of several venues ({', '.join(sorted(venues))}) cannot be "
                         "one stream: symbols are named alike across venues; replay them apart")
    parser = make_parser(venues.pop(), symbol_hint) if paths else None
    for path in paths:
        assert parser is not None
        for lines, read_letters in capture_reader(path)(path, chunk_lines):
            parsed = parser.parse_lines(lines, source_name=path.name)
            yield parsed.chunks, read_letters + parsed.dead_letters
