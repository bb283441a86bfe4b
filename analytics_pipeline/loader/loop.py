"""The long-lived load loop: long-poll SQS, load what arrives at once, repeat until a deadline.

A load starts within milliseconds of a batch becoming visible in SQS: the receive long-polls
(up to 20 s; SQS answers as soon as a message is there) and no process has to start. Dagster
runs it as one run of `events_loop_job` at a time (`defs/ingest/loop.py`), started by a sensor
and replaced when it ends or dies; the CLI and the tests run the same generator directly.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from analytics_pipeline.loader.batch_queue import BatchQueue
from analytics_pipeline.loader.load import Loader, LoadOutcome
from analytics_pipeline.loader.store import LoaderStore
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import Warehouse, open_warehouse

MAX_WAIT_SECONDS = 20  # SQS's longest long poll
FILL_SECONDS = 2.0  # after the first message, how long a receive may go on filling a load


class StoreMissingError(RuntimeError):
    """The warehouse holds loads the loader's store does not know: loading now could insert
    copies of events already loaded, so the loader refuses until the store is rebuilt."""


@contextlib.contextmanager
def open_loader(
    settings: Settings,
    *,
    warehouse: Warehouse | None = None,
    queue: BatchQueue | None = None,
    wait_seconds: float = 0.0,
) -> Iterator[Loader]:
    """A loader for the configured queue and warehouse, holding the queue's store (waiting up
    to `wait_seconds` for another loader to let go), with every interrupted load recovered."""
    with LoaderStore.open(
        settings.loader_store_dir,
        retention_days=settings.loader_retention_days,
        wait_seconds=wait_seconds,
    ) as store:
        warehouse = warehouse or open_warehouse(settings)
        warehouse.ensure_schema()
        if store.is_empty() and not store.pending() and warehouse.last_loads(1).rows:
            raise StoreMissingError(
                f"the loader store {store.path} is empty but the warehouse has loads: loading "
                "now could insert events twice. Restore the store from its snapshot, or run "
                "`analytics-pipeline loader rebuild` (it reads the keys back from the warehouse)"
            )
        loader = Loader(queue or BatchQueue.for_settings(settings), warehouse, store)
        loader.recover()
        yield loader


def run_loop(
    loader: Loader,
    settings: Settings,
    *,
    seconds: float,
    stop: threading.Event | None = None,
) -> Iterator[LoadOutcome]:
    """Load what arrives for `seconds` (or until `stop`); one outcome per load, after those of
    loads committed but never reported (`LoadOutcome.recovered`).

    On BigQuery every load creates a write stream per table it writes, and a project may create
    only so many an hour (CreateWriteStream quota): loads are spaced so that the streams stay
    within `ANALYTICS_BIGQUERY_STREAMS_PER_HOUR`. What arrives meanwhile waits in SQS and
    makes the next load bigger (with the default, a load that writes four tables starts the
    next 1.8 s after its own start at the earliest; DuckDB creates none and never waits).
    """
    deadline = time.monotonic() + seconds
    stop = stop or threading.Event()
    seconds_per_stream = 3600 / settings.bigquery_streams_per_hour
    next_load = time.monotonic()
    # Loads committed but not reported come first: those of a loader that stopped (or failed
    # transiently: an op retry calls this again) after a commit and before its report. A load
    # counts as reported once its consumer asks for the next outcome (Dagster has stored its
    # events by then): a crash in between reports it again, never not at all.
    for recovered in loader.unreported():
        yield recovered
        loader.reported(recovered)
    while not stop.is_set():
        if stop.wait(max(0.0, next_load - time.monotonic())):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        messages = loader.queue.receive(
            max_messages=settings.load_max_messages,
            visibility_timeout=settings.sqs_visibility_seconds,
            time_budget_seconds=FILL_SECONDS,
            first_wait_seconds=int(min(MAX_WAIT_SECONDS, max(remaining, 0))),
        )
        if messages:
            started = time.monotonic()
            outcome = loader.load(messages)
            next_load = started + outcome.write_streams * seconds_per_stream
            yield outcome
            loader.reported(outcome)
