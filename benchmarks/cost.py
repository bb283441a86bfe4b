"""Bytes per event on each hop of the benchmark workload, and the cost table of the product's
model (`analytics_pipeline.cost`, the `analytics-pipeline cost` command) at four volumes.

The bytes are measured here on the shared workload (bigger and more varied than the model's
built-in sample, which it measures for itself); the dollars come from the model with this run's
measured handler speed, so every figure can be reproduced with the command shown next to it.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from analytics_pipeline.contract.batches import decode_event_rows, decompress
from analytics_pipeline.cost import Estimate, estimate_for_settings
from analytics_pipeline.cost.sizes import logical_bytes
from analytics_pipeline.ingest.packing import sqs_message_bytes
from analytics_pipeline.loader.plan import plan_load
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import StagedBatch
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline.warehouse.tables import EVENT_TABLE_COLUMNS
from benchmarks.handler_bench import run_handler
from benchmarks.workload import Workload, invocations_of_about, lambda_events

VOLUMES = (1_000_000, 100_000_000, 1_000_000_000, 10_000_000_000)
WAREHOUSE = "bigquery"


@dataclass
class CostFigures:
    bytes_per_event: dict[str, float] = field(default_factory=dict)
    estimates: list[Estimate] = field(default_factory=list)  # one per VOLUMES, on WAREHOUSE
    assume: list[str] = field(default_factory=list)  # the `--assume` the estimates used

    def command(self, events_per_month: int | str, output_format: str = "table") -> str:
        words = ["analytics-pipeline", "cost", "--events-per-month", str(events_per_month)]
        words += ["--warehouse", WAREHOUSE, "--format", output_format]
        for text in self.assume:
            words += ["--assume", text]
        return shlex.join(words)


def duckdb_bytes(batches: list[StagedBatch]) -> int:
    """The DuckDB file after the product's own load of every batch (plan, then commit)."""
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as folder:
        warehouse = DuckDBWarehouse(Path(folder) / "w.duckdb")
        warehouse.ensure_schema()
        plan = plan_load(batches, known=lambda keys: set(), loaded_batches=lambda ids: set())
        warehouse.commit(plan, warehouse.prepare(plan))
        return (Path(folder) / "w.duckdb").stat().st_size


def measure_cost(
    workload: Workload, handler_events_per_second: float, events_per_invocation: int
) -> CostFigures:
    """Bytes on each hop of the workload, as the handler packs invocations of about
    `events_per_invocation` events; the bill from the model at each of VOLUMES."""
    events = workload.events
    captured = [
        run_handler(lambda_events(group))
        for group in invocations_of_about(workload, events_per_invocation)
    ]
    messages = [message for output in captured for message in output.messages]
    batches = [
        StagedBatch(header.batch_id, header.kind, header.day, header.row_count, body)
        for output in captured
        for header, body in output.batches()
    ]
    ndjson = b"".join(decompress(batch.ndjson_gz) for batch in batches)
    rows = decode_event_rows(ndjson)
    message_bytes = sum(
        sqs_message_bytes(message["MessageBody"], message["MessageAttributes"])
        for message in messages
    )
    bigquery = sum(logical_bytes(row, EVENT_TABLE_COLUMNS) for row in rows)
    figures = CostFigures(
        bytes_per_event={
            "client blob (gzip JSON) = Kinesis record": sum(map(len, workload.blobs)) / events,
            "SQS message (base64 gzip NDJSON + attributes)": message_bytes / len(rows),
            "batch NDJSON, uncompressed (context merged into each row)": len(ndjson) / len(rows),
            "DuckDB file": duckdb_bytes(batches) / len(rows),
            "BigQuery logical (active storage, Write API ingest)": bigquery / len(rows),
        },
        assume=[f"handler_events_per_second={handler_events_per_second:.0f}"],
    )
    settings = Settings.from_env()
    figures.estimates = [
        estimate_for_settings(settings, volume, WAREHOUSE, figures.assume) for volume in VOLUMES
    ]
    return figures
