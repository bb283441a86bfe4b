"""deploy/cloudformation/pipeline.yaml deployed into the emulator (moto's CloudFormation over
HTTP), then the pipeline run against the resources its outputs name.

moto creates the stream, the queues with redrive, the roles, the Lambda (code: the package
`make lambda-zip` builds, uploaded to S3) and the event source mapping. The mapping never runs
in the emulator; the local trigger plays it with the settings it reads back from
`ListEventSourceMappings`, so the retries, batch size and window it plays are the template's.
The load loop (`open_loader` / `run_loop`, what the Dagster loop run runs) then takes the
batches into DuckDB with the settings the stack hands Dagster: every valid messageId once.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from analytics_pipeline import aws
from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.loader.loop import open_loader, run_loop
from analytics_pipeline.local.event_source_mapping import MappingSettings
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import open_warehouse
from analytics_pipeline_testkit.traffic import put_mixed_traffic

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "cloudformation" / "pipeline.yaml"


def deploy_stack(endpoint: str, name: str, package: Path) -> dict[str, str]:
    """Upload the package, create the stack, wait for CREATE_COMPLETE; returns its outputs."""
    settings = Settings.from_env({"AWS_ENDPOINT_URL": endpoint})
    s3 = aws.client("s3", settings)
    code_bucket = f"{name}-code"
    s3.create_bucket(Bucket=code_bucket)
    s3.put_object(Bucket=code_bucket, Key="ingest-lambda.zip", Body=package.read_bytes())
    parameters = {
        "CodeBucket": code_bucket,
        "StreamName": name,
        "StreamMode": "PROVISIONED",
        "ShardCount": "2",
        "QueueName": name,
        "FailureQueueName": f"{name}-failures",
        "BucketName": name,
        "FunctionName": name,
    }
    cloudformation = aws.client("cloudformation", settings)
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    deadline = time.monotonic() + 120
    while True:
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}


def settings_from_outputs(outputs: dict[str, str], endpoint: str, base: Path) -> Settings:
    """What a Dagster host is configured with: the DagsterEnvironment output (plus local paths:
    the loader store goes to the test's folder instead of the host's EBS mount)."""
    environment = dict(item.split("=", 1) for item in outputs["DagsterEnvironment"].split())
    assert environment["ANALYTICS_LOADER_STATE_DIR"] == "/var/lib/analytics-pipeline/loader"
    return Settings.from_env(
        {
            **environment,
            "AWS_ENDPOINT_URL": endpoint,  # empty in production: real AWS
            "ANALYTICS_STATE_DIR": str(base / "state"),
            "ANALYTICS_DUCKDB_PATH": str(base / "warehouse.duckdb"),
            "ANALYTICS_LOADER_STATE_DIR": str(base / "loader"),
        }
    )


def _queue_attributes(settings: Settings, url: str) -> dict[str, Any]:
    return aws.client("sqs", settings).get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
        "Attributes"
    ]


def test_the_deployed_stack_carries_events_exactly_once(
    aws_endpoint: str, lambda_zip: Path, tmp_path: Path
) -> None:
    name = f"stack-{uuid.uuid4().hex[:10]}"
    outputs = deploy_stack(aws_endpoint, name, lambda_zip)
    settings = settings_from_outputs(outputs, aws_endpoint, tmp_path)
    assert (settings.stream_name, settings.queue_name, settings.bucket) == (name, name, name)

    # The outputs name real resources, configured as the template says.
    sqs = aws.client("sqs", settings)
    queue_url = sqs.get_queue_url(QueueName=outputs["QueueName"])["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=outputs["DeadLetterQueueName"])["QueueUrl"]
    failures_url = sqs.get_queue_url(QueueName=f"{name}-failures")["QueueUrl"]
    queue = _queue_attributes(settings, queue_url)
    assert queue["MaximumMessageSize"] == "1048576"
    assert queue["VisibilityTimeout"] == str(settings.sqs_visibility_seconds) == "60"
    assert outputs["DeadLetterQueueName"] == settings.dlq_name
    assert f'"maxReceiveCount": {settings.queue_max_receives}' in queue["RedrivePolicy"]
    assert _queue_attributes(settings, dlq_url)["QueueArn"] in queue["RedrivePolicy"]
    function = aws.client("lambda", settings).get_function(FunctionName=outputs["FunctionName"])
    assert function["Configuration"]["Handler"] == "analytics_pipeline.ingest.handler.handler"
    assert function["Configuration"]["CodeSize"] == lambda_zip.stat().st_size
    kinesis = aws.client("kinesis", settings)
    shards = kinesis.list_shards(StreamName=outputs["StreamName"])["Shards"]
    assert len(shards) == 2
    aws.client("s3", settings).head_bucket(Bucket=outputs["BucketName"])

    traffic = put_mixed_traffic(settings, blobs=12)
    trigger = KinesisTrigger(settings)
    (mapping,) = aws.client("lambda", settings).list_event_source_mappings(
        EventSourceArn=outputs["StreamArn"]
    )["EventSourceMappings"]
    assert trigger.mapping == MappingSettings.from_mapping(mapping)
    assert trigger.mapping.mapping_id == outputs["EventSourceMappingId"]
    assert (trigger.mapping.batch_size, trigger.mapping.batching_window_seconds) == (1000, 1.0)
    assert (trigger.mapping.maximum_retry_attempts, trigger.mapping.bisect_on_function_error) == (
        10,
        True,
    )
    assert trigger.mapping.on_failure_destination == outputs["IngestFailureQueueArn"]
    trigger.run_until_idle(timeout=60)

    with open_loader(settings) as loader:
        outcomes = list(run_loop(loader, settings, seconds=5))
    assert outcomes
    assert sum(o.result(BatchKind.EVENTS).rows_inserted for o in outcomes) == len(traffic.valid)
    warehouse = open_warehouse(settings)
    batch_queue = BatchQueue.for_settings(settings)

    events = dict(
        warehouse.query("SELECT message_id, count(*) FROM analytics.events GROUP BY 1").rows
    )
    assert set(events) == set(traffic.valid) and set(events.values()) == {1}
    quarantined = warehouse.query(
        "SELECT message_id FROM analytics.events_quarantine WHERE message_id IS NOT NULL"
    ).rows
    assert sorted(row[0] for row in quarantined) == sorted(traffic.invalid)
    assert batch_queue.depth() == {"visible": 0, "in_flight": 0}
    for url in (dlq_url, failures_url):
        depth = _queue_attributes(settings, url)["ApproximateNumberOfMessages"]
        assert depth == "0", url
