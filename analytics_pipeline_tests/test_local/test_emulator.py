"""The emulator module: the patch keeps moto's behaviour; start, reuse and stop of the process."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from analytics_pipeline import aws
from analytics_pipeline.local.emulator import endpoint_answers, ensure_emulator, patch_moto_kinesis
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import free_port


def test_patched_shard_numbers_reads_and_lags_like_moto() -> None:
    patch_moto_kinesis()
    from moto.kinesis.models import Shard

    shard = Shard(0, 0, 2**128 - 1)
    assert shard.get_records("0", 10) == ([], 0, 0)
    sequence_numbers = [shard.put_record("p", "ZGF0YQ==", None) for _ in range(25)]  # type: ignore[arg-type]

    assert sequence_numbers == [str(n) for n in range(1, 26)]
    assert (shard.get_min_sequence_number(), shard.get_max_sequence_number()) == (1, 25)
    records, last, _ = shard.get_records("10", 5)
    assert [r.sequence_number for r in records] == [11, 12, 13, 14, 15]
    assert last == 15
    records, last, behind_ms = shard.get_records("20", 100)
    assert [r.sequence_number for r in records] == [21, 22, 23, 24, 25]
    assert (last, behind_ms) == (25, 0)
    assert shard.get_records("25", 100) == ([], 25, 0)
    assert shard.to_json()["SequenceNumberRange"]["StartingSequenceNumber"] == "1"


def test_concurrent_puts_to_one_shard_lose_nothing(pipeline_settings: Settings) -> None:
    kinesis = aws.client("kinesis", pipeline_settings)
    shard_id = kinesis.list_shards(StreamName=pipeline_settings.stream_name)["Shards"][0]["ShardId"]
    hash_key = "0"  # every record to the first shard

    def put(writer: int) -> list[str]:
        sequence_numbers = []
        for call in range(4):
            records = [
                {
                    "Data": f"{writer}-{call}-{n}".encode(),
                    "PartitionKey": "p",
                    "ExplicitHashKey": hash_key,
                }
                for n in range(50)
            ]
            response = kinesis.put_records(
                StreamName=pipeline_settings.stream_name, Records=records
            )
            sequence_numbers += [r["SequenceNumber"] for r in response["Records"]]
        return sequence_numbers

    with ThreadPoolExecutor(max_workers=6) as pool:
        sequence_numbers = [s for batch in pool.map(put, range(6)) for s in batch]

    assert len(set(sequence_numbers)) == 1200
    iterator = kinesis.get_shard_iterator(
        StreamName=pipeline_settings.stream_name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    stored = kinesis.get_records(ShardIterator=iterator, Limit=10000)["Records"]
    assert len({r["Data"] for r in stored}) == 1200


def test_running_emulator_is_reused_not_owned(aws_endpoint: str, tmp_path: Path) -> None:
    settings = Settings.from_env(unique_settings_env(aws_endpoint, tmp_path))

    assert ensure_emulator(settings) is None


def test_real_aws_needs_no_emulator(tmp_path: Path) -> None:
    settings = Settings.from_env({"AWS_ENDPOINT_URL": "", "ANALYTICS_STATE_DIR": str(tmp_path)})

    assert ensure_emulator(settings) is None
    assert not (tmp_path / "emulator.log").exists()


@pytest.mark.e2e
def test_ensure_emulator_starts_one_and_stop_ends_it(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    settings = Settings.from_env(unique_settings_env(endpoint, tmp_path))

    emulator = ensure_emulator(settings)
    assert emulator is not None
    try:
        assert endpoint_answers(endpoint)
        assert os.getpgid(emulator.pid) == emulator.pid  # its own session, stoppable as a group
        aws.client("sqs", settings).create_queue(QueueName="answers")
        assert (settings.state_dir / "emulator.log").exists()
    finally:
        emulator.stop()

    assert emulator.exit_code() is not None
    assert not endpoint_answers(endpoint)
