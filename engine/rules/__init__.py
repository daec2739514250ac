"""Portfolio risk rules, composed per trading plan by risk profiles (`configs/risk/`).

Importing this package registers every rule module with the profile loader: `core` (shared by
every plan), `control` (the operator's manual_control, run in every profile),
`execution_filters` (spread guard and volume cap, from the engine's market facts), and one or two
modules per trading plan: `intraday*` (momentum-breakout intraday), `composite*` (autonomous
composite), `scalper*` (order-flow scalper), `perps*` (perpetuals HFT), `dex_led` (DEX order
flow leading CEX entries).
"""

from engine.rules import (  # noqa: F401
    composite,
    composite_protocols,
    control,
    core,
    dex_led,
    execution_filters,
    intraday,
    intraday_correlation,
    intraday_sizing,
    perps,
    perps_sizing,
    scalper,
    scalper_sizing,
)

__all__: list[str] = []
