"""Importers of public market-data files into tapes.

- `binance_public`: Binance public-data CSVs (data.binance.vision): trades, aggTrades, klines, spot
  and futures layouts, with or without a header, plain, gzip or zip.
- `tardis`: Tardis (tardis.dev) CSV datasets: trades, incremental_book_L2, book_snapshot_N.
- `uniswap_v3`: Uniswap v3 pool logs (raw eth_getLogs rows or decoded rows) into a DEX tape
  (`storage.dex_tape`: swaps and liquidity events, not a CEX tape).

The CEX importers write a tape with `storage.tape.TapeWriter` (atomic: a failed import leaves
nothing at the target) block by block, never one Python object per row. Bad rows become dead
letters in the tape's `dead_letters.csv`; a file that cannot be read at all raises
`ImportFormatError`.
"""

from storage.importers.binance_public import import_binance_public
from storage.importers.csv_blocks import ImportFormatError
from storage.importers.session import DEAD_LETTER_FILE, ImportResult
from storage.importers.tardis import import_tardis

__all__ = [
    "DEAD_LETTER_FILE",
    "ImportFormatError",
    "ImportResult",
    "import_binance_public",
    "import_tardis",
]
