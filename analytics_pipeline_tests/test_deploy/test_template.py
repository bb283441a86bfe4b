"""The CloudFormation template: cfn-lint clean, and what neither cfn-lint nor moto checks.

moto's CloudFormation drops lifecycle rules and public access blocks and skips alarms, and
cfn-lint checks shapes, not intent: so the parsed template is held to the code here. The IAM
statements must equal deploy/iam/*.json (with the default names, any region and account), the
queue and mapping settings must be the ones the code relies on, and every prefix the pipeline
writes must have a lifecycle rule.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import cfnlint.api
import pytest
import yaml
from cfnlint.decode import cfn_yaml

from analytics_pipeline.contract.batches import s3_key
from analytics_pipeline.cost.model import Assumptions
from analytics_pipeline.loader.failures import FAILURES_AREA
from analytics_pipeline.local.bootstrap import SQS_MAX_MESSAGE_BYTES, SQS_MAX_RETENTION_SECONDS
from analytics_pipeline.settings import SETTINGS_DOC, Settings

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO / "deploy" / "cloudformation" / "pipeline.yaml"
IAM = REPO / "deploy" / "iam"
DAGSTER_YAML = REPO / "deploy" / "dagster" / "dagster.yaml"
HANDLER = "analytics_pipeline.ingest.handler.handler"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE_PATH))


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def _default(template: dict[str, Any], parameter: str) -> Any:
    return template["Parameters"][parameter]["Default"]


def _resolve(template: dict[str, Any], value: Any) -> Any:
    """Parameters at their defaults, any region and account: the form deploy/iam/ is written in."""
    pseudo = {"AWS::Region": "*", "AWS::AccountId": "*", "AWS::Partition": "aws"}

    def lookup(name: str) -> str:
        return pseudo[name] if name in pseudo else str(_default(template, name))

    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        return re.sub(r"\$\{([^}]+)\}", lambda m: lookup(m.group(1)), value["Fn::Sub"])
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return lookup(value["Ref"])
    if isinstance(value, dict):
        return {key: _resolve(template, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(template, item) for item in value]
    return value


def _normalised(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def listed(value: Any) -> list[Any]:
        return sorted(value) if isinstance(value, list) else [value]

    return sorted(
        (
            {**s, "Action": listed(s["Action"]), "Resource": listed(s["Resource"])}
            for s in statements
        ),
        key=lambda s: s["Sid"],
    )


# Informational only: asks for an AI-oriented "Context" metadata block.
IGNORED_LINT_RULES = {"I4010"}


def test_cfn_lint_passes() -> None:
    """Errors, warnings and informational rules (e.g. stateful resources must say what a stack
    delete does to them)."""
    matches = cfnlint.api.lint_all(TEMPLATE_PATH.read_text())
    assert [str(m) for m in matches if m.rule.id not in IGNORED_LINT_RULES] == []


def test_iam_statements_equal_the_policy_files(template: dict[str, Any]) -> None:
    policies: dict[str, list[dict[str, Any]]] = {}
    for properties in _resources(template, "AWS::IAM::Role").values():
        for policy in properties.get("Policies", []):
            policies[policy["PolicyName"]] = policy["PolicyDocument"]["Statement"]
    for properties in _resources(template, "AWS::IAM::ManagedPolicy").values():
        policies["operator-replay-policy"] = properties["PolicyDocument"]["Statement"]

    files = {path.stem: json.loads(path.read_text()) for path in sorted(IAM.glob("*.json"))}
    assert set(policies) == set(files)
    for name, statements in policies.items():
        assert _normalised(_resolve(template, statements)) == _normalised(
            files[name]["Statement"]
        ), name


def _trusted_services(role: dict[str, Any]) -> set[str]:
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    services = statement["Principal"]["Service"]
    return set(services) if isinstance(services, list) else {services}


def test_each_identity_has_its_own_role(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    loader = resources["LoaderRole"]["Properties"]
    assert {p["PolicyName"] for p in loader["Policies"]} == {
        "dagster-loader-policy",
        "dagster-instance-policy",
    }
    function = resources["IngestFunction"]["Properties"]
    assert function["Role"] == {"Fn::GetAtt": ["IngestFunctionRole", "Arn"]}
    assert _trusted_services(resources["IngestFunctionRole"]["Properties"]) == {
        "lambda.amazonaws.com"
    }
    # The collector's tasks put records and nothing else: a role of their own, ECS tasks only.
    collector = resources["CollectorTaskRole"]["Properties"]
    assert [p["PolicyName"] for p in collector["Policies"]] == ["collector-policy"]
    assert _trusted_services(collector) == {"ecs-tasks.amazonaws.com"}


def test_names_default_to_the_settings_defaults(template: dict[str, Any]) -> None:
    assert _default(template, "StreamName") == SETTINGS_DOC["ANALYTICS_STREAM_NAME"][0]
    assert _default(template, "QueueName") == SETTINGS_DOC["ANALYTICS_QUEUE_NAME"][0]
    assert _default(template, "BucketName") == SETTINGS_DOC["ANALYTICS_BUCKET"][0]
    assert (
        str(_default(template, "MaxReceiveCount"))
        == SETTINGS_DOC["ANALYTICS_QUEUE_MAX_RECEIVES"][0]
    )
    queues = _resources(template, "AWS::SQS::Queue")
    # The code finds the dead-letter queue as `<queue>-dlq` (Settings.dlq_name).
    settings = Settings.from_env({"ANALYTICS_QUEUE_NAME": _default(template, "QueueName")})
    assert _resolve(template, queues["DeadLetterQueue"]["QueueName"]) == settings.dlq_name


def test_queues_take_1_mib_messages_and_redrive_to_the_dlq(template: dict[str, Any]) -> None:
    queues = _resources(template, "AWS::SQS::Queue")
    for name in ("BatchQueue", "DeadLetterQueue"):
        assert queues[name]["MaximumMessageSize"] == SQS_MAX_MESSAGE_BYTES
        assert queues[name]["MessageRetentionPeriod"] == SQS_MAX_RETENTION_SECONDS
    assert queues["BatchQueue"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert all(q.get("SqsManagedSseEnabled") for q in queues.values())


def test_the_queue_hides_a_batch_as_long_as_the_load_loop_does(template: dict[str, Any]) -> None:
    """The loop receives with ANALYTICS_SQS_VISIBILITY_SECONDS (a load is seconds, not a run's
    lifetime): the queue's default is the same, and the stack tells Dagster that value."""
    queue = _resources(template, "AWS::SQS::Queue")["BatchQueue"]
    assert queue["VisibilityTimeout"] == {"Ref": "VisibilityTimeoutSeconds"}
    visibility = _default(template, "VisibilityTimeoutSeconds")
    assert str(visibility) == SETTINGS_DOC["ANALYTICS_SQS_VISIBILITY_SECONDS"][0]
    environment = template["Outputs"]["DagsterEnvironment"]["Value"]["Fn::Sub"]
    assert "ANALYTICS_SQS_VISIBILITY_SECONDS=${VisibilityTimeoutSeconds}" in environment


