"""The Lambda package: only the handler's modules and run-time wheels, and it works on its own.

Installed into a fresh virtualenv that has boto3 and nothing else (what the python3.11 runtime
offers), the handler imports and turns a real Kinesis event (records read back from the
emulated stream) into batches on the emulated SQS queue.
"""

from __future__ import annotations

import json
import re
import tomllib
import zipfile
from pathlib import Path

from analytics_pipeline import aws
from analytics_pipeline.local.stack import REPO_ROOT
from analytics_pipeline.local.trigger import kinesis_event_record
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.lambda_package import HANDLER_MODULE, run_in_task, unpack
from analytics_pipeline_testkit.traffic import drain_queue, put_mixed_traffic

NOT_IN_THE_PACKAGE = ("dagster", "duckdb", "pandas", "google", "moto", "boto3", "botocore")
PACKAGE_ROOTS = {"analytics_pipeline", "msgspec", "isal"}


def test_the_zip_holds_the_handler_its_modules_and_two_wheels(lambda_zip: Path) -> None:
    with zipfile.ZipFile(lambda_zip) as archive:
        names = archive.namelist()
    roots = {name.split("/", 1)[0] for name in names}
    assert roots - {r for r in roots if r.endswith(".dist-info")} == PACKAGE_ROOTS
    wheels = {r.split("-", 1)[0] for r in roots if r.endswith(".dist-info")}
    assert wheels == {"msgspec", "isal"}
    # The wheels are the core install's dependencies but boto3 (the runtime has it).
    core = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {re.split(r"[<>=\[ ]", requirement)[0] for requirement in core} == wheels | {"boto3"}
    project = {n for n in names if n.startswith("analytics_pipeline/") and n.endswith(".py")}
    folders = {n.rsplit("/", 1)[0] for n in project}
    assert folders == {
        "analytics_pipeline",
        "analytics_pipeline/contract",
        "analytics_pipeline/ingest",
    }
    assert "analytics_pipeline/ingest/handler.py" in project
    # Compiled for the runtime: Lambda cannot write __pycache__ into /var/task.
    assert "analytics_pipeline/ingest/__pycache__/handler.cpython-311.pyc" in names
    assert any(n.startswith("msgspec/_core.cpython-311-x86_64-linux-gnu") for n in names)
    assert not [n for n in names if n.split("/", 1)[0] in NOT_IN_THE_PACKAGE]


HANDLE_EVENTS = f"""
import importlib.util, json, os, sys
import {HANDLER_MODULE} as module
task_root = os.environ["PYTHONPATH"]
events = json.load(open(sys.argv[-1] if len(sys.argv) > 1 else "events.json"))
responses = [module.handler(event, None) for event in events]
missing = {{name: importlib.util.find_spec(name) is None for name in {NOT_IN_THE_PACKAGE[:5]!r}}}
loaded = sorted(
    name for name, m in sys.modules.items()
    if name.startswith(("analytics_pipeline", "msgspec", "isal"))
    and not (getattr(m, "__file__", None) or "").startswith(task_root)
)
print(json.dumps({{"responses": responses, "missing": missing, "outside_task": loaded,
                   "file": module.__file__}}))
"""


def _kinesis_events(settings: Settings) -> list[dict]:
    """The stream's records as Lambda delivers them: one event per shard."""
    kinesis = aws.client("kinesis", settings)
    stream_arn = kinesis.describe_stream_summary(StreamName=settings.stream_name)[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    events = []
    for shard in kinesis.list_shards(StreamName=settings.stream_name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=settings.stream_name,
            ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"]
        if records:
            events.append(
                {
                    "Records": [
                        kinesis_event_record(r, shard["ShardId"], stream_arn, settings.aws_region)
                        for r in records
                    ]
                }
            )
    return events


def test_the_packaged_handler_runs_with_boto3_only(
    lambda_zip: Path, boto3_python: Path, pipeline_settings: Settings, tmp_path: Path
) -> None:
    task_root = unpack(lambda_zip, tmp_path / "task")
    traffic = put_mixed_traffic(pipeline_settings, blobs=6)
    events = _kinesis_events(pipeline_settings)
    assert sum(len(e["Records"]) for e in events) == traffic.records
    (task_root / "events.json").write_text(json.dumps(events))

    outcome = run_in_task(
        boto3_python,
        task_root,
        HANDLE_EVENTS + "\n",
        env={**pipeline_settings.to_env(), "AWS_DEFAULT_REGION": pipeline_settings.aws_region},
    )

    assert outcome["file"].startswith(str(task_root))
    assert outcome["outside_task"] == []
    assert all(outcome["missing"].values()), outcome["missing"]
    assert [r["batchItemFailures"] for r in outcome["responses"]] == [[]] * len(events)
    received = drain_queue(pipeline_settings)
    assert sorted(row.message_id for row in received.events) == sorted(set(traffic.valid))
    quarantined = [row.message_id for row in received.quarantine if row.message_id]
    assert sorted(quarantined) == sorted(traffic.invalid)
