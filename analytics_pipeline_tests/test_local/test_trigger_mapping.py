"""The trigger playing a real event source mapping's settings: bounded retries with bisection,
record age, partial batch responses, the batching window, the on-failure destination."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analytics_pipeline import aws
from analytics_pipeline.local.event_source_mapping import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    MappingSettings,
)
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.doubles import (
    KinesisShardDouble,
    RecordingHandler,
    shard_settings,
)

DESTINATION = "arn:aws:sqs:us-east-1:123456789012:analytics-ingest-failures"
# An entry as ListEventSourceMappings returns it for the template's mapping.
TEMPLATE_MAPPING = {
    "UUID": "fa8a849e-54f7-4b35-9954-3284681cb958",
    "StartingPosition": "TRIM_HORIZON",
    "BatchSize": 1000,
    "MaximumBatchingWindowInSeconds": 1,
    "ParallelizationFactor": 1,
    "EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/analytics-events",
    "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:analytics-ingest",
    "State": "Enabled",
    "DestinationConfig": {"OnFailure": {"Destination": DESTINATION}},
    "MaximumRecordAgeInSeconds": 86400,
    "BisectBatchOnFunctionError": True,
    "MaximumRetryAttempts": 10,
    "FunctionResponseTypes": ["ReportBatchItemFailures"],
}


class PoisonHandler:
    """Raises for every batch holding the poison sequence number; records what it handled."""

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.invocations: list[list[str]] = []
        self.handled: list[str] = []

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        sequences = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        self.invocations.append(sequences)
        if self.poison in sequences:
            raise RuntimeError("poison record")
        self.handled += sequences
        return {"batchItemFailures": []}


def _trigger(
    tmp_path: Path, kinesis: KinesisShardDouble, handler: Any, mapping: MappingSettings
) -> tuple[KinesisTrigger, list[tuple[str, Mapping[str, Any]]]]:
    sent: list[tuple[str, Mapping[str, Any]]] = []
    trigger = KinesisTrigger(
        shard_settings(tmp_path),
        handler=handler,
        kinesis=kinesis,
        retry_base_seconds=0.001,
        mapping=mapping,
        send_to_destination=lambda arn, record: sent.append((arn, record)),
    )
    return trigger, sent


def test_a_mapping_entry_becomes_the_settings_the_trigger_plays(tmp_path: Path) -> None:
    played = MappingSettings.from_mapping(TEMPLATE_MAPPING)
    assert played == MappingSettings(
        batch_size=1000,
        batching_window_seconds=1.0,
        maximum_retry_attempts=10,
        maximum_record_age_seconds=86400,
        bisect_on_function_error=True,
        report_batch_item_failures=True,
        on_failure_destination=DESTINATION,
        parallelization_factor=1,
        function_arn=TEMPLATE_MAPPING["FunctionArn"],
        mapping_id=TEMPLATE_MAPPING["UUID"],
    )
    # Absent fields are Lambda's defaults: retry forever, no partial batch responses.
    bare = MappingSettings.from_mapping({"UUID": "u", "BatchSize": 100})
    assert (bare.maximum_retry_attempts, bare.maximum_record_age_seconds) == (-1, -1)
    assert not bare.report_batch_item_failures and not bare.bisect_on_function_error
    # A test double for Kinesis means no mapping lookup: the local defaults.
    trigger = KinesisTrigger(
        shard_settings(tmp_path, 7), handler=RecordingHandler(), kinesis=KinesisShardDouble([])
    )
    assert trigger.mapping == MappingSettings(batch_size=7)


def test_bisection_isolates_a_poison_record_and_only_it_goes_to_the_destination(
    tmp_path: Path,
) -> None:
    kinesis = KinesisShardDouble([b"{}"] * 8)
    handler = PoisonHandler(poison="3")
    mapping = MappingSettings(
        batch_size=8,
        maximum_retry_attempts=4,
        bisect_on_function_error=True,
        on_failure_destination=DESTINATION,
    )
    trigger, sent = _trigger(tmp_path, kinesis, handler, mapping)
    trigger.run_until_idle(timeout=10)

    assert handler.invocations[:4] == [
        [str(n) for n in range(1, 9)],  # the whole batch fails
        ["1", "2", "3", "4"],  # halved
        ["1", "2"],  # succeeds
        [str(n) for n in range(3, 9)],  # the rest, whole again
    ]
    assert sorted(handler.handled, key=int) == ["1", "2", "4", "5", "6", "7", "8"]
    assert len(sent) == 1
    arn, record = sent[0]
    assert arn == DESTINATION
    assert record["requestContext"]["condition"] == RETRY_ATTEMPTS_EXHAUSTED
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        "3",
        "3",
        1,
    )
    assert trigger.checkpoints.get("shardId-000000000000") == "8"


def test_without_bisect_the_whole_batch_is_given_up_after_its_retries(tmp_path: Path) -> None:
    kinesis = KinesisShardDouble([b"{}"] * 6)
    handler = PoisonHandler(poison="2")
    mapping = MappingSettings(
        batch_size=4, maximum_retry_attempts=2, on_failure_destination=DESTINATION
    )
    trigger, sent = _trigger(tmp_path, kinesis, handler, mapping)
    trigger.run_until_idle(timeout=10)

    assert handler.invocations[:3] == [["1", "2", "3", "4"]] * 3  # first try + 2 retries
    assert [
        (r["KinesisBatchInfo"]["startSequenceNumber"], r["KinesisBatchInfo"]["endSequenceNumber"])
        for _, r in sent
    ] == [("1", "4")]
    assert handler.handled == ["5", "6"]


def test_records_older_than_the_maximum_age_skip_the_handler(tmp_path: Path) -> None:
    kinesis = KinesisShardDouble([b"{}"] * 3)  # arrived on 2026-11-29
    handler = RecordingHandler()
    mapping = MappingSettings(
        batch_size=10, maximum_record_age_seconds=60, on_failure_destination=DESTINATION
    )
    trigger, sent = _trigger(tmp_path, kinesis, handler, mapping)
    trigger.run_until_idle(timeout=10)
    assert handler.invocations == []
    assert [r["requestContext"]["condition"] for _, r in sent] == [RECORD_AGE_EXCEEDED]
    assert sent[0][1]["KinesisBatchInfo"]["batchSize"] == 3


def test_without_report_batch_item_failures_a_partial_answer_counts_as_success(
    tmp_path: Path,
) -> None:
    kinesis = KinesisShardDouble([b"{}"] * 4)
    handler = RecordingHandler(script=[1])
    mapping = MappingSettings(batch_size=4, report_batch_item_failures=False)
    trigger, sent = _trigger(tmp_path, kinesis, handler, mapping)
    trigger.run_until_idle(timeout=10)
    assert handler.invocations == [["1", "2", "3", "4"]]
    assert trigger.checkpoints.get("shardId-000000000000") == "4"
    assert sent == []


def test_the_batching_window_gathers_records_into_one_invocation(
    pipeline_settings: Settings,
) -> None:
    kinesis = aws.client("kinesis", pipeline_settings)
    handler = RecordingHandler()
    trigger = KinesisTrigger(
        pipeline_settings,
        handler=handler,
        mapping=MappingSettings(batch_size=100, batching_window_seconds=4.0),  # loaded-box slack
    )
    kinesis.put_record(StreamName=pipeline_settings.stream_name, Data=b"{}", PartitionKey="k")
    trigger.poll_once()
    assert handler.invocations == []  # held: less than a batch, younger than the window
    for _ in range(3):
        kinesis.put_record(StreamName=pipeline_settings.stream_name, Data=b"{}", PartitionKey="k")
    trigger.run_until_idle(timeout=20)
    assert [len(batch) for batch in handler.invocations] == [4]
