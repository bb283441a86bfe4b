"""Every setting of the pipeline, declared once: its variable, its default and what it means.

Each field of `Settings` names the environment variable it is read from, a default chosen for
the local stack and a description; the parser, `to_env`, the README's configuration table (a
test keeps it in step) and `SETTINGS_DOC` are all derived from that one declaration. Production
overrides the defaults through the environment. This module imports nothing beyond the standard
library, so the Lambda package can use it.
"""

from __future__ import annotations

import hashlib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any


def setting(variable: str, default: str, doc: str, *, secret: bool = False) -> Any:
    """A `Settings` field read from `variable`; `default` is its text when the variable is unset
    (an empty default means "unset": None for optional fields). A `secret` is passed on to child
    processes but left out of what Dagster shows (resource config)."""
    return field(metadata={"variable": variable, "default": default, "doc": doc, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """A snapshot of the configuration; build it with `Settings.from_env()`."""

    aws_endpoint_url: str | None = setting(
        "AWS_ENDPOINT_URL",
        "http://127.0.0.1:4566",
        "AWS endpoint for Kinesis, SQS and S3; the local emulator by default. Set it to an empty "
        "string in production to use real AWS.",
    )
    aws_region: str = setting("AWS_DEFAULT_REGION", "us-east-1", "AWS region.")
    stream_name: str = setting(
        "ANALYTICS_STREAM_NAME", "analytics-events", "Kinesis stream the clients write to."
    )
    stream_shards: int = setting(
        "ANALYTICS_STREAM_SHARDS", "2", "Shards of the stream when `dev` creates it."
    )
    queue_name: str = setting(
        "ANALYTICS_QUEUE_NAME",
        "analytics-event-batches",
        "SQS queue of pre-aggregated batches; its dead-letter queue is `<name>-dlq`.",
    )
    queue_max_receives: int = setting(
        "ANALYTICS_QUEUE_MAX_RECEIVES",
        "5",
        "Receives of one SQS message before it moves to the dead-letter queue.",
    )
    bucket: str = setting(
        "ANALYTICS_BUCKET",
        "analytics-event-batches",
        "S3 bucket for batches too big for one SQS message, and the failure record of each "
        "batch that failed to load.",
    )
    warehouse: str = setting(
        "ANALYTICS_WAREHOUSE",
        "duckdb",
        "Warehouse: `duckdb` (local) or `bigquery` (see [BigQuery](#bigquery)).",
    )
    duckdb_path: Path = setting(
        "ANALYTICS_DUCKDB_PATH",
        ".analytics-pipeline/warehouse.duckdb",
        "DuckDB database file of the local warehouse.",
    )
    bigquery_project: str = setting(
        "ANALYTICS_BIGQUERY_PROJECT",
        "",
        "BigQuery project of the dataset and the jobs; empty: the project of the credentials "
        "(application default credentials).",
    )
    bigquery_dataset: str = setting(
        "ANALYTICS_BIGQUERY_DATASET", "analytics", "BigQuery dataset holding the tables."
    )
    bigquery_location: str = setting(
        "ANALYTICS_BIGQUERY_LOCATION", "US", "BigQuery location of the dataset and the jobs."
    )
    bigquery_emulator_rest: str = setting(
        "ANALYTICS_BIGQUERY_EMULATOR_REST",
        "",
        "Emulators only: REST endpoint of a BigQuery emulator (e.g. `http://127.0.0.1:9050`); "
        "when set, anonymous credentials are used and `dev` starts the emulator if none answers. "
        "Never set in production.",
    )
    bigquery_emulator_grpc: str = setting(
        "ANALYTICS_BIGQUERY_EMULATOR_GRPC",
        "127.0.0.1:9060",
        "Emulators only: gRPC endpoint (Storage Write API) of the emulator, used together with the "
        "REST one.",
    )
    bigquery_partition_expiration_days: int | None = setting(
        "ANALYTICS_BIGQUERY_PARTITION_EXPIRATION_DAYS",
        "",
        "Days after which BigQuery drops a partition of `events` and `events_quarantine`; empty: "
        "never. Applied when the tables are created.",
    )
    bigquery_require_partition_filter: bool = setting(
        "ANALYTICS_BIGQUERY_REQUIRE_PARTITION_FILTER",
        "false",
        "Make BigQuery refuse queries on `events` without a filter on `timestamp`. Applied when "
        "the table is created.",
    )
    bigquery_streams_per_hour: int = setting(
        "ANALYTICS_BIGQUERY_STREAMS_PER_HOUR",
        "8000",
        "Write streams the load loop may create per hour on BigQuery (one per table a load "
        "writes): it spaces loads to stay under the project's CreateWriteStream quota "
        "(10,000 an hour per region by default), so a busy hour makes fewer, bigger loads.",
    )
    state_dir: Path = setting(
        "ANALYTICS_STATE_DIR",
        ".analytics-pipeline",
        "Local state: trigger checkpoints, emulator logs, process logs.",
    )
    dagster_home: Path = setting(
        "DAGSTER_HOME",
        ".dagster_home",
        "Dagster instance folder; `dev` writes the repository's dagster.yaml into it.",
    )
    partition_start: str = setting(
        "ANALYTICS_PARTITION_START",
        "",
        "First day partition of the event tables (YYYY-MM-DD); empty: the UTC day the code "
        "location first started, recorded in `<ANALYTICS_STATE_DIR>/partition-start`, so a "
        "fresh install shows no wall of Missing days. Set it where that folder is not kept.",
    )
    sqs_message_max_bytes: int = setting(
        "ANALYTICS_SQS_MESSAGE_MAX_BYTES",
        "1048576",
        "Largest SQS message the Lambda sends (body plus attributes); larger batches go to S3.",
    )
    sqs_visibility_seconds: int = setting(
        "ANALYTICS_SQS_VISIBILITY_SECONDS",
        "60",
        "Visibility timeout the loader receives with: longer than one load takes. A message a "
        "dead loader held comes back after it.",
    )
    sensor_interval_seconds: int = setting(
        "ANALYTICS_SENSOR_INTERVAL_SECONDS",
        "1",
        "Minimum seconds between evaluations of the sensor that keeps the load loop running. "
        "Dagster's daemon looks at sensors every 5 s, so 1 means every look.",
    )
    load_max_messages: int = setting(
        "ANALYTICS_LOAD_MAX_MESSAGES",
        "100",
        "Most SQS messages one load takes (it loads what waits as soon as one arrives).",
    )
    loop_seconds: int = setting(
        "ANALYTICS_LOOP_SECONDS",
        "1800",
        "How long one load loop run lasts before the sensor starts the next (a run per "
        "window keeps run logs and run history readable).",
    )
    loader_state_dir: Path | None = setting(
        "ANALYTICS_LOADER_STATE_DIR",
        "",
        "The loader's store (key index, batch ledger, intents), a folder per queue and "
        "warehouse, on the disk of the host that runs the load loop; unset: "
        "`<ANALYTICS_STATE_DIR>/loader`. Losing it: see `analytics-pipeline loader rebuild`.",
    )
    duplicate_check_cron: str = setting(
        "ANALYTICS_DUPLICATE_CHECK_CRON",
        "0 4 * * *",
        "How often the `no_duplicate_message_ids` safety net re-scans days whose events changed "
        "(on BigQuery each scan of a day bills its `message_id` column).",
    )
    health_interval_seconds: int = setting(
        "ANALYTICS_HEALTH_INTERVAL_SECONDS",
        "30",
        "Seconds between the health sensor's readings of the queue, the dead-letter queue and "
        "the trigger's iterator age (observations plotted in the UI, freshness and DLQ checks).",
    )
    health_cloudwatch: bool = setting(
        "ANALYTICS_HEALTH_CLOUDWATCH",
        "false",
        "Also read CloudWatch (AWS only): the queues' `ApproximateAgeOfOldestMessage` and the "
        "ingest Lambda's `IteratorAge`, at most once a minute (~$1.30 a month).",
    )
    ingest_function_name: str = setting(
        "ANALYTICS_INGEST_FUNCTION_NAME",
        "analytics-ingest",
        "Name of the ingest Lambda, whose `IteratorAge` the health sensor reads from CloudWatch.",
    )
    freshness_minutes: float = setting(
        "ANALYTICS_FRESHNESS_MINUTES",
        "10",
        "The `events_fresh` check fails when batches wait in the queue and no load has "
        "committed for this many minutes.",
    )
    quarantine_rate_max: float = setting(
        "ANALYTICS_QUARANTINE_RATE_MAX",
        "0.05",
        "The `quarantine_rate` check fails when a larger share of the rows loaded within the "
        "window was rejected.",
    )
    quarantine_rate_window_minutes: float = setting(
        "ANALYTICS_QUARANTINE_RATE_WINDOW_MINUTES",
        "15",
        "Window of the `quarantine_rate` check (the load loop's own counts).",
    )
    row_count_interval_seconds: int = setting(
        "ANALYTICS_ROW_COUNT_INTERVAL_SECONDS",
        "600",
        "Seconds between row counts of every table, recorded as observations (BigQuery: table "
        "metadata, free, but the aggregate views are counted by a query: >= 10 MB each).",
    )
    alert_webhook_url: str = setting(
        "ANALYTICS_ALERT_WEBHOOK_URL",
        "",
        "Webhook (Slack-compatible JSON) that gets one message per failed Dagster run; empty: "
        "no alerts. A secret: never shown in the UI's resource config.",
        secret=True,
    )
    dagster_ui_url: str = setting(
        "ANALYTICS_DAGSTER_UI_URL",
        "http://127.0.0.1:3000",
        "Address of the Dagster UI, for the links in alerts.",
    )
    asset_owners: str = setting(
        "ANALYTICS_ASSET_OWNERS",
        "team:data-platform",
        "Owners of every asset in the catalogue, comma-separated (`team:name` or e-mails).",
    )
    warehouse_lock_wait_seconds: float = setting(
        "ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS",
        "120",
        "How long a DuckDB operation waits for the file lock another process holds before it "
        "fails (a failed load is retried and its SQS messages come back).",
    )
    max_blob_bytes: int = setting(
        "ANALYTICS_MAX_BLOB_BYTES", "1048576", "Largest Kinesis record (compressed blob) accepted."
    )
    max_decompressed_bytes: int = setting(
        "ANALYTICS_MAX_DECOMPRESSED_BYTES",
        "8388608",
        "Largest blob after gunzip; bigger ones are rejected as a gzip bomb.",
    )
    max_events_per_blob: int = setting(
        "ANALYTICS_MAX_EVENTS_PER_BLOB", "2500", "Most events in one blob."
    )
    max_event_bytes: int = setting(
        "ANALYTICS_MAX_EVENT_BYTES", "32768", "Largest single event (JSON bytes)."
    )
    max_nesting_depth: int = setting(
        "ANALYTICS_MAX_NESTING_DEPTH", "64", "Deepest JSON nesting accepted in a blob."
    )
    late_arrival_days: int = setting(
        "ANALYTICS_LATE_ARRIVAL_DAYS",
        "30",
        "Events whose corrected timestamp is this many days before receipt are rejected.",
    )
    future_tolerance_seconds: int = setting(
        "ANALYTICS_FUTURE_TOLERANCE_SECONDS",
        "600",
        "Events whose corrected timestamp is this far after receipt are rejected.",
    )
    trigger_batch_size: int = setting(
        "ANALYTICS_TRIGGER_BATCH_SIZE",
        "1000",
        "Kinesis records per handler invocation (local trigger).",
    )
    trigger_poll_seconds: float = setting(
        "ANALYTICS_TRIGGER_POLL_SECONDS",
        "0.5",
        "Pause between polls of an idle shard (local trigger).",
    )
    collector_host: str = setting(
        "ANALYTICS_COLLECTOR_HOST",
        "127.0.0.1",
        "Address the HTTP collector (Segment-compatible API) listens on.",
    )
    collector_port: int = setting("ANALYTICS_COLLECTOR_PORT", "8088", "Port of the HTTP collector.")
    write_keys: str = setting(
        "ANALYTICS_WRITE_KEYS",
        "local-write-key=local",
        "Write keys the collector accepts, comma-separated `key` or `key=source` (the source "
        "name stored with the events in `context.source`; a bare key is named by its hash).",
    )
    collector_max_inflight_bytes: int = setting(
        "ANALYTICS_COLLECTOR_MAX_INFLIGHT_BYTES",
        "67108864",
        "Request bytes one collector worker holds at once (bodies being read, records waiting "
        "for Kinesis); beyond it requests get 503 with Retry-After.",
    )
    collector_read_timeout_seconds: float = setting(
        "ANALYTICS_COLLECTOR_READ_TIMEOUT_SECONDS",
        "10",
        "Time a client has to send its whole request body before the collector answers 408.",
    )

    @property
    def dlq_name(self) -> str:
        return f"{self.queue_name}-dlq"

    @property
    def loader_store_dir(self) -> Path:
        """The store of this queue's loads into this warehouse: what it knows is loaded is
        loaded *there*, so pointing the pipeline at another warehouse starts another store
        (and switching back finds the old one)."""
        if self.warehouse == "bigquery":
            where = f"{self.bigquery_project}/{self.bigquery_dataset}/{self.bigquery_emulator_rest}"
        else:
            where = str(self.duckdb_path.resolve())
        digest = hashlib.sha256(where.encode()).hexdigest()[:12]
        base = self.loader_state_dir or self.state_dir / "loader"
        return base / self.queue_name / f"{self.warehouse}-{digest}"

    @property
    def loader_retention_days(self) -> int:
        """Keys live as long as a copy can still be accepted: the late-arrival window, + 1."""
        return self.late_arrival_days + 1

    def to_env(self, *, secrets: bool = True) -> dict[str, str]:
        """The environment that reproduces these settings in a child process (without the
        secret ones when `secrets` is false: for what a UI shows)."""
        return {
            spec.variable: _to_text(getattr(self, spec.name))
            for spec in setting_specs()
            if secrets or not spec.secret
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {}
        for spec in setting_specs():
            text = env.get(spec.variable)
            values[spec.name] = spec.parse(spec.default if text is None else text)
        return cls(**values)


@dataclass(frozen=True)
class SettingSpec:
    """One declared setting: the field, its variable, default text, description and type."""

    name: str
    variable: str
    default: str
    doc: str
    type: Any
    secret: bool = False

    def parse(self, text: str) -> Any:
        """The field's value from its variable's text; empty is None where None is allowed."""
        kind = self.type
        if isinstance(kind, types.UnionType):  # `X | None`
            if not text:
                return None
            (kind,) = (arg for arg in typing.get_args(kind) if arg is not type(None))
        if kind is bool:
            return text.strip().lower() in ("1", "true", "yes")
        if kind is Path:
            return Path(text).absolute()
        return kind(text)


@cache
def setting_specs() -> tuple[SettingSpec, ...]:
    hints = typing.get_type_hints(Settings)
    return tuple(
        SettingSpec(
            name=f.name,
            variable=f.metadata["variable"],
            default=f.metadata["default"],
            doc=f.metadata["doc"],
            type=hints[f.name],
            secret=f.metadata["secret"],
        )
        for f in fields(Settings)
    )


def _to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# variable -> (default, description): the README's configuration table, derived.
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    spec.variable: (spec.default, spec.doc) for spec in setting_specs()
}


def configuration_table() -> str:
    """The README's configuration table, one row per setting (a test keeps the README equal)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for spec in setting_specs():
        default = f"`{spec.default}`" if spec.default else "(unset)"
        rows.append(f"| `{spec.variable}` | {default} | {spec.doc} |")
    return "\n".join(rows)
