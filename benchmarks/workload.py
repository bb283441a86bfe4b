"""The one generated workload every benchmark measures: realistic client blobs, as Kinesis saw them.

Blobs are encoded by the SDK's own wire encoder (`client.encoding.encode_blob`, gzip), carry a few
to a few hundred events each (a long-tailed size: most devices flush small blobs, some flush
hundreds of events after being offline), ~500 bytes per event with nested properties, a blob
context and sometimes an event-level context. Events come from the contract bench's generator so
the parser bench and these benchmarks measure the same shape of data.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analytics_pipeline.client.encoding import encode_blob, encode_json
from analytics_pipeline.local.trigger import kinesis_event_record, split_by_payload
from analytics_pipeline_testkit.blobs import REALISTIC_RECEIVED_AT as RECEIVED_AT
from analytics_pipeline_testkit.blobs import realistic_event

REPO_ROOT = Path(__file__).resolve().parent.parent

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/analytics-events"
SHARD_ID = "shardId-000000000000"
MIN_BLOB_EVENTS = 2
MAX_BLOB_EVENTS = 400
MEDIAN_BLOB_EVENTS = 40


@dataclass(frozen=True)
class Workload:
    blobs: list[bytes]  # gzip, exactly as a client puts them on the stream
    event_counts: list[int]  # events in each blob

    @property
    def events(self) -> int:
        return sum(self.event_counts)


def blob_sizes(total_events: int, rng: random.Random) -> Iterator[int]:
    """Log-normal blob sizes between MIN and MAX events (median MEDIAN), summing to the total."""
    made = 0
    while made < total_events:
        drawn = int(rng.lognormvariate(math.log(MEDIAN_BLOB_EVENTS), 1.0))
        size = min(max(drawn, MIN_BLOB_EVENTS), MAX_BLOB_EVENTS, total_events - made)
        made += size
        yield size


def realistic_workload(total_events: int, seed: int = 7) -> Workload:
    rng = random.Random(seed)
    blobs, counts = [], []
    sent_at = RECEIVED_AT.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for size in blob_sizes(total_events, rng):
        context = {
            "app": {"name": "demo", "version": "4.2.0", "build": "420"},
            "os": {"name": rng.choice(("iOS", "Android")), "version": "18.1"},
            "device": {"id": str(uuid.UUID(int=rng.getrandbits(128))), "model": "iPhone16,2"},
            "library": {"name": "analytics-pipeline-python", "version": "0.1.0"},
        }
        events = [encode_json(realistic_event(rng, rng.random() < 0.1)) for _ in range(size)]
        blobs.append(encode_blob(sent_at, encode_json(context), events, compress=True))
        counts.append(size)
    return Workload(blobs, counts)


def lambda_events(
    blobs: Sequence[bytes], records_per_invocation: int = 1_000, arrival: datetime = RECEIVED_AT
) -> list[dict[str, Any]]:
    """The Kinesis events Lambda (or the local trigger) would hand the handler for these blobs."""
    records = [
        {
            "SequenceNumber": str(49_000_000_000 + index),
            "PartitionKey": str(index % 100),
            "Data": blob,
            "ApproximateArrivalTimestamp": arrival.astimezone(UTC),
        }
        for index, blob in enumerate(blobs)
    ]
    events = []
    for start in range(0, len(records), records_per_invocation):
        for chunk in split_by_payload(records[start : start + records_per_invocation]):
            events.append(
                {
                    "Records": [
                        kinesis_event_record(record, SHARD_ID, STREAM_ARN, "us-east-1")
                        for record in chunk
                    ]
                }
            )
    return events


def invocations_of_about(workload: Workload, events_per_invocation: int) -> list[list[bytes]]:
    """Consecutive blobs grouped so each invocation carries about `events_per_invocation`."""
    groups: list[list[bytes]] = [[]]
    in_group = 0
    for blob, count in zip(workload.blobs, workload.event_counts, strict=True):
        if in_group and in_group + count > events_per_invocation:
            groups.append([])
            in_group = 0
        groups[-1].append(blob)
        in_group += count
    return groups