def test_the_loader_store_lives_on_a_named_local_disk(template: dict[str, Any]) -> None:
    """ANALYTICS_LOADER_STATE_DIR's default is under ANALYTICS_STATE_DIR, relative to the
    working directory (gone with a container): the stack names an absolute path for the code
    server host's EBS volume."""
    environment = template["Outputs"]["DagsterEnvironment"]["Value"]["Fn::Sub"]
    assert "ANALYTICS_LOADER_STATE_DIR=${LoaderStateDir}" in environment
    path = _default(template, "LoaderStateDir")
    assert (
        Path(path).is_absolute()
        and not Path(SETTINGS_DOC["ANALYTICS_LOADER_STATE_DIR"][0]).is_absolute()
    )
    description = template["Parameters"]["LoaderStateDir"]["Description"]
    assert "EBS" in description and "NFS" in description


def test_the_mapping_bounds_retries_and_keeps_what_it_gives_up(template: dict[str, Any]) -> None:
    (mapping,) = _resources(template, "AWS::Lambda::EventSourceMapping").values()
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["Stream", "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": ["IngestFailureQueue", "Arn"]}}
    }
    settings = {
        "BatchSize": 1000,
        "MaximumBatchingWindowInSeconds": 1,
        "ParallelizationFactor": 1,
        "MaximumRetryAttempts": 10,
        "MaximumRecordAgeInSeconds": 6 * 3600,
    }
    for key, expected in settings.items():  # parameters whose defaults are the documented ones
        assert mapping[key] == {"Ref": key}
        assert _default(template, key) == expected, key
    assert _default(template, "MaximumRetryAttempts") >= 0  # never -1 (forever)
    # The on-failure message names a range only: the records must outlive the record age by
    # the 18 h analytics_pipeline/ingest/__init__.py promises, at the retention the cost prices.
    retention_hours = _default(template, "StreamRetentionHours")
    assert retention_hours == Assumptions().kinesis_retention_hours == 24
    assert retention_hours * 3600 - _default(template, "MaximumRecordAgeInSeconds") >= 18 * 3600
    # A full batch of 1 MiB records would not fit Lambda's 6 MB payload; typical 2-4 kB blobs do.
    assert _default(template, "BatchSize") * 4096 * 4 // 3 < 6 * 1024 * 1024


