"""What the order flow's parts share: the queued intent, and the state and helpers that
`engine.order_flow.OrderFlow` provides to its limit-entry and live-venue halves
(`engine.flow_limit_entries`, `engine.flow_venue`), declared here for the type checker."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.position_tracker import OrderContext
from engine.types import OrderIntent

if TYPE_CHECKING:
    from engine.limit_entries import LimitEntries
    from engine.matching import PaperMatcher
    from engine.position_tracker import PositionTracker
    from engine.signal_rows import SignalLedger
    from engine.types import Fill, PortfolioUpdate
    from engine.venue_orders import VenueOrders


@dataclass(frozen=True)
class QueuedIntent:
    intent: OrderIntent
    context: OrderContext


class FlowState:
    """The order flow's shared state (module docs); holds nothing itself."""

    if TYPE_CHECKING:
        symbol: str
        matcher: PaperMatcher
        tracker: PositionTracker
        signals: SignalLedger
        limit_entries: LimitEntries | None
        venue: VenueOrders | None
        updates: list[PortfolioUpdate]
        journal: dict[str, list[dict[str, Any]]]
        counters: Counter[str]
        _contexts: dict[str, OrderContext]

        def next_sequence(self) -> int: ...

        def settle_funding(self, until: int) -> None: ...

        def _apply_fill(self, fill: Fill, context: OrderContext) -> None: ...

        def _resolve_signal_of(self, order_id: str, note: str) -> None: ...

        def journal_signal(self, row: dict[str, Any] | None) -> None: ...

        def dead_letter(self, stage: str, reason: str, detail: str, source: str,
                        ts_event: int, payload: str = "") -> None: ...
