"""The terms of an estimate: what goes in (the stated `Assumptions`, the code's
`PipelineParameters`) and what comes out (an `Estimate` of billed `Item`s)."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from analytics_pipeline.cost.cron import Schedule
from analytics_pipeline.cost.prices import PRICES


def assumption(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Assumptions:
    """What the bill depends on that the code cannot know; `--assume NAME=VALUE` overrides."""

    events_per_blob: int = assumption(
        40, "events per client blob (Kinesis record): the benchmark workload's median"
    )
    peak_to_average: float = assumption(
        3.0,
        "busiest second's traffic over the month's average: provisioned shards are sized for it",
    )
    late_event_share: float = assumption(
        0.02, "share of events whose day is not the day they arrive (offline devices)"
    )
    late_days_updated_per_day: int = assumption(
        2,
        "older days late events update: the duplicate check rescans each at every tick (at "
        "least once a day)",
    )
    rejected_share: float = assumption(0.001, "share of events the contract rejects")
    distinct_event_names: int = assumption(
        50, "distinct (type, event) pairs of the app: rows of a daily_event_counts delta"
    )
    lambda_architecture: str = assumption(
        "x86_64", "x86_64 (where the handler speed was measured) or arm64 (20 % cheaper GB-s)"
    )
    lambda_memory_mb: int = assumption(
        1024,
        "the Lambda's memory, as analytics_pipeline/ingest/__init__.py sets it; one full vCPU "
        "comes at 1,769 MB, so the handler runs at min(1, memory / 1,769) of its one-core speed",
    )
    lambda_fixed_ms: float = assumption(
        25.0, "ms an invocation takes besides parsing: runtime overhead, the SendMessageBatch"
    )
    handler_events_per_second: float = assumption(
        181_433, "the handler's measured speed on one full core (README, `make bench`)"
    )
    kinesis_retention_hours: int = assumption(
        24,
        "the stream's retention: 24 h (the default, free) as analytics_pipeline/ingest/"
        "__init__.py sets it; 25-168 h is billed (extended retention, e.g. 168 for a week to "
        "replay a failed shard range)",
    )
    queues: int = assumption(1, "SQS queues, each with one loader loop (scale-out: several)")
    loader_host_in_aws: bool = assumption(
        False,
        "false: the loader runs outside AWS (next to BigQuery or on premises) and SQS bodies "
        "leave AWS; true: it runs in the region and BigQuery's rows leave AWS instead",
    )
    hosts: int = assumption(1, "hosts for Dagster, the loader and the collector")
    host_hourly_usd: float = assumption(
        PRICES["host_hour_m7g_large"].usd, "price of one host hour (an EC2 m7g.large)"
    )
    free_tiers: bool = assumption(True, "subtract the monthly free tiers, each as its own item")
    storage_months: float = assumption(
        1.0, "months of storage counted: 1 = the first month of a month's events"
    )

    def with_overrides(self, texts: Sequence[str]) -> Assumptions:
        """`NAME=VALUE` texts applied over these assumptions, typed like the fields."""
        known = typing.get_type_hints(Assumptions)  # every hint is a field
        changes: dict[str, Any] = {}
        for text in texts:
            name, sep, value = text.partition("=")
            if not sep or name not in known:
                raise ValueError(
                    f"expected NAME=VALUE with NAME one of {', '.join(known)}: {text!r}"
                )
            kind = known[name]
            if kind is bool:
                changes[name] = value.strip().lower() in ("1", "true", "yes")
            else:
                changes[name] = kind(value)
        if changes.get("lambda_architecture", self.lambda_architecture) not in ("x86_64", "arm64"):
            raise ValueError("lambda_architecture is x86_64 or arm64")
        return replace(self, **changes)


def assumption_docs() -> dict[str, str]:
    return {f.name: f.metadata["doc"] for f in fields(Assumptions)}


@dataclass(frozen=True)
class PipelineParameters:
    """What the code and the settings fix: limits, batch sizes, schedules."""

    trigger_batch_size: int  # Kinesis records per Lambda invocation at most
    sqs_message_max_bytes: int  # larger batches go through S3
    sqs_batch_max_entries: int  # messages per SendMessageBatch
    sqs_batch_max_bytes: int  # bytes per SendMessageBatch
    sqs_receive_max_messages: int  # messages per ReceiveMessage / DeleteMessageBatch
    load_max_messages: int  # messages one load takes at most
    loop_max_wait_seconds: int  # the loop's long poll while its queue is empty
    duplicate_check: Schedule
    key_retention_days: int  # the loader store keeps keys this many days of load time
    bigquery_streams_per_hour: int  # the loop spaces BigQuery loads to create at most these
    health_interval_seconds: int = 30  # the health sensor reads both queues' depths this often
    health_cloudwatch_every_seconds: int = 0  # its GetMetricData (3 metrics); 0: not enabled

    def as_json(self) -> dict[str, Any]:
        facts = {f.name: getattr(self, f.name) for f in fields(self)}
        facts["duplicate_check"] = self.duplicate_check.as_json()
        return facts


@dataclass(frozen=True)
class Item:
    item: str
    monthly_usd: float
    arithmetic: str
    vendor: str  # "AWS", "BigQuery" or "host" (always $0 here: hosts_monthly_usd holds them)
    covers: int = 0  # a free tier: how many items just before it the credit is for

    def as_json(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "monthly_usd": round6(self.monthly_usd),
            "arithmetic": self.arithmetic,
        }


@dataclass(frozen=True)
class Estimate:
    events_per_month: int
    warehouse: str
    items: list[Item]
    hosts_monthly_usd: float
    assumptions: dict[str, Any]

    @property
    def monthly_usd(self) -> float:
        return sum(item.monthly_usd for item in self.items)

    @property
    def per_million_usd(self) -> float:
        return self.monthly_usd / self.events_per_month * 1e6

    def vendor_usd(self, vendor: str) -> float:
        return sum(item.monthly_usd for item in self.items if item.vendor == vendor)

    def net_items(self) -> list[tuple[str, float]]:
        """Each billed item less its share of the free tier that covers it (pro rata)."""
        net: list[list[Any]] = []
        for item in self.items:
            if not item.covers:
                net.append([item.item, item.monthly_usd])
                continue
            covered = net[-item.covers :]
            gross = sum(usd for _, usd in covered)
            for entry in covered:
                entry[1] += item.monthly_usd * (entry[1] / gross if gross else 0)
        return [(name, usd) for name, usd in net]

    def biggest(self, count: int = 3) -> list[tuple[str, float]]:
        """The largest items after free tiers."""
        return sorted(self.net_items(), key=lambda pair: -pair[1])[:count]

    def as_json(self) -> dict[str, Any]:
        return {
            "events_per_month": self.events_per_month,
            "monthly_usd": round6(self.monthly_usd),
            "per_million_usd": round6(self.per_million_usd),
            "hosts_monthly_usd": round6(self.hosts_monthly_usd),
            "items": [item.as_json() for item in self.items],
            "assumptions": self.assumptions,
        }


def round6(value: float) -> float:
    """Dollars and counts in the JSON: six decimals."""
    return round(value, 6)
