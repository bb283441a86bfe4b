"""Loader throughput: SQS batch bodies into DuckDB `events`, next to read_json and dlt.

All three load the events the handler produced from the shared workload, in loads the size the
load loop takes at once (what arrived while the previous load ran, up to
ANALYTICS_LOAD_MAX_MESSAGES messages), each into its own fresh DuckDB file:

- ours: `Loader.load_batches` (what the loop does with the bodies it received: plan against the
  loader's RocksDB store - ledger, first copies, key index, first-seen aggregate keys - then
  one DuckDB transaction of rows, aggregate deltas and ledger rows, then the store's record);
- ceiling: `INSERT INTO events SELECT ... FROM read_json(<the load's plain NDJSON>)`, one
  connection per load, no dedupe, no aggregates and no gunzip;
- dlt 1.31: `pipeline.run(<the load's events as dicts>, table_name="events")` into DuckDB, its
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

from analytics_pipeline.contract.batches import BatchKind, decompress
from analytics_pipeline.warehouse.base import StagedBatch
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline.warehouse.tables import EVENT_TABLE_COLUMNS, EVENTS_TABLE, SCHEMA
from analytics_pipeline_testkit.loading import batch_loader
from benchmarks.handler_bench import run_handler
from benchmarks.workload import Workload, invocations_of_about, lambda_events

Load = list[StagedBatch]  # the batches one load takes at once


@dataclass(frozen=True)
class LoadInput:
    """Event batches as the handler sent them to SQS, grouped into loads."""

    loads: list[Load]

    @property
    def events(self) -> int:
        return events_in(self.all_batches())

    def ndjson(self, load: Sequence[StagedBatch]) -> bytes:
        return b"".join(decompress(batch.ndjson_gz) for batch in load)

    def all_batches(self) -> list[StagedBatch]:
        return [batch for load in self.loads for batch in load]


def events_in(batches: Sequence[StagedBatch]) -> int:
    return sum(batch.row_count for batch in batches)


def load_input(workload: Workload, events_per_batch: int, events_per_load: int) -> LoadInput:
    """Run the handler with invocations of about `events_per_batch` events (one SQS batch each,
    as the trigger makes them at the benchmark rates), then group batches into loads."""
    batches: list[StagedBatch] = []
    for group in invocations_of_about(workload, events_per_batch):
        for header, body in run_handler(lambda_events(group)).batches():
            if header.kind is not BatchKind.EVENTS:
                raise RuntimeError("the workload holds only valid events")
            batches.append(
                StagedBatch(header.batch_id, header.kind, header.day, header.row_count, body)
            )
    loads: list[Load] = [[]]
    for batch in batches:
        if loads[-1] and events_in(loads[-1]) + batch.row_count > events_per_load:
            loads.append([])
        loads[-1].append(batch)
    return LoadInput(loads)


@dataclass
class LoaderFigures:
    events_per_load: int
    loads: int
    events: int
    dlt_events: int
    per_load: dict[str, float] = field(default_factory=dict)  # events/s by loader
    single_call: dict[str, float] = field(default_factory=dict)

    def ratio(self, table: dict[str, float], other: str) -> float:
        return table["ours"] / table[other]

    def dlt_fastest(self, table: dict[str, float]) -> str:
        return max((k for k in table if k.startswith("dlt")), key=table.__getitem__)


LoaderBench = Callable[[Path, LoadInput, list[Load]], float]  # seconds for all the loads


def ours(folder: Path, data: LoadInput, loads: list[Load]) -> float:
    """The product's loader with a store of its own (opening it is not timed)."""
    with batch_loader(DuckDBWarehouse(folder / "ours.duckdb"), folder / "store") as loader:
        started = time.perf_counter()
        for load in loads:
            result = loader.load(load)
            if not result.reconciles or result.rows_inserted != result.rows_declared:
                raise RuntimeError(f"loader lost or duplicated rows: {result}")
        return time.perf_counter() - started


def ceiling(folder: Path, data: LoadInput, loads: list[Load]) -> float:
    DuckDBWarehouse(folder / "ceiling.duckdb").ensure_schema()  # the same table
    files = []
    for index, load in enumerate(loads):
        files.append(folder / f"load-{index}.ndjson")
        files[-1].write_bytes(data.ndjson(load))
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


def dlt_loader(file_format: str | None) -> LoaderBench:
    def load(folder: Path, data: LoadInput, loads: list[Load]) -> float:
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
        chunks = [decoder.decode_lines(data.ndjson(one)) for one in loads]
        started = time.perf_counter()
        for chunk in chunks:
            pipeline.run(chunk, **options).raise_on_failed_jobs()
        return time.perf_counter() - started

    return load


LOADERS: dict[str, LoaderBench] = {
    "ours": ours,
    "read_json": ceiling,
    "dlt_default": dlt_loader(None),
    "dlt_parquet": dlt_loader("parquet"),
}


def measure_loaders(data: LoadInput, dlt_events: int, rounds: int = 1) -> LoaderFigures:
    """Events/s per loader, per load and in one call (dlt: only the first `dlt_events`)."""
    dlt_loads: list[Load] = []
    dlt_total = 0
    for load in data.loads:
        if dlt_loads and dlt_total + events_in(load) > dlt_events:
            break
        dlt_loads.append(load)
        dlt_total += events_in(load)
    figures = LoaderFigures(
        events_per_load=max(events_in(load) for load in data.loads),
        loads=len(data.loads),
        events=data.events,
        dlt_events=sum(events_in(load) for load in dlt_loads),
    )
    single = [data.all_batches()]
    dlt_single = [[batch for load in dlt_loads for batch in load]]
    for _ in range(rounds):  # best of `rounds`, interleaved
        for name, loader in LOADERS.items():
            is_dlt = name.startswith("dlt")
            for table, loads in (
                (figures.per_load, dlt_loads if is_dlt else data.loads),
                (figures.single_call, dlt_single if is_dlt else single),
            ):
                events = sum(events_in(load) for load in loads)
                with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
                    rate = events / loader(Path(folder), data, loads)
                table[name] = max(table.get(name, 0.0), rate)
    return figures
