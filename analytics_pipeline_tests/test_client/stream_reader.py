"""Read a whole Kinesis stream back over the wire (GetShardIterator + GetRecords per shard)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StoredRecord:
    shard_id: str
    partition_key: str
    data: bytes
    arrived_at: datetime


def read_stream(kinesis: Any, stream_name: str) -> list[StoredRecord]:
    records: list[StoredRecord] = []
    shards = kinesis.list_shards(StreamName=stream_name)["Shards"]
    for shard in shards:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(
                StoredRecord(
                    shard["ShardId"],
                    record["PartitionKey"],
                    record["Data"],
                    record["ApproximateArrivalTimestamp"],
                )
                for record in page["Records"]
            )
            if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return records
