"""How close the exactly-once DuckDB loader gets to DuckDB's own NDJSON reader.

Builds realistic events (~500 bytes of JSON each, nested properties and context), packs them
into gzip NDJSON batches like the Lambda does, and times:

- ceiling: `CREATE TABLE AS SELECT * FROM read_json(<one NDJSON file>)` into a fresh file, up to
  the checkpoint on close (the file is already decompressed: the loader also pays gunzip);
- loader, one call: `Loader.load_batches` with every batch in one call (a drained backlog):
  the plan against the loader's RocksDB store (ledger, key index, first-seen aggregate keys),
  one DuckDB transaction (rows, aggregate deltas, ledger rows), the store's record;
- loader, one call, table already full: as many other events into the same warehouse and store
  (the index lookups and the transaction do not grow with the table);
- loader, call per batch: one load per batch, as the load loop does at low rates;
- replay: every batch again (all skipped by the store's ledger, nothing written).

Run: .venv/bin/python -m benchmarks.duckdb_load [--events 200000] [--batch-rows 5000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import msgspec

from analytics_pipeline.contract.batches import BatchKind, batch_id_for, encode_rows
from analytics_pipeline.contract.rows import EventRow
from analytics_pipeline.ingest.packing import compress_batch
from analytics_pipeline.warehouse.base import StagedBatch
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline.warehouse.tables import EVENT_TABLE_COLUMNS
from analytics_pipeline_testkit.loading import batch_loader

EVENT_NAMES = ("Video Recorded", "Video Shared", "Feed Scrolled", "Purchase Completed", "Login")
SCREENS = ("Feed", "Camera", "Profile", "Settings")


def realistic_events(count: int, seed: int = 7) -> list[EventRow]:
    rng = random.Random(seed)
    base = datetime(2026, 11, 29, 0, 0, tzinfo=UTC)
    rows = []
    for _ in range(count):
        timestamp = base + timedelta(seconds=rng.uniform(0, 86_000))
        sent_at = timestamp + timedelta(seconds=rng.uniform(0.5, 30))
        kind = rng.choice(("track", "track", "track", "screen", "identify"))
        properties = {
            "duration_ms": rng.randint(100, 60_000),
            "filter": rng.choice(("none", "sepia", "noir")),
            "camera": {"lens": rng.choice(("front", "back")), "zoom": round(rng.random() * 5, 2)},
        }
        context = {
            "app": {"name": "demo", "version": "4.2.0"},
            "os": {"name": rng.choice(("iOS", "Android")), "version": "18.1"},
            "device": {"id": uuid.UUID(int=rng.getrandbits(128)).hex},
        }
        user = rng.randrange(20_000)
        rows.append(
            EventRow(
                message_id=str(uuid.UUID(int=rng.getrandbits(128))),
                type=kind,
                event=rng.choice(EVENT_NAMES) if kind == "track" else rng.choice(SCREENS),
                user_id=f"u-{user}" if user % 3 == 0 else None,
                anonymous_id=f"a-{user}",
                timestamp=timestamp,
                original_timestamp=timestamp,
                sent_at=sent_at,
                received_at=sent_at + timedelta(milliseconds=rng.randint(20, 400)),
                properties=msgspec.Raw(msgspec.json.encode(properties)),
                context=msgspec.Raw(msgspec.json.encode(context)),
            )
        )
    return rows


def staged_batches(rows: list[EventRow], batch_rows: int) -> list[StagedBatch]:
    batches = []
    for start in range(0, len(rows), batch_rows):
        chunk = rows[start : start + batch_rows]
        day = chunk[0].timestamp.date().isoformat()
        batch_id = batch_id_for(BatchKind.EVENTS, day, (row.message_id for row in chunk))
        batches.append(
            StagedBatch(
                batch_id, BatchKind.EVENTS, day, len(chunk), compress_batch(encode_rows(chunk))
            )
        )
    return batches


def ceiling_seconds(ndjson: bytes, folder: Path, attempt: int) -> float:
    source = folder / "all.ndjson"
    source.write_bytes(ndjson)
    wire = [c for c in EVENT_TABLE_COLUMNS if c.name != "loaded_at"]
    connection = duckdb.connect(str(folder / f"ceiling-{attempt}.duckdb"))
    started = time.perf_counter()
    connection.execute(
        "CREATE TABLE events AS SELECT * FROM read_json(?, format = 'newline_delimited', "
        "columns = ?)",
        [str(source), {c.name: c.sql_type for c in wire}],
    )
    connection.close()  # the checkpoint that makes the table durable is part of the load
    return time.perf_counter() - started


def one_call_seconds(batches: list[StagedBatch], folder: Path) -> float:
    """One load of every batch into a fresh warehouse and store at `folder`."""
    with batch_loader(DuckDBWarehouse(folder / "warehouse.duckdb"), folder / "store") as loader:
        started = time.perf_counter()
        result = loader.load(batches)
        elapsed = time.perf_counter() - started
    assert result.rows_inserted == result.rows_declared and result.reconciles, result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N (the box is shared)")
    arguments = parser.parse_args()

    rows = realistic_events(arguments.events)
    ndjson = encode_rows(rows)
    batches = staged_batches(rows, arguments.batch_rows)
    more_batches = staged_batches(realistic_events(arguments.events, seed=8), arguments.batch_rows)
    events = len(rows)
    print(
        f"{events:,} events, {len(ndjson) / events:.0f} bytes each, "
        f"{len(batches)} batches of {arguments.batch_rows:,} "
        f"({sum(len(b.ndjson_gz) for b in batches) / 1e6:.1f} MB gzip), "
        f"best of {arguments.repeat}"
    )

    with tempfile.TemporaryDirectory(prefix="duckdb-load-bench-") as name:
        folder = Path(name)
        ceiling = min(ceiling_seconds(ndjson, folder, i) for i in range(arguments.repeat))
        report("ceiling: read_json into a fresh table", events, ceiling)

        one_call = min(
            one_call_seconds(batches, folder / f"one-call-{i}") for i in range(arguments.repeat)
        )
        report("loader, one call, empty table", events, one_call, ceiling)

        # The same warehouse and store again with other events of the same day.
        first = folder / "one-call-0"
        with batch_loader(DuckDBWarehouse(first / "warehouse.duckdb"), first / "store") as loader:
            started = time.perf_counter()
            result = loader.load(more_batches)
            steady = time.perf_counter() - started
        assert result.rows_inserted == events and result.reconciles, result
        report("loader, one call, table already full", events, steady, ceiling)

        per_batch_dir = folder / "per-batch"
        warehouse = DuckDBWarehouse(per_batch_dir / "warehouse.duckdb")
        with batch_loader(warehouse, per_batch_dir / "store") as loader:
            started = time.perf_counter()
            inserted = sum(loader.load([b]).rows_inserted for b in batches)
            per_batch = time.perf_counter() - started
            assert inserted == events
            report("loader, one call per batch", events, per_batch, ceiling)

            started = time.perf_counter()
            replay = loader.load(batches)
            assert replay.batches_already_loaded == len(batches) and replay.rows_inserted == 0
            report("replay, all skipped by the ledger", events, time.perf_counter() - started)


def report(label: str, events: int, seconds: float, ceiling: float | None = None) -> None:
    line = f"{label:<40} {seconds:7.3f} s  {events / seconds:>12,.0f} events/s"
    if ceiling is not None:
        line += f"  loader/ceiling {ceiling / seconds:.2f}"
    print(line)


if __name__ == "__main__":
    main()
