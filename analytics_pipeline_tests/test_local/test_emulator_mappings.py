"""A Kinesis event source mapping in the emulator: kept as configuration, never invoked (moto
would try Docker on every put), and played by the local trigger with its own settings."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from analytics_pipeline import aws
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.emulator import start_emulator
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.doubles import RecordingHandler
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import free_port


def _function_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def test_a_mapping_never_invokes_and_the_trigger_plays_its_settings(tmp_path: Path) -> None:
    emulator = start_emulator(free_port(), tmp_path / "emulator.log")
    try:
        settings = Settings.from_env(unique_settings_env(emulator.endpoint_url, tmp_path))
        resources = ensure_resources(settings)
        role = aws.client("iam", settings).create_role(
            RoleName="ingest",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        lambda_client = aws.client("lambda", settings)
        lambda_client.create_function(
            FunctionName="ingest",
            Runtime="python3.11",
            Role=role,
            Handler="index.handler",
            Code={"ZipFile": _function_zip()},
        )
        mapping = lambda_client.create_event_source_mapping(
            EventSourceArn=resources.stream_arn,
            FunctionName="ingest",
            StartingPosition="TRIM_HORIZON",
            BatchSize=2,
            MaximumRetryAttempts=3,
            BisectBatchOnFunctionError=True,
            FunctionResponseTypes=["ReportBatchItemFailures"],
        )
        kinesis = aws.client("kinesis", settings)
        for _ in range(5):  # one partition key: one shard
            kinesis.put_record(StreamName=settings.stream_name, Data=b"{}", PartitionKey="k")

        handler = RecordingHandler()
        trigger = KinesisTrigger(settings, handler=handler)
        trigger.run_until_idle(timeout=30)
    finally:
        emulator.stop()

    log = (tmp_path / "emulator.log").read_text(errors="replace")
    assert "POST / HTTP" in log  # the calls reached this emulator
    assert "docker" not in log.lower()
    assert trigger.mapping is not None
    assert trigger.mapping.mapping_id == mapping["UUID"]
    assert (trigger.mapping.batch_size, trigger.mapping.maximum_retry_attempts) == (2, 3)
    assert trigger.mapping.bisect_on_function_error
    handled = [s for batch in handler.invocations for s in batch]
    assert len(handled) == len(set(handled)) == 5  # every record once
    assert max(len(batch) for batch in handler.invocations) == 2
