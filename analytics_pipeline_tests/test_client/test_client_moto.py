"""The client against the real wire protocol: a moto server over HTTP, read back with GetRecords."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from analytics_pipeline.client import Client
from analytics_pipeline.client.client import kinesis_client
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.doubles import decode_blob
from analytics_pipeline_testkit.traffic import read_stream


@pytest.mark.e2e
def test_blobs_on_the_stream_decode_to_the_events_sent(pipeline_settings: Settings) -> None:
    kinesis = kinesis_client(pipeline_settings)
    client = Client(pipeline_settings.stream_name, kinesis=kinesis, flush_at=25)
    devices = [client, *(client.device() for _ in range(5))]
    sent: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for index in range(300):
        device = devices[index % len(devices)]
        properties = {"index": index, "nested": {"ok": True}}
        message_id = device.track("Video Recorded", properties)
        sent[message_id] = ("track", device.anonymous_id, properties)
    plain = Client(pipeline_settings.stream_name, kinesis=kinesis, gzip=False)
    sent[plain.screen("Feed")] = ("screen", plain.anonymous_id, {})
    assert client.close(timeout=30) and plain.close(timeout=30)
    assert client.stats.sent == 300 and client.stats.failed == 0

    records = read_stream(kinesis, pipeline_settings.stream_name)
    received: dict[str, tuple[str, str, dict[str, Any]]] = {}
    shards_by_key: dict[str, set[str]] = defaultdict(set)
    for record in records:
        shards_by_key[record.partition_key].add(record.shard_id)
        blob = decode_blob(record.data)
        assert blob["context"]["library"]["name"] == "analytics-pipeline-python"
        for event in blob["batch"]:
            assert event["anonymousId"] == record.partition_key  # a blob is one device's
            received[event["messageId"]] = (
                event["type"],
                event["anonymousId"],
                event["properties"],
            )
    assert received == sent
    assert len(records) >= 300 // 25
    assert all(len(shards) == 1 for shards in shards_by_key.values())  # one device, one shard
    assert any(record.data[:2] != b"\x1f\x8b" for record in records)  # the plain client's blob
