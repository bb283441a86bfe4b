"""A load into BigQuery that dies between the commit and the SQS delete, for real.

A loader process receives the batches, loads them into the emulator through the real path
(Storage Write API + transaction) and is killed by `os._exit` the moment the first commit has
returned, before it can delete anything from SQS. The messages come back after their
visibility timeout, a later run loads them again, and every messageId is in `events` once.
Then a client resends some messageIds in a new blob: they are skipped, the new ones loaded.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable

import pytest

from analytics_pipeline import aws
from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.loader import BatchQueue, load_refs
from analytics_pipeline.local.stack import child_env
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import LoadResult, Warehouse, open_warehouse
from analytics_pipeline_testkit.environments import BigQueryEndpoint
from analytics_pipeline_testkit.processes import wait_for
from analytics_pipeline_testkit.traffic import blob, put_mixed_traffic, track_event

pytestmark = pytest.mark.e2e

CRASH_EXIT_CODE = 75
VISIBILITY_SECONDS = 4

# The loader of a Dagster run, minus Dagster: receive, stage, load_refs. Its warehouse dies
# right after the first load_batches call that committed rows, i.e. before any SQS delete.
CRASHING_LOADER = textwrap.dedent(
    f"""
    import os
    from analytics_pipeline import aws
    from analytics_pipeline.loader import BatchQueue, load_refs
    from analytics_pipeline.settings import Settings
    from analytics_pipeline.warehouse import open_warehouse

    settings = Settings.from_env()
    queue = BatchQueue.connect(
        aws.client("sqs", settings), aws.client("s3", settings), settings.queue_name,
        settings.bucket,
    )
    refs = [queue.stage(m) for m in queue.receive(max_messages=100,
                                                  visibility_timeout={VISIBILITY_SECONDS})]
    warehouse = open_warehouse(settings)

    class DiesAfterCommit:
        def __getattr__(self, name):
            return getattr(warehouse, name)

        def load_batches(self, batches, dedupe_window_days):
            result = warehouse.load_batches(batches, dedupe_window_days)
            if result.rows_inserted:
                print("committed", result.rows_inserted, "rows; dying", flush=True)
                os._exit({CRASH_EXIT_CODE})
            return result

    load_refs(queue, DiesAfterCommit(), refs, settings.dedupe_window_days)
    print("finished without committing anything", flush=True)
    """
)


@pytest.fixture
def bigquery_pipeline(
    new_pipeline: Callable[..., Settings], bigquery_endpoint: BigQueryEndpoint
) -> Settings:
    return new_pipeline(**bigquery_endpoint.settings_env(f"crash_{uuid.uuid4().hex[:10]}"))


def _message_counts(warehouse: Warehouse) -> dict[str, int]:
    rows = warehouse.query("SELECT message_id, count(*) FROM events GROUP BY message_id").rows
    return dict(rows)


def _load_what_comes_back(settings: Settings, warehouse: Warehouse) -> dict[BatchKind, LoadResult]:
    queue = BatchQueue.for_settings(settings)
    wait_for(lambda: queue.depth()["visible"] > 0, timeout=60, interval=0.5, what="redelivery")
    refs = [queue.stage(m) for m in queue.receive(max_messages=100, visibility_timeout=120)]
    return load_refs(queue, warehouse, refs, settings.dedupe_window_days)


def test_a_load_killed_after_the_bigquery_commit_loads_each_message_once(
    bigquery_pipeline: Settings,
) -> None:
    settings = bigquery_pipeline
    traffic = put_mixed_traffic(settings, blobs=9)
    KinesisTrigger(settings).run_until_idle(timeout=60)
    queue = BatchQueue.for_settings(settings)
    messages = queue.depth()["visible"]
    assert messages > 0

    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_LOADER],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stdout + crashed.stderr
    warehouse = open_warehouse(settings)
    committed = warehouse.table_row_counts()
    assert committed["loaded_batches"] > 0
    # Nothing was deleted: every message is still in the queue, in flight or back already.
    assert sum(queue.depth().values()) == messages

    results: dict[BatchKind, LoadResult] = {}
    while sum(queue.depth().values()):
        for kind, result in _load_what_comes_back(settings, warehouse).items():
            results.setdefault(kind, result)

    counts = _message_counts(warehouse)
    assert set(counts) == set(traffic.valid) and set(counts.values()) == {1}
    quarantine = warehouse.table_row_counts()["events_quarantine"]
    assert quarantine == len(traffic.invalid) + traffic.garbage_blobs
    # The batches the dead run committed were recognised by the ledger, not loaded again.
    assert sum(result.batches_already_loaded for result in results.values()) > 0

    # Days later (for the client) some of these messageIds are resent beside new ones.
    resent, new = traffic.valid[:3], [track_event() for _ in range(2)]
    events = [track_event(message_id) for message_id in resent] + new
    aws.client("kinesis", settings).put_record(
        StreamName=settings.stream_name, Data=blob(events, gzipped=True), PartitionKey="resend"
    )
    KinesisTrigger(settings).run_until_idle(timeout=60)
    refs = [queue.stage(m) for m in queue.receive(max_messages=100, visibility_timeout=120)]
    resend_results = load_refs(queue, warehouse, refs, settings.dedupe_window_days)

    assert resend_results[BatchKind.EVENTS].rows_inserted == len(new)
    assert resend_results[BatchKind.EVENTS].duplicates_skipped == len(resent)
    counts = _message_counts(warehouse)
    assert len(counts) == len(traffic.valid) + len(new) and set(counts.values()) == {1}
    assert sum(queue.depth().values()) == 0
