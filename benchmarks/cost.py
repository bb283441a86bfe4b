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
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import StagedBatch
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline.warehouse.tables import EVENT_TABLE_COLUMNS
from benchmarks.loader_bench import LoadInput
from benchmarks.workload import Workload

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


def duckdb_bytes(data: LoadInput) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as folder:
        warehouse = DuckDBWarehouse(Path(folder) / "w.duckdb")
        staged = [
            StagedBatch(r.batch_id, r.kind, r.day, r.row_count, data.bodies[r.key])  # type: ignore[arg-type]
            for r in data.all_refs()
        ]
        warehouse.load_batches(staged, 7)
        return (Path(folder) / "w.duckdb").stat().st_size


def measure_cost(
    workload: Workload, data: LoadInput, handler_events_per_second: float
) -> CostFigures:
    events = workload.events
    refs = data.all_refs()
    ndjson = b"".join(decompress(data.bodies[r.key]) for r in refs)
    loaded = data.events
    # As sent: base64 of the gzip body plus ~230 bytes of message attributes.
    message_bytes = sum(len(data.bodies[r.key]) * 4 / 3 + 230 for r in refs)
    bigquery = sum(logical_bytes(row, EVENT_TABLE_COLUMNS) for row in decode_event_rows(ndjson))
    figures = CostFigures(
        bytes_per_event={
            "client blob (gzip JSON) = Kinesis record": sum(map(len, workload.blobs)) / events,
            "SQS message (base64 gzip NDJSON + attributes)": message_bytes / loaded,
            "batch NDJSON, uncompressed (context merged into each row)": len(ndjson) / loaded,
            "DuckDB file": duckdb_bytes(data) / loaded,
            "BigQuery logical (active storage, Write API ingest)": bigquery / loaded,
        },
        assume=[f"handler_events_per_second={handler_events_per_second:.0f}"],
    )
    settings = Settings.from_env()
    figures.estimates = [
        estimate_for_settings(settings, volume, WAREHOUSE, figures.assume) for volume in VOLUMES
    ]
    return figures
