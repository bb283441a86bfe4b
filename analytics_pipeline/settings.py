"""Every setting of the pipeline, read from environment variables in this one place.

Each setting has a documented default chosen for the local stack; production overrides them
through the environment. `SETTINGS_DOC` is the single source for the README's configuration
table (a test keeps the two in step). This module imports nothing from Dagster, so the Lambda
package can use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

# name -> (default, description). Empty default means "unset".
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    "AWS_ENDPOINT_URL": (
        "http://127.0.0.1:4566",
        "AWS endpoint for Kinesis, SQS and S3; the local emulator by default. Set it to an empty "
        "string in production to use real AWS.",
    ),
    "AWS_DEFAULT_REGION": ("us-east-1", "AWS region."),
    "ANALYTICS_STREAM_NAME": ("analytics-events", "Kinesis stream the clients write to."),
    "ANALYTICS_STREAM_SHARDS": ("2", "Shards of the stream when `dev` creates it."),
    "ANALYTICS_QUEUE_NAME": (
        "analytics-event-batches",
        "SQS queue of pre-aggregated batches; its dead-letter queue is `<name>-dlq`.",
    ),
    "ANALYTICS_QUEUE_MAX_RECEIVES": (
        "5",
        "Receives of one SQS message before it moves to the dead-letter queue.",
    ),
    "ANALYTICS_BUCKET": (
        "analytics-event-batches",
        "S3 bucket for batches too big for one SQS message and for batches staged for a run.",
    ),
    "ANALYTICS_WAREHOUSE": ("duckdb", "Warehouse: `duckdb` (local) or `bigquery`."),
    "ANALYTICS_DUCKDB_PATH": (
        ".analytics-pipeline/warehouse.duckdb",
        "DuckDB database file of the local warehouse.",
    ),
    "ANALYTICS_BIGQUERY_PROJECT": (
        "",
        "BigQuery project of the dataset and the jobs; empty: the project of the credentials "
        "(application default credentials).",
    ),
    "ANALYTICS_BIGQUERY_DATASET": ("analytics", "BigQuery dataset holding the tables."),
    "ANALYTICS_BIGQUERY_LOCATION": ("US", "BigQuery location of the dataset and the jobs."),
    "ANALYTICS_BIGQUERY_EMULATOR_REST": (
        "",
        "Emulators only: REST endpoint of a BigQuery emulator (e.g. `http://127.0.0.1:9050`); "
        "when set, anonymous credentials are used and `dev` starts the emulator if none answers.",
    ),
    "ANALYTICS_BIGQUERY_EMULATOR_GRPC": (
        "127.0.0.1:9060",
        "Emulators only: gRPC endpoint (Storage Write API) of the emulator, used with REST.",
    ),
    "ANALYTICS_BIGQUERY_PARTITION_EXPIRATION_DAYS": (
        "",
        "Days after which BigQuery drops a partition of `events` and `events_quarantine`; "
        "empty: never. Applied when the tables are created.",
    ),
    "ANALYTICS_BIGQUERY_REQUIRE_PARTITION_FILTER": (
        "false",
        "Make BigQuery refuse queries on `events` without a filter on `timestamp`. Applied when "
        "the table is created.",
    ),
    "ANALYTICS_STATE_DIR": (
        ".analytics-pipeline",
        "Local state: trigger checkpoints, emulator logs, process logs.",
    ),
    "DAGSTER_HOME": (
        ".dagster_home",
        "Dagster instance folder; `dev` writes the repository's dagster.yaml into it.",
    ),
    "ANALYTICS_PARTITION_START": ("2026-01-01", "First day partition of the event tables."),
    "ANALYTICS_SQS_MESSAGE_MAX_BYTES": (
        "1048576",
        "Largest SQS message the Lambda sends (body plus attributes); larger batches go to S3.",
    ),
    "ANALYTICS_SQS_VISIBILITY_SECONDS": (
        "300",
        "Visibility timeout the sensor receives with: longer than queue wait plus run time.",
    ),
    "ANALYTICS_SENSOR_INTERVAL_SECONDS": (
        "1",
        "Minimum seconds between sensor evaluations. Dagster's daemon looks at sensors every 5 s, "
        "so 1 means every look (~5 s); 5 skips every other one (~10 s, measured).",
    ),
    "ANALYTICS_SENSOR_MAX_MESSAGES": (
        "500",
        "Most SQS messages one sensor evaluation receives (keeps a tick well under 60 s).",
    ),
    "ANALYTICS_AGGREGATE_CRON": (
        "* * * * *",
        "Cooldown of the aggregates: a day whose events changed refreshes at most once a tick.",
    ),
    "ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS": (
        "120",
        "How long a DuckDB operation waits for the file lock another process holds before it "
        "fails (a failed load is retried and its SQS messages come back).",
    ),
    "ANALYTICS_DUPLICATE_CHECK_CRON": (
        "0 * * * *",
        "How often the `no_duplicate_message_ids` check re-scans days whose events changed.",
    ),
    "ANALYTICS_DEDUPE_WINDOW_DAYS": (
        "7",
        "How far back the loader looks for an already loaded messageId.",
    ),
    "ANALYTICS_MAX_BLOB_BYTES": ("1048576", "Largest Kinesis record (compressed blob) accepted."),
    "ANALYTICS_MAX_DECOMPRESSED_BYTES": (
        "8388608",
        "Largest blob after gunzip; bigger ones are rejected as a gzip bomb.",
    ),
    "ANALYTICS_MAX_EVENTS_PER_BLOB": ("2500", "Most events in one blob."),
    "ANALYTICS_MAX_EVENT_BYTES": ("32768", "Largest single event (JSON bytes)."),
    "ANALYTICS_MAX_NESTING_DEPTH": ("64", "Deepest JSON nesting accepted in a blob."),
    "ANALYTICS_LATE_ARRIVAL_DAYS": (
        "30",
        "Events whose corrected timestamp is this many days before receipt are rejected.",
    ),
    "ANALYTICS_FUTURE_TOLERANCE_SECONDS": (
        "600",
        "Events whose corrected timestamp is this far after receipt are rejected.",
    ),
    "ANALYTICS_TRIGGER_BATCH_SIZE": (
        "1000",
        "Kinesis records per handler invocation (local trigger).",
    ),
    "ANALYTICS_TRIGGER_POLL_SECONDS": (
        "0.5",
        "Pause between polls of an idle shard (local trigger).",
    ),
    "ANALYTICS_COLLECTOR_HOST": (
        "127.0.0.1",
        "Address the HTTP collector (Segment-compatible API) listens on.",
    ),
    "ANALYTICS_COLLECTOR_PORT": ("8088", "Port of the HTTP collector."),
    "ANALYTICS_WRITE_KEYS": (
        "local-write-key=local",
        "Write keys the collector accepts, comma-separated `key` or `key=source` (the source "
        "name stored with the events in `context.source`; a bare key is named by its hash).",
    ),
    "ANALYTICS_COLLECTOR_MAX_INFLIGHT_BYTES": (
        "67108864",
        "Request bytes one collector worker holds at once (bodies being read, records waiting "
        "for Kinesis); beyond it requests get 503 with Retry-After.",
    ),
    "ANALYTICS_COLLECTOR_READ_TIMEOUT_SECONDS": (
        "10",
        "Time a client has to send its whole request body before the collector answers 408.",
    ),
}


def _env(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name)
    return SETTINGS_DOC[name][0] if value is None else value


@dataclass(frozen=True)
class Settings:
    """A snapshot of the configuration; build it with `Settings.from_env()`."""

    aws_endpoint_url: str | None
    aws_region: str
    stream_name: str
    stream_shards: int
    queue_name: str
    queue_max_receives: int
    bucket: str
    warehouse: str
    duckdb_path: Path
    bigquery_project: str
    bigquery_dataset: str
    bigquery_location: str
    bigquery_emulator_rest: str
    bigquery_emulator_grpc: str
    bigquery_partition_expiration_days: int | None
    bigquery_require_partition_filter: bool
    state_dir: Path
    dagster_home: Path
    partition_start: str
    sqs_message_max_bytes: int
    sqs_visibility_seconds: int
    sensor_interval_seconds: int
    sensor_max_messages: int
    aggregate_cron: str
    duplicate_check_cron: str
    warehouse_lock_wait_seconds: float
    dedupe_window_days: int
    max_blob_bytes: int
    max_decompressed_bytes: int
    max_events_per_blob: int
    max_event_bytes: int
    max_nesting_depth: int
    late_arrival_days: int
    future_tolerance_seconds: int
    trigger_batch_size: int
    trigger_poll_seconds: float
    collector_host: str
    collector_port: int
    write_keys: str
    collector_max_inflight_bytes: int
    collector_read_timeout_seconds: float

    @property
    def dlq_name(self) -> str:
        return f"{self.queue_name}-dlq"

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env = {}
        for name, variable in ENV_BY_FIELD.items():
            value = getattr(self, name)
            env[variable] = "" if value is None else str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return _env(env, name)

        return cls(
            aws_endpoint_url=get("AWS_ENDPOINT_URL") or None,
            aws_region=get("AWS_DEFAULT_REGION"),
            stream_name=get("ANALYTICS_STREAM_NAME"),
            stream_shards=int(get("ANALYTICS_STREAM_SHARDS")),
            queue_name=get("ANALYTICS_QUEUE_NAME"),
            queue_max_receives=int(get("ANALYTICS_QUEUE_MAX_RECEIVES")),
            bucket=get("ANALYTICS_BUCKET"),
            warehouse=get("ANALYTICS_WAREHOUSE"),
            duckdb_path=Path(get("ANALYTICS_DUCKDB_PATH")).absolute(),
            bigquery_project=get("ANALYTICS_BIGQUERY_PROJECT"),
            bigquery_dataset=get("ANALYTICS_BIGQUERY_DATASET"),
            bigquery_location=get("ANALYTICS_BIGQUERY_LOCATION"),
            bigquery_emulator_rest=get("ANALYTICS_BIGQUERY_EMULATOR_REST"),
            bigquery_emulator_grpc=get("ANALYTICS_BIGQUERY_EMULATOR_GRPC"),
            bigquery_partition_expiration_days=(
                int(get("ANALYTICS_BIGQUERY_PARTITION_EXPIRATION_DAYS"))
                if get("ANALYTICS_BIGQUERY_PARTITION_EXPIRATION_DAYS")
                else None
            ),
            bigquery_require_partition_filter=get("ANALYTICS_BIGQUERY_REQUIRE_PARTITION_FILTER")
            .strip()
            .lower()
            in ("1", "true", "yes"),
            state_dir=Path(get("ANALYTICS_STATE_DIR")).absolute(),
            dagster_home=Path(get("DAGSTER_HOME")).absolute(),
            partition_start=get("ANALYTICS_PARTITION_START"),
            sqs_message_max_bytes=int(get("ANALYTICS_SQS_MESSAGE_MAX_BYTES")),
            sqs_visibility_seconds=int(get("ANALYTICS_SQS_VISIBILITY_SECONDS")),
            sensor_interval_seconds=int(get("ANALYTICS_SENSOR_INTERVAL_SECONDS")),
            sensor_max_messages=int(get("ANALYTICS_SENSOR_MAX_MESSAGES")),
            aggregate_cron=get("ANALYTICS_AGGREGATE_CRON"),
            duplicate_check_cron=get("ANALYTICS_DUPLICATE_CHECK_CRON"),
            warehouse_lock_wait_seconds=float(get("ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS")),
            dedupe_window_days=int(get("ANALYTICS_DEDUPE_WINDOW_DAYS")),
            max_blob_bytes=int(get("ANALYTICS_MAX_BLOB_BYTES")),
            max_decompressed_bytes=int(get("ANALYTICS_MAX_DECOMPRESSED_BYTES")),
            max_events_per_blob=int(get("ANALYTICS_MAX_EVENTS_PER_BLOB")),
            max_event_bytes=int(get("ANALYTICS_MAX_EVENT_BYTES")),
            max_nesting_depth=int(get("ANALYTICS_MAX_NESTING_DEPTH")),
            late_arrival_days=int(get("ANALYTICS_LATE_ARRIVAL_DAYS")),
            future_tolerance_seconds=int(get("ANALYTICS_FUTURE_TOLERANCE_SECONDS")),
            trigger_batch_size=int(get("ANALYTICS_TRIGGER_BATCH_SIZE")),
            trigger_poll_seconds=float(get("ANALYTICS_TRIGGER_POLL_SECONDS")),
            collector_host=get("ANALYTICS_COLLECTOR_HOST"),
            collector_port=int(get("ANALYTICS_COLLECTOR_PORT")),
            write_keys=get("ANALYTICS_WRITE_KEYS"),
            collector_max_inflight_bytes=int(get("ANALYTICS_COLLECTOR_MAX_INFLIGHT_BYTES")),
            collector_read_timeout_seconds=float(get("ANALYTICS_COLLECTOR_READ_TIMEOUT_SECONDS")),
        )


# Settings field -> the environment variable it is read from.
ENV_BY_FIELD: dict[str, str] = {
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "aws_region": "AWS_DEFAULT_REGION",
    "stream_name": "ANALYTICS_STREAM_NAME",
    "stream_shards": "ANALYTICS_STREAM_SHARDS",
    "queue_name": "ANALYTICS_QUEUE_NAME",
    "queue_max_receives": "ANALYTICS_QUEUE_MAX_RECEIVES",
    "bucket": "ANALYTICS_BUCKET",
    "warehouse": "ANALYTICS_WAREHOUSE",
    "duckdb_path": "ANALYTICS_DUCKDB_PATH",
    "bigquery_project": "ANALYTICS_BIGQUERY_PROJECT",
    "bigquery_dataset": "ANALYTICS_BIGQUERY_DATASET",
    "bigquery_location": "ANALYTICS_BIGQUERY_LOCATION",
    "bigquery_emulator_rest": "ANALYTICS_BIGQUERY_EMULATOR_REST",
    "bigquery_emulator_grpc": "ANALYTICS_BIGQUERY_EMULATOR_GRPC",
    "bigquery_partition_expiration_days": "ANALYTICS_BIGQUERY_PARTITION_EXPIRATION_DAYS",
    "bigquery_require_partition_filter": "ANALYTICS_BIGQUERY_REQUIRE_PARTITION_FILTER",
    "state_dir": "ANALYTICS_STATE_DIR",
    "dagster_home": "DAGSTER_HOME",
    "partition_start": "ANALYTICS_PARTITION_START",
    "sqs_message_max_bytes": "ANALYTICS_SQS_MESSAGE_MAX_BYTES",
    "sqs_visibility_seconds": "ANALYTICS_SQS_VISIBILITY_SECONDS",
    "sensor_interval_seconds": "ANALYTICS_SENSOR_INTERVAL_SECONDS",
    "sensor_max_messages": "ANALYTICS_SENSOR_MAX_MESSAGES",
    "aggregate_cron": "ANALYTICS_AGGREGATE_CRON",
    "duplicate_check_cron": "ANALYTICS_DUPLICATE_CHECK_CRON",
    "warehouse_lock_wait_seconds": "ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS",
    "dedupe_window_days": "ANALYTICS_DEDUPE_WINDOW_DAYS",
    "max_blob_bytes": "ANALYTICS_MAX_BLOB_BYTES",
    "max_decompressed_bytes": "ANALYTICS_MAX_DECOMPRESSED_BYTES",
    "max_events_per_blob": "ANALYTICS_MAX_EVENTS_PER_BLOB",
    "max_event_bytes": "ANALYTICS_MAX_EVENT_BYTES",
    "max_nesting_depth": "ANALYTICS_MAX_NESTING_DEPTH",
    "late_arrival_days": "ANALYTICS_LATE_ARRIVAL_DAYS",
    "future_tolerance_seconds": "ANALYTICS_FUTURE_TOLERANCE_SECONDS",
    "trigger_batch_size": "ANALYTICS_TRIGGER_BATCH_SIZE",
    "trigger_poll_seconds": "ANALYTICS_TRIGGER_POLL_SECONDS",
    "collector_host": "ANALYTICS_COLLECTOR_HOST",
    "collector_port": "ANALYTICS_COLLECTOR_PORT",
    "write_keys": "ANALYTICS_WRITE_KEYS",
    "collector_max_inflight_bytes": "ANALYTICS_COLLECTOR_MAX_INFLIGHT_BYTES",
    "collector_read_timeout_seconds": "ANALYTICS_COLLECTOR_READ_TIMEOUT_SECONDS",
}
SETTING_FIELDS = tuple(f.name for f in fields(Settings))
