"""Why the pipeline runs moto through its own emulator module: Kinesis on a long local stream.

Plain moto 5.2.5 rebuilds a list of every key of a shard for each record it stores, and
GetRecords walks the shard from its first record on every call, so a local stream slows down as it
grows; it also assigns sequence numbers without a lock, so concurrent puts to one shard can draw
the same number and overwrite each other. `analytics_pipeline.local.emulator` patches both. For
each server (started on a free 127.0.0.1 port in its own session, stopped by process group) this
prints:

- puts: PutRecords of 500 records (200 bytes each) into a fresh 1-shard stream, the rate for each
  window of 20k records, so the slow-down with length shows;
- reads: GetRecords (Limit 1000) from TRIM_HORIZON until every record came back, same windows;
- race: several threads putting to one shard at once; sequence numbers returned vs distinct vs
  records the shard actually holds (plain moto loses records here, the patched module does not).

Run: .venv/bin/python -m benchmarks.emulator_kinesis [--records 100000] [--only patched|plain]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from analytics_pipeline import aws
from analytics_pipeline.local.emulator import endpoint_answers
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.processes import free_port

SERVER_COMMANDS: dict[str, list[str]] = {
    "patched": [sys.executable, "-m", "analytics_pipeline.local.emulator", "--port"],
    "plain": [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p"],
}
PUT_BATCH = 500  # the PutRecords maximum, as the clients send
READ_LIMIT = 1_000
RECORD_BYTES = 200
STARTUP_TIMEOUT_SECONDS = 30.0


@contextmanager
def running_server(mode: str, log_folder: Path) -> Iterator[str]:
    """Start one server in its own session; yield its endpoint; stop its whole process group."""
    port = free_port()
    server = ChildProcess(mode, [*SERVER_COMMANDS[mode], str(port)], log_folder / f"{mode}.log")
    endpoint_url = f"http://127.0.0.1:{port}"
    try:
        server.start().wait_until(
            lambda: endpoint_answers(endpoint_url, timeout=0.2),
            STARTUP_TIMEOUT_SECONDS,
            f"answer at {endpoint_url}",
        )
        yield endpoint_url
    finally:
        server.stop()


def kinesis_client(endpoint_url: str) -> Any:
    settings = Settings.from_env(
        {"AWS_ENDPOINT_URL": endpoint_url, "AWS_DEFAULT_REGION": "us-east-1"}
    )
    return aws.client("kinesis", settings)


def create_stream(kinesis: Any, name: str) -> str:
    """A fresh 1-shard stream (every record lands on the shard whose cost we measure)."""
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
    return str(kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"])


class WindowRates:
    """Records per second over consecutive windows, so a slow-down with stream length shows."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.rates: list[float] = []
        self.started = self.window_started = time.perf_counter()
        self.count = 0
        self.next_mark = window

    def add(self, records: int) -> None:
        self.count += records
        while self.count >= self.next_mark:
            now = time.perf_counter()
            self.rates.append(self.window / (now - self.window_started))
            self.window_started = now
            self.next_mark += self.window

    def summary(self) -> str:
        overall = self.count / (time.perf_counter() - self.started)
        windows = ", ".join(f"{rate:,.0f}" for rate in self.rates)
        return f"overall {overall:>7,.0f}/s; per {self.window:,}: [{windows}]"


def measure_puts(kinesis: Any, stream: str, total: int, window: int) -> WindowRates:
    data = b"x" * RECORD_BYTES
    rates = WindowRates(window)
    for start in range(0, total, PUT_BATCH):
        size = min(PUT_BATCH, total - start)
        response = kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": data, "PartitionKey": str(n)} for n in range(size)],
        )
        if response["FailedRecordCount"]:
            raise RuntimeError(f"{response['FailedRecordCount']} records failed")
        rates.add(size)
    return rates


def read_all(kinesis: Any, stream: str, shard_id: str, window: int | None = None) -> WindowRates:
    """Read the shard from its start until a call returns nothing (moto has no latency)."""
    rates = WindowRates(window or sys.maxsize)
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    while True:
        response = kinesis.get_records(ShardIterator=iterator, Limit=READ_LIMIT)
        if not response["Records"]:
            return rates
        rates.add(len(response["Records"]))
        iterator = response["NextShardIterator"]


def measure_race(kinesis: Any, threads: int, records_per_thread: int) -> tuple[int, int, int]:
    """(sequence numbers returned, distinct ones, records the shard holds) for concurrent puts."""
    stream = "race"
    shard_id = create_stream(kinesis, stream)
    batch = 200

    def put(worker: int) -> list[str]:
        sequence_numbers: list[str] = []
        for start in range(0, records_per_thread, batch):
            size = min(batch, records_per_thread - start)
            response = kinesis.put_records(
                StreamName=stream,
                Records=[{"Data": str(worker).encode(), "PartitionKey": "p"}] * size,
            )
            sequence_numbers += [r["SequenceNumber"] for r in response["Records"]]
        return sequence_numbers

    with ThreadPoolExecutor(threads) as pool:
        returned = [s for numbers in pool.map(put, range(threads)) for s in numbers]
    stored = read_all(kinesis, stream, shard_id).count
    return len(returned), len(set(returned)), stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records to put and read")
    parser.add_argument("--window", type=int, default=20_000, help="records per reported rate")
    parser.add_argument("--only", choices=sorted(SERVER_COMMANDS), help="measure one server")
    parser.add_argument("--race-threads", type=int, default=8)
    parser.add_argument("--race-records", type=int, default=2_000, help="records per thread")
    arguments = parser.parse_args()

    modes = [arguments.only] if arguments.only else ["patched", "plain"]
    with tempfile.TemporaryDirectory(prefix="emulator-kinesis-bench-") as name:
        for mode in modes:
            with running_server(mode, Path(name)) as endpoint_url:
                kinesis = kinesis_client(endpoint_url)
                shard_id = create_stream(kinesis, "bench")
                puts = measure_puts(kinesis, "bench", arguments.records, arguments.window)
                print(f"{mode:<8} puts  {puts.summary()}", flush=True)
                reads = read_all(kinesis, "bench", shard_id, arguments.window)
                print(f"{mode:<8} reads {reads.summary()}", flush=True)
                if reads.count != arguments.records:
                    print(f"{mode:<8} read back {reads.count:,} of {arguments.records:,}")
                returned, distinct, stored = measure_race(
                    kinesis, arguments.race_threads, arguments.race_records
                )
                print(
                    f"{mode:<8} race  {arguments.race_threads} threads x "
                    f"{arguments.race_records:,} to one shard: {returned:,} sequence numbers "
                    f"returned, {distinct:,} distinct, {stored:,} records stored",
                    flush=True,
                )


if __name__ == "__main__":
    main()
