"""The loader over a warehouse without SQS: batches in hand, a store of its own (tests)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.loader.load import Loader, LoadOutcome
from analytics_pipeline.loader.store import LoaderStore
from analytics_pipeline.warehouse.base import LoadResult, StagedBatch, Warehouse

RETENTION_DAYS = 31


class BatchLoader:
    """`load(batches)`: what a loop does with what it received, minus SQS."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.warehouse = loader.warehouse
        self.store = loader.store

    def load_all(self, batches: Sequence[StagedBatch]) -> LoadOutcome:
        return self.loader.load_batches(batches)

    def load(self, batches: Sequence[StagedBatch]) -> LoadResult:
        """The result of a load of batches of one kind."""
        kinds = {BatchKind(batch.kind) for batch in batches}
        assert len(kinds) <= 1, "load() takes batches of one kind; load_all() any"
        outcome = self.load_all(batches)
        return outcome.result(kinds.pop()) if kinds else LoadResult()


@contextmanager
def batch_loader(warehouse: Warehouse, store_dir: Path) -> Iterator[BatchLoader]:
    warehouse.ensure_schema()
    with LoaderStore.open(store_dir, retention_days=RETENTION_DAYS) as store:
        yield BatchLoader(Loader(None, warehouse, store))


def load_once(warehouse: Warehouse, batches: Sequence[StagedBatch], store_dir: Path) -> LoadResult:
    """One load of batches of one kind through a store at `store_dir` (kept between calls)."""
    with batch_loader(warehouse, store_dir) as loader:
        return loader.load(batches)
