"""Group commit: concurrent requests share PutRecords calls, and each hears its own record's fate.

A rule in the fault proxy throttles every other record of every call; the writer must report
success exactly for the records the emulator stored, however the calls were assembled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics_pipeline.collector.kinesis import KinesisRefused, RecordWriter
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.traffic import read_blobs
from analytics_pipeline_tests.e2e.fault_proxy import Call, FaultProxy, Forward, Reply, Rule


class ThrottleOddRecords(Rule):
    """PutRecords with the records at odd positions refused (throttled), the others stored."""

    def __init__(self) -> None:
        super().__init__("PutRecords")
        self.call_sizes: list[int] = []

    def handle(self, call: Call, forward: Forward) -> Reply | None:
        request = call.json()
        records = request["Records"]
        self.call_sizes.append(len(records))
        stored = iter(())
        if records[::2]:
            reply = forward(call, json.dumps({**request, "Records": records[::2]}).encode())
            stored = iter(json.loads(reply.body)["Records"])
        throttled = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "x"}
        answer = [next(stored) if n % 2 == 0 else throttled for n in range(len(records))]
        body = {"FailedRecordCount": len(records) // 2, "Records": answer}
        return Reply(
            200, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(body).encode()
        )


@pytest.fixture
def proxied(aws_endpoint: str, tmp_path: Path) -> Iterator[tuple[Settings, Settings, FaultProxy]]:
    proxy = FaultProxy(aws_endpoint).start()
    env = unique_settings_env(proxy.endpoint_url, tmp_path)
    direct = Settings.from_env({**env, "AWS_ENDPOINT_URL": aws_endpoint})
    ensure_resources(direct)
    try:
        yield Settings.from_env(env), direct, proxy
    finally:
        proxy.stop()


def test_each_request_learns_the_outcome_of_its_own_record(
    proxied: tuple[Settings, Settings, FaultProxy],
) -> None:
    settings, direct, proxy = proxied
    rule = proxy.add(ThrottleOddRecords())
    writer = RecordWriter.from_settings(settings)
    writer.start()

    async def put_all() -> list[BaseException | None]:
        async def put(n: int) -> BaseException | None:
            try:
                await writer.put(json.dumps({"batch": [{"messageId": f"m-{n}"}]}).encode())
            except KinesisRefused as refusal:
                return refusal
            return None

        return await asyncio.gather(*(put(n) for n in range(300)))

    try:
        outcomes = asyncio.run(put_all())
    finally:
        writer.stop()

    acknowledged = {f"m-{n}" for n, outcome in enumerate(outcomes) if outcome is None}
    refused = [outcome for outcome in outcomes if outcome is not None]
    stored = {blob["batch"][0]["messageId"] for blob in read_blobs(direct)}
    assert stored == acknowledged
    assert refused and all(isinstance(r, KinesisRefused) and r.throttled for r in refused)
    assert max(rule.call_sizes) > 1  # calls were shared by several requests
    assert sum(rule.call_sizes) == 300 and len(rule.call_sizes) < 300
