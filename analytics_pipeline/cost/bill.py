"""The bookkeeping of one estimate: its items in order, free tiers as negative items, the
quantities one vendor's items derive and another's reuse, and the number formats of the
arithmetic each item carries."""

from __future__ import annotations

from typing import Any

from analytics_pipeline.cost.prices import FREE_TIERS
from analytics_pipeline.cost.sizes import MeasuredSizes
from analytics_pipeline.cost.terms import Assumptions, Item, PipelineParameters


class Bill:
    """Items and derived figures; `model._Bill` adds the items in the order of the data's path.

    The SQS items set the load figures (`loads`, `fetches`, ...) the warehouse items use.
    """

    loads: float
    fetches: float
    messages_per_send: float
    events_per_load: float
    streams_per_load: float

    def __init__(
        self,
        events: int,
        pipeline: PipelineParameters,
        sizes: MeasuredSizes,
        assume: Assumptions,
    ) -> None:
        self.events, self.pipeline, self.sizes, self.assume = events, pipeline, sizes, assume
        self.items: list[Item] = []
        self.derived: dict[str, Any] = {}

    def add(self, item: str, usd: float, arithmetic: str, vendor: str) -> None:
        self.items.append(Item(item, usd, arithmetic, vendor))

    def free(
        self, item: str, tier: str, used: float, unit_usd: float, vendor: str, covers: int = 1
    ) -> None:
        """A free tier as its own negative item: min(used, free) units at `unit_usd` each, for
        the `covers` items just added."""
        if not self.assume.free_tiers:
            return
        free = FREE_TIERS[tier]
        usd = -min(used, free.usd) * unit_usd
        self.items.append(
            Item(
                item,
                usd,
                f"-min({qty(used)}, {qty(free.usd)} free) {free.per} x ${unit_usd:.4g} = "
                f"-${money(-usd)}",
                vendor,
                covers,
            )
        )


def any_of(count: float, share: float) -> float:
    """P(at least one of `count` independent draws has a property of this `share`)."""
    return 1 - (1 - share) ** count


def money(value: float) -> str:
    return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}"


def qty(value: float) -> str:
    """A count or size for people: thousands separators, 3 significant digits when small."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"
