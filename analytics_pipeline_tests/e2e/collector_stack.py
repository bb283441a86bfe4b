"""The pipeline behind the collector, without Dagster: collector -> Kinesis -> trigger -> SQS ->
loader -> DuckDB.

Real processes where production has processes: the collector (`analytics-pipeline collector`,
uvicorn) and the Kinesis trigger poller running the real Lambda handler, both against the
session's emulator over HTTP. The loader is the code the load loop runs (`open_loader`, its
store, into `DuckDBWarehouse`), run here in the test process: `dagster dev` adds ~10 s and
700 MB per module and nothing this path needs (its sensor and runs have tests of their own).
The collector may reach AWS through a fault proxy; the trigger and the loader never do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.loader.loop import open_loader
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import CollectorServer, start_trigger
from analytics_pipeline_tests.test_collector.helpers import WRITE_KEYS_SETTING

EVENT_COLUMNS = (
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "properties",
    "context",
    "traits",
)


@dataclass
class CollectorStack:
    direct: Settings  # the emulator itself: trigger, loader, the test's own reads
    collector: CollectorServer
    trigger: ChildProcess
    queue: BatchQueue
    warehouse: DuckDBWarehouse

    @classmethod
    def start(
        cls, aws_endpoint: str, base_dir: Path, collector_aws_endpoint: str
    ) -> CollectorStack:
        env = unique_settings_env(
            aws_endpoint,
            base_dir,
            ANALYTICS_WRITE_KEYS=WRITE_KEYS_SETTING,
            ANALYTICS_TRIGGER_POLL_SECONDS="0.1",
        )
        direct = Settings.from_env(env)
        direct.state_dir.mkdir(parents=True, exist_ok=True)
        ensure_resources(direct)
        collector = CollectorServer(
            Settings.from_env({**env, "AWS_ENDPOINT_URL": collector_aws_endpoint}),
            base_dir / "collector.log",
        )
        trigger = start_trigger(direct)
        queue = BatchQueue.for_settings(direct)
        stack = cls(direct, collector, trigger, queue, DuckDBWarehouse(direct.duckdb_path))
        try:
            collector.wait_ready()
        except BaseException:
            stack.stop()
            raise
        return stack

    @property
    def url(self) -> str:
        return self.collector.url

    def stop(self) -> None:
        self.collector.stop()
        self.trigger.stop()

    def load_once(self) -> int:
        """One turn of the load loop: receive, load exactly once, delete. Messages loaded."""
        messages = self.queue.receive(max_messages=100, visibility_timeout=60)
        if messages:
            with open_loader(self.direct, warehouse=self.warehouse, queue=self.queue) as loader:
                loader.load(messages)
        return len(messages)

    def message_counts(self, message_ids: set[str]) -> dict[str, int]:
        if not self.direct.duckdb_path.exists():
            return {}
        rows = self.warehouse.query(
            "SELECT message_id, count(*) FROM analytics.events "
            "WHERE list_contains(?, message_id) GROUP BY message_id",
            [sorted(message_ids)],
        ).rows
        return dict(rows)

    def delivered(self, message_ids: set[str]) -> bool:
        """Load what waits; True once every id is in `events`."""
        self.load_once()
        return set(self.message_counts(message_ids)) >= message_ids

    def wait_delivered(self, message_ids: set[str], timeout: float = 90.0) -> dict[str, int]:
        """Load until every id is in `events`, then until the queue stays empty (so a late copy
        from a retry has been loaded too, or skipped); the count of each id."""
        deadline = time.monotonic() + timeout
        while not self.delivered(message_ids):
            if not (self.trigger.alive() and self.collector.alive()):
                raise AssertionError(
                    f"a process died:\n{self.trigger.tail()}\n{self.collector.tail()}"
                )
            if time.monotonic() > deadline:
                missing = message_ids - set(self.message_counts(message_ids))
                raise AssertionError(f"{len(missing)} events never arrived: {sorted(missing)[:5]}")
            time.sleep(0.2)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.5:  # the trigger polls every 0.1 s
            if self.load_once():
                quiet_since = time.monotonic()
            time.sleep(0.2)
        return self.message_counts(message_ids)

    def rows(self, message_ids: set[str]) -> dict[str, dict[str, Any]]:
        result = self.warehouse.query(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM analytics.events "
            "WHERE list_contains(?, message_id)",
            [sorted(message_ids)],
        )
        return {row[0]: dict(zip(result.columns, row, strict=True)) for row in result.rows}
