"""Bytes per event on each hop and list-price dollars per million events.

Bytes are measured on the shared workload; prices are public list prices (us-east-1, on-demand,
no free tiers, checked 2026-11; see PRICES) and every product is written out in COST_NOTES so a
reader can redo the arithmetic with their own rate and prices.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from analytics_pipeline.contract.batches import decode_event_rows, decompress
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline_testkit.loading import batch_loader
from benchmarks.loader_bench import LoadInput
from benchmarks.workload import Workload

GIB = 1024**3
KINESIS_PUT_UNIT_BYTES = 25 * 1024
SQS_BILLING_CHUNK_BYTES = 64 * 1024
SQS_BATCH = 10
LAMBDA_MEMORY_GB = 1.769  # the size at which Lambda gives one full vCPU: our one-core figure
PRICES = {
    "kinesis_shard_hour": 0.015,
    "kinesis_put_units_per_million": 0.014,
    "lambda_gb_second": 0.0000166667,
    "lambda_requests_per_million": 0.20,
    "sqs_requests_per_million": 0.40,
    "s3_put_per_thousand": 0.005,
    "s3_get_per_thousand": 0.0004,
    "bigquery_write_api_per_gib": 0.025,  # after the first 2 TiB a month, which are free
    "bigquery_active_logical_storage_per_gib_month": 0.02,
}
SENSOR_EMPTY_RECEIVES_PER_SECOND = 1 / 5  # one long poll per sensor tick, even when idle


@dataclass
class CostFigures:
    rate: float  # events/s the scenario assumes
    bytes_per_event: dict[str, float] = field(default_factory=dict)
    dollars_per_million: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def aws_total(self) -> float:
        return sum(v for k, v in self.dollars_per_million.items() if not k.startswith("BigQuery"))


def bigquery_logical_bytes(ndjson: bytes) -> int:
    """BigQuery's logical size: STRING 2 + UTF-8 bytes, TIMESTAMP 8, JSON its text (+ loaded_at)."""
    total = 0
    for row in decode_event_rows(ndjson):
        for value in msgspec.structs.astuple(row):
            if value is None:
                continue
            if isinstance(value, msgspec.Raw):
                total += 0 if bytes(value) == b"null" else len(value)
            elif isinstance(value, str):
                total += 2 + len(value.encode())
            else:
                total += 8
        total += 8  # loaded_at
    return total


def duckdb_bytes(data: LoadInput) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as folder:
        warehouse = DuckDBWarehouse(Path(folder) / "w.duckdb")
        with batch_loader(warehouse, Path(folder) / "store") as loader:
            loader.load_all(data.all_batches())
        return (Path(folder) / "w.duckdb").stat().st_size


