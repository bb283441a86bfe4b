"""Loader throughput: SQS batch bodies into DuckDB `events`, next to read_json and dlt.

All three load the events the handler produced from the shared workload, in runs the size one
Dagster run carries (events per second x sensor interval), each into its own fresh DuckDB file:

- ours: `loader.load_refs` (the real run path: ledger lookup, fetch, base64/gzip bodies,
  in-load and against-table messageId dedupe, ledger rows, one transaction per run, delete);
- ceiling: `INSERT INTO events SELECT ... FROM read_json(<the run's plain NDJSON>)`, one
  connection per run, no dedupe and no gunzip;
- dlt 1.31: `pipeline.run(<the run's events as dicts>, table_name="events")` into DuckDB, its
  default configuration and `loader_file_format="parquet"` (its fastest for dict input).

Each also runs once with every event in a single call (a drained backlog).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from analytics_pipeline.contract.batches import BatchHeader, BatchKind, decompress
from analytics_pipeline.loader import BatchRef, load_refs
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline.warehouse.tables import EVENT_TABLE_COLUMNS, EVENTS_TABLE, SCHEMA
from benchmarks.handler_bench import run_handler
from benchmarks.workload import Workload, invocations_of_about, lambda_events

DEDUPE_WINDOW_DAYS = 7


@dataclass
class InMemoryBatchQueue:
    """The two calls `load_refs` makes on a queue, over batch bodies held in memory."""

    bodies: dict[str, bytes]
    deleted: int = 0

    def fetch(self, ref: BatchRef) -> bytes:
        return self.bodies[ref.key]

    def delete(self, refs: Sequence[BatchRef]) -> int:
        self.deleted += len(refs)
        return len(refs)


@dataclass(frozen=True)
class LoadInput:
    """Event batches as the sensor hands them to runs, grouped into runs."""

    runs: list[list[BatchRef]]
    bodies: dict[str, bytes]  # gzip NDJSON by ref key

    @property
    def events(self) -> int:
        return sum(ref.row_count for run in self.runs for ref in run)

    def ndjson(self, run: Sequence[BatchRef]) -> bytes:
        return b"".join(decompress(self.bodies[ref.key]) for ref in run)

    def all_refs(self) -> list[BatchRef]:
        return [ref for run in self.runs for ref in run]


def load_input(workload: Workload, events_per_batch: int, events_per_run: int) -> LoadInput:
    """Run the handler with invocations of about `events_per_batch` events (one SQS batch each,
    as the trigger makes them at the benchmark rates), then group batches into runs."""
    bodies: dict[str, bytes] = {}
    refs: list[BatchRef] = []
    for group in invocations_of_about(workload, events_per_batch):
        for header, body in run_handler(lambda_events(group)).batches():
            refs.append(_ref(header, len(refs)))
            bodies[refs[-1].key] = body
    runs: list[list[BatchRef]] = [[]]
    for ref in refs:
        if runs[-1] and sum(r.row_count for r in runs[-1]) + ref.row_count > events_per_run:
            runs.append([])
        runs[-1].append(ref)
    return LoadInput(runs, bodies)


def _ref(header: BatchHeader, index: int) -> BatchRef:
    if header.kind is not BatchKind.EVENTS:
        raise RuntimeError("the workload holds only valid events")
    return BatchRef(
        sqs_message_id=f"m-{index}",
        receipt_handle=f"r-{index}",
        receive_count=1,
        batch_id=header.batch_id,
        kind=header.kind.value,
        day=header.day,
        row_count=header.row_count,
        bucket="in-memory",
        key=f"staging/{header.batch_id}",
        staged=True,
    )


@dataclass
class LoaderFigures:
    events_per_run: int
    runs: int
    events: int
    dlt_events: int
    per_run: dict[str, float] = field(default_factory=dict)  # events/s by loader
    single_call: dict[str, float] = field(default_factory=dict)

    def ratio(self, table: dict[str, float], other: str) -> float:
        return table["ours"] / table[other]

    def dlt_fastest(self, table: dict[str, float]) -> str:
        return max((k for k in table if k.startswith("dlt")), key=table.__getitem__)


def ours(folder: Path, data: LoadInput, runs: list[list[BatchRef]]) -> float:
    warehouse = DuckDBWarehouse(folder / "ours.duckdb")
    warehouse.ensure_schema()
    queue = InMemoryBatchQueue(data.bodies)
    started = time.perf_counter()
    for run in runs:
        result = load_refs(queue, warehouse, run, DEDUPE_WINDOW_DAYS)[BatchKind.EVENTS]  # type: ignore[arg-type]
        if not result.reconciles or result.rows_inserted != result.rows_declared:
            raise RuntimeError(f"loader lost or duplicated rows: {result}")
    return time.perf_counter() - started


def ceiling(folder: Path, data: LoadInput, runs: list[list[BatchRef]]) -> float:
    DuckDBWarehouse(folder / "ceiling.duckdb").ensure_schema()  # the same table
    files = []
    for index, run in enumerate(runs):
        files.append(folder / f"run-{index}.ndjson")
        files[-1].write_bytes(data.ndjson(run))
    wire = {c.name: c.sql_type for c in EVENT_TABLE_COLUMNS if c.name != "loaded_at"}
    started = time.perf_counter()
    for file in files:
        connection = duckdb.connect(str(folder / "ceiling.duckdb"))
        connection.execute(
            f"INSERT INTO {SCHEMA}.{EVENTS_TABLE} SELECT *, now() FROM "
            "read_json(?, format = 'newline_delimited', columns = ?)",
            [str(file), wire],
        )
        connection.close()
    return time.perf_counter() - started


def dlt_loader(file_format: str | None) -> Callable[[Path, LoadInput, list[list[BatchRef]]], float]:
    def load(folder: Path, data: LoadInput, runs: list[list[BatchRef]]) -> float:
        os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
        os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")  # not a warning per untyped column
        import dlt

        name = f"dlt_{file_format or 'default'}"
        pipeline = dlt.pipeline(
            pipeline_name=name,
            pipelines_dir=str(folder / "dlt-pipelines"),
            destination=dlt.destinations.duckdb(str(folder / f"{name}.duckdb")),
            dataset_name=SCHEMA,
        )
        options: dict[str, Any] = {"table_name": EVENTS_TABLE}
        if file_format:
            options["loader_file_format"] = file_format
        decoder = msgspec.json.Decoder()
        chunks = [decoder.decode_lines(data.ndjson(run)) for run in runs]
        started = time.perf_counter()
        for chunk in chunks:
            pipeline.run(chunk, **options).raise_on_failed_jobs()
        return time.perf_counter() - started

    return load


LOADERS: dict[str, Callable[[Path, LoadInput, list[list[BatchRef]]], float]] = {
    "ours": ours,
    "read_json": ceiling,
    "dlt_default": dlt_loader(None),
    "dlt_parquet": dlt_loader("parquet"),
}


def measure_loaders(data: LoadInput, dlt_events: int, rounds: int = 1) -> LoaderFigures:
    """Events/s per loader, per run and in one call (dlt: only the first `dlt_events`)."""
    dlt_runs: list[list[BatchRef]] = []
    dlt_total = 0
    for run in data.runs:
        size = sum(r.row_count for r in run)
        if dlt_runs and dlt_total + size > dlt_events:
            break
        dlt_runs.append(run)
        dlt_total += size
    figures = LoaderFigures(
        events_per_run=max(sum(r.row_count for r in run) for run in data.runs),
        runs=len(data.runs),
        events=data.events,
        dlt_events=sum(r.row_count for run in dlt_runs for r in run),
    )
    single = [data.all_refs()]
    dlt_single = [[ref for run in dlt_runs for ref in run]]
    for _ in range(rounds):  # best of `rounds`, interleaved
        for name, loader in LOADERS.items():
            is_dlt = name.startswith("dlt")
            for table, runs in (
                (figures.per_run, dlt_runs if is_dlt else data.runs),
                (figures.single_call, dlt_single if is_dlt else single),
            ):
                events = sum(r.row_count for run in runs for r in run)
                with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
                    rate = events / loader(Path(folder), data, runs)
                table[name] = max(table.get(name, 0.0), rate)
    return figures
