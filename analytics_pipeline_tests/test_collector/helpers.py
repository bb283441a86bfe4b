"""What the collector tests share: a real collector process, reading back the stream, auth."""

from __future__ import annotations

import base64
import gzip
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from analytics_pipeline import aws
from analytics_pipeline.local.stack import child_env
from analytics_pipeline.settings import Settings
from analytics_pipeline_tests.e2e.stack import Process, wait_for

WRITE_KEY = "test-write-key"
OTHER_WRITE_KEY = "second-key"
WRITE_KEYS_SETTING = f"{WRITE_KEY}=test-source,{OTHER_WRITE_KEY}=other-source"


def basic_auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def read_stream(settings: Settings) -> list[dict[str, Any]]:
    """Every record on the stream, decoded (the collector writes gzip blobs)."""
    kinesis = aws.client("kinesis", settings)
    blobs = []
    for shard in kinesis.list_shards(StreamName=settings.stream_name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=settings.stream_name,
            ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        while iterator:
            answer = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for record in answer["Records"]:
                data = record["Data"]
                blobs.append(json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data))
            if not answer["Records"]:
                break
            iterator = answer.get("NextShardIterator")
    return blobs


def get_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class CollectorServer(Process):
    """`analytics-pipeline collector` as a child process (uvicorn on 127.0.0.1, a free port)."""

    def __init__(self, settings: Settings, log_path: Path, workers: int = 1) -> None:
        super().__init__(
            [
                sys.executable,
                "-m",
                "analytics_pipeline.cli",
                "collector",
                "--workers",
                str(workers),
            ],
            child_env(settings),
            log_path,
        )
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.collector_port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        def answering() -> bool:
            if not self.alive():
                raise AssertionError(f"the collector exited:\n{self.tail()}")
            try:
                return get_json(f"{self.url}/health", timeout=1)[0] == 200
            except OSError:
                return False

        wait_for(answering, timeout, interval=0.1, what="the collector's /health")

    def health(self) -> dict[str, Any]:
        status, body = get_json(f"{self.url}/health")
        assert status == 200, body
        return body