def measure_cost(
    workload: Workload, data: LoadInput, handler_events_per_second: float, rate: float
) -> CostFigures:
    figures = CostFigures(rate)
    events = workload.events
    blob_bytes = sum(len(blob) for blob in workload.blobs)
    put_units = sum(math.ceil(len(blob) / KINESIS_PUT_UNIT_BYTES) for blob in workload.blobs)
    refs = data.all_batches()
    messages = len(refs)
    # As sent: base64 of the gzip body plus ~230 bytes of message attributes.
    message_bytes = [len(r.ndjson_gz) * 4 / 3 + 230 for r in refs]
    chunks = sum(math.ceil(size / SQS_BILLING_CHUNK_BYTES) for size in message_bytes)
    ndjson = b"".join(decompress(r.ndjson_gz) for r in refs)
    loaded = data.events
    figures.bytes_per_event = {
        "client blob (gzip JSON)": blob_bytes / events,
        "Kinesis record": blob_bytes / events,
        "SQS message (base64 gzip NDJSON + attributes)": sum(message_bytes) / loaded,
        "batch NDJSON, uncompressed (context merged into each row)": len(ndjson) / loaded,
        "DuckDB file": duckdb_bytes(data) / loaded,
        "BigQuery logical (active storage, Write API ingest)": bigquery_logical_bytes(ndjson)
        / loaded,
    }

    per_million = 1e6
    seconds_for_million = per_million / rate
    bytes_per_second = rate * blob_bytes / events
    blobs_per_second = rate * len(workload.blobs) / events
    shards = max(1, math.ceil(bytes_per_second / 1e6), math.ceil(blobs_per_second / 1000))
    shard_hours = shards * seconds_for_million / 3600
    put_units_m = put_units / events * per_million
    invocations = min(shards * seconds_for_million, len(workload.blobs) / events * per_million)
    gb_seconds = per_million / handler_events_per_second * LAMBDA_MEMORY_GB
    messages_m = messages / loaded * per_million
    sqs_requests = (
        2 * chunks / loaded * per_million  # send (per 64 KiB chunk) + receive of the same bytes
        + messages_m / SQS_BATCH  # DeleteMessageBatch of 10
        + seconds_for_million * SENSOR_EMPTY_RECEIVES_PER_SECOND
    )
    bq_gib = figures.bytes_per_event["BigQuery logical (active storage, Write API ingest)"] * (
        per_million / GIB
    )
    p = PRICES
    figures.dollars_per_million = {
        "Kinesis shard-hours": shard_hours * p["kinesis_shard_hour"],
        "Kinesis PUT payload units": put_units_m / 1e6 * p["kinesis_put_units_per_million"],
        "Lambda duration": gb_seconds * p["lambda_gb_second"],
        "Lambda requests": invocations / 1e6 * p["lambda_requests_per_million"],
        "SQS requests": sqs_requests / 1e6 * p["sqs_requests_per_million"],
        "S3 staging PUT+GET (DELETE free)": messages_m
        * (p["s3_put_per_thousand"] + p["s3_get_per_thousand"])
        / 1000,
        "BigQuery Storage Write API ingest": bq_gib * p["bigquery_write_api_per_gib"],
        "BigQuery active storage, per month kept": bq_gib
        * p["bigquery_active_logical_storage_per_gib_month"],
    }
    figures.notes = [
        f"at {rate:,.0f} events/s a million events take {seconds_for_million:,.0f} s; "
        f"{bytes_per_second / 1e3:,.0f} kB/s and {blobs_per_second:,.0f} records/s need "
        f"{shards} shard(s): {shard_hours:.3f} shard-hours x ${p['kinesis_shard_hour']}",
        f"{put_units / len(workload.blobs):.2f} PUT payload units (25 KiB) per blob, "
        f"{events / len(workload.blobs):.1f} events per blob: {put_units_m:,.0f} units "
        f"x ${p['kinesis_put_units_per_million']}/M",
        f"Lambda at {LAMBDA_MEMORY_GB} GB (one vCPU, as measured): 1M / "
        f"{handler_events_per_second:,.0f} events/s x {LAMBDA_MEMORY_GB} GB = "
        f"{gb_seconds:.1f} GB-s x ${p['lambda_gb_second']}; {invocations:,.0f} invocations "
        f"(one per shard per second) x ${p['lambda_requests_per_million']}/M",
        f"SQS: {messages_m:,.0f} messages of {sum(message_bytes) / messages / 1024:,.0f} KiB "
        f"({loaded / messages:,.0f} events each): {2 * chunks / loaded * per_million:,.0f} "
        f"send+receive 64 KiB chunks + {messages_m / SQS_BATCH:,.0f} delete batches + "
        f"{seconds_for_million * SENSOR_EMPTY_RECEIVES_PER_SECOND:,.0f} sensor polls "
        f"= {sqs_requests:,.0f} requests x ${p['sqs_requests_per_million']}/M",
        f"S3 staging: one PUT (sensor) and one GET (run) per message: {messages_m:,.0f} "
        f"x (${p['s3_put_per_thousand']} + ${p['s3_get_per_thousand']}) / 1000",
        f"BigQuery: {bq_gib:.3f} GiB logical per million events x "
        f"${p['bigquery_write_api_per_gib']}/GiB ingest (the first 2 TiB a month are free, "
        f"about {2 * 1024 / bq_gib:,.0f} million events), and x "
        f"${p['bigquery_active_logical_storage_per_gib_month']}/GiB for each month kept",
    ]
    return figures