def test_the_function_runs_the_packaged_handler(template: dict[str, Any]) -> None:
    function = template["Resources"]["IngestFunction"]["Properties"]
    assert function["Handler"] == HANDLER
    assert function["Runtime"] == "python3.11"
    assert function["Timeout"] == 60
    assert function["Environment"]["Variables"]["AWS_ENDPOINT_URL"] == ""
    assert function["Architectures"] == [{"Ref": "LambdaArchitecture"}]
    assert template["Parameters"]["LambdaArchitecture"]["AllowedValues"] == ["x86_64", "arm64"]


def test_the_stream_mode_is_a_parameter(template: dict[str, Any]) -> None:
    stream = template["Resources"]["Stream"]["Properties"]
    assert stream["StreamModeDetails"] == {"StreamMode": {"Ref": "StreamMode"}}
    assert set(template["Parameters"]["StreamMode"]["AllowedValues"]) == {
        "ON_DEMAND",
        "PROVISIONED",
    }
    assert stream["ShardCount"] == {
        "Fn::If": ["IsProvisioned", {"Ref": "ShardCount"}, {"Ref": "AWS::NoValue"}]
    }


def _prefixes_the_pipeline_writes() -> set[str]:
    oversize = inspect.signature(s3_key).parameters["area"].default
    compute_logs = yaml.safe_load(DAGSTER_YAML.read_text())["compute_logs"]["config"]["prefix"]
    return {f"{area}/" for area in (oversize, FAILURES_AREA, compute_logs)}


def test_every_prefix_the_pipeline_writes_expires(template: dict[str, Any]) -> None:
    # Every S3 key the code builds comes from one of these areas (nothing is staged any more).
    code = "\n".join(p.read_text() for p in (REPO / "analytics_pipeline").rglob("*.py"))
    assert not re.findall(r"area=(\w+)", code)
    assert "staging/" not in TEMPLATE_PATH.read_text()
    bucket = _resources(template, "AWS::S3::Bucket")["Bucket"]
    rules = bucket["LifecycleConfiguration"]["Rules"]
    by_prefix = {rule["Prefix"]: rule for rule in rules}
    assert set(by_prefix) == _prefixes_the_pipeline_writes()
    for prefix, rule in by_prefix.items():
        assert rule["Status"] == "Enabled", prefix
        # Not before the SQS message that points at it can have expired (14 days).
        assert rule["ExpirationInDays"] * 86400 >= SQS_MAX_RETENTION_SECONDS, prefix


