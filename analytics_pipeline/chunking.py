"""The one way to cut a sequence into calls under a vendor's limits (count and total size)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def chunked(
    items: Iterable[T],
    max_items: int | None = None,
    max_weight: int | None = None,
    weight: Callable[[T], int] | None = None,
) -> Iterator[list[T]]:
    """Consecutive groups of at most `max_items` items whose `weight`s sum to at most
    `max_weight`; an item heavier than `max_weight` on its own still gets a group of its own
    (the vendor, not this function, decides whether it is too big)."""
    chunk: list[T] = []
    total = 0
    for item in items:
        size = weight(item) if weight is not None else 0
        if chunk and (
            (max_items is not None and len(chunk) >= max_items)
            or (max_weight is not None and total + size > max_weight)
        ):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += size
    if chunk:
        yield chunk
