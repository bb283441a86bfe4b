"""The core deployable: `pip install .` with no extras gives the SDK and the ingest Lambda, and
they run without Dagster, DuckDB, moto or the Google libraries.

The package is installed for real (a wheel built from this checkout into a fresh virtualenv,
from the registry with the project's pins) and driven against the session's emulator.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from analytics_pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
# What the core must not need (top-level modules of the extras' packages).
HEAVY = [
    "dagster",
    "duckdb",
    "moto",
    "google",
    "pandas",
    "click",
    "psutil",
    "analytics_pipeline_testkit",
]

CORE_SCRIPT = """
import importlib.util, json, sys
present = [name for name in json.loads(sys.argv[1]) if importlib.util.find_spec(name)]
assert not present, f"installed without extras, yet importable: {present}"

from analytics_pipeline import aws
from analytics_pipeline.client import Client
from analytics_pipeline.ingest import handler
from analytics_pipeline.local.trigger import kinesis_event_record
from analytics_pipeline.settings import Settings

settings = Settings.from_env()
with Client(settings.stream_name) as analytics:
    ids = [analytics.track("Core Event", {"n": n}, anonymous_id="core") for n in range(5)]
kinesis = aws.client("kinesis", settings)
arn = kinesis.describe_stream_summary(StreamName=settings.stream_name)[
    "StreamDescriptionSummary"]["StreamARN"]
records = []
for shard in kinesis.list_shards(StreamName=settings.stream_name)["Shards"]:
    iterator = kinesis.get_shard_iterator(StreamName=settings.stream_name,
        ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    for record in kinesis.get_records(ShardIterator=iterator)["Records"]:
        records.append(kinesis_event_record(record, shard["ShardId"], arn, settings.aws_region))
print(json.dumps({"ids": ids, "response": handler.handler({"Records": records}, None)}))
"""


@pytest.fixture(scope="module")
def core_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with this checkout installed without extras (pinned versions)."""
    folder = tmp_path_factory.mktemp("core-venv")
    source = folder / "source"  # a copy: setuptools writes build/ beside the sources it builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "analytics_pipeline", source / "analytics_pipeline")
    venv.create(folder / "venv", with_pip=True)
    python = folder / "venv" / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-c", str(REPO / "constraints.txt"), str(source)], check=True)
    return python


def test_the_core_install_runs_the_sdk_and_the_lambda_handler_without_extras(
    core_python: Path, pipeline_settings: Settings, tmp_path: Path
) -> None:
    from analytics_pipeline_testkit.traffic import drain_queue

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **pipeline_settings.to_env()}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    done = subprocess.run(
        [str(core_python), "-c", CORE_SCRIPT, json.dumps(HEAVY)],
        env=env,
        cwd=tmp_path,  # not the checkout: only the installed package can be imported
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["response"]["batchItemFailures"] == []
    assert outcome["response"]["ingestStats"]["events_accepted"] == 5
    received = drain_queue(pipeline_settings)
    assert sorted(row.message_id for row in received.events) == sorted(outcome["ids"])
    assert {row.event for row in received.events} == {"Core Event"}