def test_stateful_resources_survive_a_stack_delete(template: dict[str, Any]) -> None:
    for name in ("Stream", "BatchQueue", "DeadLetterQueue", "IngestFailureQueue", "Bucket"):
        resource = template["Resources"][name]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain",) * 2


def test_the_bucket_is_private_and_encrypted(template: dict[str, Any]) -> None:
    bucket = _resources(template, "AWS::S3::Bucket")["Bucket"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    (encryption,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    (policy,) = _resources(template, "AWS::S3::BucketPolicy").values()
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }


# (namespace, metric) -> (the resource its dimension names, statistic)
EXPECTED_ALARMS = {
    ("AWS/Lambda", "IteratorAge"): ("IngestFunction", "Maximum"),
    ("AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds"): ("Stream", "Maximum"),
    ("AWS/Lambda", "Errors"): ("IngestFunction", "Sum"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): None,  # two queues, below
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"): ("BatchQueue", "Maximum"),
}


def _dimension_target(dimension_value: Any) -> str:
    if "Ref" in dimension_value:
        return dimension_value["Ref"]
    return dimension_value["Fn::GetAtt"][0]


def test_alarms_watch_every_place_events_can_pile_up(template: dict[str, Any]) -> None:
    alarms = _resources(template, "AWS::CloudWatch::Alarm").values()
    seen: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for alarm in alarms:
        (dimension,) = alarm["Dimensions"]
        key = (alarm["Namespace"], alarm["MetricName"])
        seen.setdefault(key, []).append((_dimension_target(dimension["Value"]), alarm["Statistic"]))
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert "README" in alarm["AlarmDescription"]  # the runbook says what to do
    assert set(seen) == set(EXPECTED_ALARMS)
    for key, expected in EXPECTED_ALARMS.items():
        if expected is not None:
            assert seen[key] == [expected], key
    depth = sorted(target for target, _ in seen[("AWS/SQS", "ApproximateNumberOfMessagesVisible")])
    assert depth == ["DeadLetterQueue", "IngestFailureQueue"]


def test_outputs_name_what_the_dagster_side_needs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    for name in (
        "Region",
        "StreamName",
        "StreamArn",
        "QueueName",
        "QueueUrl",
        "DeadLetterQueueName",
        "DeadLetterQueueUrl",
        "IngestFailureQueueUrl",
        "BucketName",
        "LoaderRoleArn",
        "LoaderInstanceProfileName",
        "CollectorTaskRoleArn",
        "OperatorReplayPolicyArn",
        "AlarmTopicArn",
        "DagsterEnvironment",
    ):
        assert name in outputs, name
    environment = outputs["DagsterEnvironment"]["Value"]["Fn::Sub"].split()
    variables = {item.split("=", 1)[0] for item in environment}
    assert variables == {
        "AWS_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
        "ANALYTICS_STREAM_NAME",
        "ANALYTICS_QUEUE_NAME",
        "ANALYTICS_BUCKET",
        "ANALYTICS_QUEUE_MAX_RECEIVES",
        "ANALYTICS_SQS_VISIBILITY_SECONDS",
        "ANALYTICS_LOADER_STATE_DIR",
    }
    assert variables <= set(SETTINGS_DOC)


def test_the_runbook_says_what_to_do_for_every_alarm(template: dict[str, Any]) -> None:
    readme = (REPO / "README.md").read_text()
    runbook = readme[readme.index("## Production") :]
    runbook = runbook[: runbook.index("\n## ", 1)]
    rows = {line.split("|")[1].strip() for line in runbook.splitlines() if line.startswith("| `")}
    alarms = {f"`{name}`" for name in _resources(template, "AWS::CloudWatch::Alarm")}
    assert {row.split(" ")[0] for row in rows} >= alarms
