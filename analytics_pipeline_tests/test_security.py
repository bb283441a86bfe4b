"""Security basics: loopback-only servers, least-privilege IAM that matches the code, no secrets.

The `dagster dev` side of the bind check runs where dagster is already up:
`e2e/test_catalogue_e2e.py` (which also checks that no credential reaches a log or state file).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

from analytics_pipeline.local.emulator import start_emulator
from analytics_pipeline.local.stack import dagster_dev_command
from analytics_pipeline_testkit.processes import (
    free_port,
    is_loopback,
    listening_addresses,
    wait_for,
)

REPO = Path(__file__).resolve().parents[1]
IAM = REPO / "deploy" / "iam"

# boto3 method -> the IAM action it needs (SendMessageBatch is authorised as SendMessage, etc.).
IAM_ACTION = {
    "get_queue_url": "sqs:GetQueueUrl",
    "get_queue_attributes": "sqs:GetQueueAttributes",
    "send_message": "sqs:SendMessage",
    "send_message_batch": "sqs:SendMessage",
    "receive_message": "sqs:ReceiveMessage",
    "delete_message": "sqs:DeleteMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "put_object": "s3:PutObject",
    "get_object": "s3:GetObject",
    "delete_object": "s3:DeleteObject",
    "start_message_move_task": "sqs:StartMessageMoveTask",
    "list_message_move_tasks": "sqs:ListMessageMoveTasks",
    "get_metric_data": "cloudwatch:GetMetricData",
}
BOTO_CALL = re.compile(r"\b(sqs|s3|kinesis|cloudwatch)\.([a-z_]+)\(")
# Actions AWS grants on no resource but "*" (CloudWatch metrics have no ARNs to name).
RESOURCELESS_ACTIONS = {"cloudwatch:GetMetricData"}
# What runs under each identity: the code whose boto3 calls it must allow.
CODE_OF = {
    "lambda-ingest-policy.json": ["analytics_pipeline/ingest"],
    # The load loop and the on-demand `events` asset (defs/), through BatchQueue's methods.
    "dagster-loader-policy.json": [
        "analytics_pipeline/loader/loop.py",
        "analytics_pipeline/loader/load.py",
        "analytics_pipeline/loader/failures.py",
        "analytics_pipeline/loader/health.py",
        "analytics_pipeline/defs/ingest",
        "analytics_pipeline/defs/aggregates",
        "analytics_pipeline/defs/resources.py",
    ],
    # The operations jobs (replays, redrive) run as the operator (see defs/operations/jobs.py).
    "operator-replay-policy.json": [
        "analytics_pipeline/defs/operations",
        "analytics_pipeline/loader/replay.py",
        "analytics_pipeline/loader/failures.py",
        "analytics_pipeline/cli.py",
        "analytics_pipeline/ingest/sinks.py",  # replay sends through the Lambda's sink
    ],
    "dagster-instance-policy.json": [],  # Dagster's own S3 use, below
}
# Not called by our code but needed by the identity: the Lambda's event source mapping reads
# Kinesis and writes its on-failure destination under the function's role; Lambda writes logs.
PLATFORM_ACTIONS = {
    "lambda-ingest-policy.json": {
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:ListShards",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    },
    # dagster-aws's S3ComputeLogManager (deploy/dagster/dagster.yaml): upload, download, head,
    # list and delete of compute logs.
    "dagster-instance-policy.json": {
        "s3:DeleteObject",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:PutObject",
    },
}


BATCH_QUEUE = REPO / "analytics_pipeline" / "loader" / "batch_queue.py"


def batch_queue_method_calls() -> dict[str, set[str]]:
    """BatchQueue method -> the boto3 calls it makes, itself or through its other methods.

    Code outside batch_queue.py talks to SQS through `BatchQueue`, so an identity that runs
    it needs what the methods it calls need (and not what the other methods need).
    """
    tree = ast.parse(BATCH_QUEUE.read_text())
    (queue_class,) = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "BatchQueue"
    ]
    source = BATCH_QUEUE.read_text()
    direct: dict[str, set[str]] = {}
    uses: dict[str, set[str]] = {}
    for method in queue_class.body:
        if isinstance(method, ast.FunctionDef):
            text = ast.get_source_segment(source, method) or ""
            direct[method.name] = {m.group(2) for m in BOTO_CALL.finditer(text)}
            uses[method.name] = set(re.findall(r"\b(?:self|cls)\.([a-z_]+)\(", text))
    calls = {name: set(found) for name, found in direct.items()}
    changed = True
    while changed:  # close over methods calling methods
        changed = False
        for name, used in uses.items():
            for other in used & set(calls):
                if not calls[other] <= calls[name]:
                    calls[name] |= calls[other]
                    changed = True
    return calls


def actions_called_by(paths: list[str]) -> set[str]:
    files: list[Path] = []
    for path in paths:
        target = REPO / path
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    calls = {m.group(2) for file in files for m in BOTO_CALL.finditer(file.read_text())}
    if BATCH_QUEUE not in files:
        methods = batch_queue_method_calls()
        texts = "\n".join(file.read_text() for file in files)
        for name in set(re.findall(r"\.([a-z_]+)\(", texts)) & set(methods):
            calls |= methods[name]
    unknown = calls - set(IAM_ACTION)
    assert not unknown, f"boto3 calls without an IAM mapping in this test: {unknown}"
    return {IAM_ACTION[call] for call in calls}


@pytest.mark.parametrize("policy_file", sorted(CODE_OF))
def test_each_policy_names_exactly_the_actions_its_code_calls(policy_file: str) -> None:
    policy = json.loads((IAM / policy_file).read_text())
    assert policy["Version"] == "2012-10-17"
    granted: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        resources = statement["Resource"]
        actions = [actions] if isinstance(actions, str) else actions
        for resource in [resources] if isinstance(resources, str) else resources:
            if set(actions) <= RESOURCELESS_ACTIONS:
                assert resource == "*", resource
            else:
                assert resource != "*" and resource.startswith("arn:aws:"), resource
        for action in actions:
            assert "*" not in action, action
            granted.add(action)
    expected = actions_called_by(CODE_OF[policy_file]) | PLATFORM_ACTIONS.get(policy_file, set())
    assert granted == expected


def test_the_loader_cannot_send_and_the_lambda_cannot_read_bodies() -> None:
    loader = (IAM / "dagster-loader-policy.json").read_text()
    lambda_policy = (IAM / "lambda-ingest-policy.json").read_text()
    assert "sqs:SendMessage" not in loader
    assert "s3:GetObject" not in lambda_policy and "sqs:ReceiveMessage" not in lambda_policy


SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key assignment": re.compile(
        r"(?i)secret_access_key['\"]?\s*[:=]\s*['\"][A-Za-z0-9/+]{40}['\"]"
    ),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
}


def test_no_secret_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    findings = []
    for name in filter(None, tracked):
        path = REPO / name.decode()
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        text = path.read_text(errors="ignore")
        findings += [
            f"{name.decode()}: {what}"
            for what, pattern in SECRET_PATTERNS.items()
            if pattern.search(text)
        ]
    assert not findings


def test_the_emulator_listens_on_loopback_only(tmp_path: Path) -> None:
    emulator = start_emulator(free_port(), tmp_path / "emulator.log")
    try:
        addresses = wait_for(
            lambda: listening_addresses(emulator.pid),
            timeout=60,
            interval=0.2,
            what="the emulator's listening socket",
        )
    finally:
        emulator.stop()
    assert addresses and all(is_loopback(address) for address, _ in addresses), addresses


def test_dagster_dev_is_started_on_loopback() -> None:
    command = dagster_dev_command(3000)
    assert command[command.index("--host") + 1] == "127.0.0.1"
