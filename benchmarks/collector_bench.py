"""The HTTP collector: events/s per core into the emulator, next to its ceiling, and latency.

Everything runs on this machine's 2 cores, so the processes are pinned and their CPU is read
from /proc: the collector (`analytics-pipeline collector`, one uvicorn worker) on core 0, the
emulator and this process (the load generator) on core 1. "Per core" is events per second of
the collector's own CPU time (user + system, all its threads), so neither the emulator's work
nor the generator's is counted against it; the wall-clock rate is printed beside it.

1. throughput: `--concurrency` keep-alive connections post batches of `--events` SDK-shaped
   events (~600 bytes each, as segment-analytics-python sends them: JSON, Basic auth) as fast
   as the collector answers, for `--requests` requests;
2. ceiling: the same bodies, in this process on core 0, through the collector's own decode
   (`payload.request_text` / `decode_request` / `blob` + gzip) and PutRecords alone, in calls
   of the size the collector's group commit made during (1), and of 500 records;
3. latency: an open loop at `--rate` requests/s for `--seconds` (each request's clock starts at
   its scheduled time, so a stall counts against every request it delays): p50, p99, max;
4. `--profile`: py-spy samples the collector (GIL holder only) during a second throughput run;
   the functions holding it longest are printed;
5. the Lambda's `parse_blob` on the collector's blobs and on the same events without a blob
   context: the downstream price of `context.source`, which the Lambda merges into each event.

Run: .venv/bin/python -m benchmarks.collector_bench [--requests 4000] [--rate 1000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analytics_pipeline import aws
from analytics_pipeline.client.sender import KinesisSender
from analytics_pipeline.collector.auth import parse_write_keys
from analytics_pipeline.collector.payload import decode_request, request_text
from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.ingest.packing import compress_batch
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.emulator import start_emulator
from analytics_pipeline.local.processes import stop_process_group
from analytics_pipeline.local.stack import child_env
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.blobs import realistic_event
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import free_port

WRITE_KEY = "bench-key"
COLLECTOR_CORE, OTHERS_CORE = 0, 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, its threads and its live child processes (uvicorn's
    workers are children of its supervisor)."""
    total = 0.0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def process_tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents.setdefault(int(stat[1]), []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(parents.get(current, []))
    return found


def pin(pid: int, core: int | set[int]) -> None:
    """Every thread of `pid` and of its children onto one core (or a set of cores)."""
    cores = {core} if isinstance(core, int) else core
    if os.cpu_count() and os.cpu_count() > max(cores):
        for member in process_tree(pid):
            for task in Path(f"/proc/{member}/task").iterdir():  # every thread
                with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                    os.sched_setaffinity(int(task.name), cores)


def sdk_bodies(count: int, events: int, seed: int = 11) -> list[bytes]:
    """Batch requests as segment-analytics-python builds them (its event fields and context)."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        batch = []
        for _ in range(events):
            event = realistic_event(rng, with_context=False)
            event.pop("originalTimestamp")
            event["timestamp"] = "2026-11-29T11:59:58.001000+00:00"
            event["integrations"] = {}
            event["context"] = {"library": {"name": "analytics-python", "version": "2.4.0"}}
            batch.append(event)
        body = {"batch": batch, "sentAt": "2026-11-29T12:00:05.120000+00:00", "writeKey": WRITE_KEY}
        bodies.append(json.dumps(body).encode())
    return bodies


def request_bytes(body: bytes, port: int) -> bytes:
    auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    head = (
        f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: write a prepared request, read the status."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


async def closed_loop(port: int, requests: list[bytes], concurrency: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    queue = iter(requests)

    async def worker() -> None:
        connection = await Connection.open(port)
        try:
            for request in queue:
                statuses[await connection.send(request)] += 1
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def open_loop(
    port: int, requests: list[bytes], rate: float, seconds: float, pool_size: int = 256
) -> tuple[list[float], Counter[int]]:
    """Requests started at `rate` per second on schedule; latency from the scheduled start."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(32):
        idle.put_nowait(await Connection.open(port))
    opened = 32
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    loop = asyncio.get_running_loop()

    async def one(request: bytes, scheduled: float) -> None:
        nonlocal opened
        if idle.empty() and opened < pool_size:
            opened += 1
            connection = await Connection.open(port)
        else:
            connection = await idle.get()
        statuses[await connection.send(request)] += 1
        latencies.append(loop.time() - scheduled)
        idle.put_nowait(connection)

    total = int(rate * seconds)
    start = loop.time() + 0.05
    tasks = []
    for n in range(total):
        scheduled = start + n / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(requests[n % len(requests)], scheduled)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return latencies, statuses


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        return json.loads(response.read())


@dataclass
class Throughput:
    requests: int
    events: int
    wall_seconds: float
    collector_cpu: float
    emulator_cpu: float
    generator_cpu: float
    records_per_call: float
    statuses: dict[int, int]

    @property
    def per_core(self) -> float:
        return self.events / self.collector_cpu

    def line(self) -> str:
        return (
            f"{self.events / self.wall_seconds:>9,.0f} events/s wall, "
            f"{self.per_core:>9,.0f} events/s per collector core "
            f"({self.requests:,} requests in {self.wall_seconds:.1f} s; CPU s: collector "
            f"{self.collector_cpu:.2f}, emulator {self.emulator_cpu:.2f}, load generator "
            f"{self.generator_cpu:.2f}; {self.records_per_call:.1f} records per PutRecords; "
            f"statuses {self.statuses})"
        )


@dataclass
class BenchResult:
    throughput: Throughput
    ceilings: dict[str, float] = field(default_factory=dict)  # label -> events per CPU-second
    latency: dict[str, float] = field(default_factory=dict)
    profile: list[tuple[str, float]] = field(default_factory=list)
    lambda_parse: dict[str, float] = field(default_factory=dict)  # label -> events/s


def measure_throughput(
    url: str, port: int, pids: dict[str, int], bodies: list[bytes], requests: int, concurrency: int
) -> Throughput:
    prepared = [request_bytes(bodies[n % len(bodies)], port) for n in range(requests)]
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    generator_before = time.process_time()
    calls_before = health(url)
    started = time.perf_counter()
    statuses = asyncio.run(closed_loop(port, prepared, concurrency))
    wall = time.perf_counter() - started
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    calls_after = health(url)
    calls = calls_after["kinesis_calls"] - calls_before["kinesis_calls"]
    records = calls_after["kinesis_records"] - calls_before["kinesis_records"]
    events_per_request = len(json.loads(bodies[0])["batch"])
    return Throughput(
        requests=requests,
        events=statuses[200] * events_per_request,
        wall_seconds=wall,
        collector_cpu=after["collector"] - before["collector"],
        emulator_cpu=after["emulator"] - before["emulator"],
        generator_cpu=time.process_time() - generator_before,
        records_per_call=records / max(calls, 1),
        statuses=dict(statuses),
    )


def measure_ceiling(settings: Settings, bodies: list[bytes], requests: int, per_call: int) -> float:
    """Events per CPU-second of this process: the collector's decode + PutRecords, no HTTP."""
    source = parse_write_keys(f"{WRITE_KEY}=bench")[WRITE_KEY]
    limits = Limits.from_settings(settings)
    sender = KinesisSender(aws.client("kinesis", settings), settings.stream_name, max_retries=0)

    @dataclass
    class Record:
        data: bytes
        partition_key: str
        attempts: int = 0

        def encode(self) -> bytes:
            return self.data

    events = 0
    started = time.process_time()
    pending: list[Record] = []
    for n in range(requests):
        payload = decode_request(
            request_text(bodies[n % len(bodies)], None, limits), "batch", limits
        )
        pending.append(Record(compress_batch(payload.blob(source)), os.urandom(16).hex()))
        events += len(payload.events)
        if len(pending) >= per_call:
            if sender.send(pending):  # type: ignore[arg-type]
                raise RuntimeError("the emulator refused records")
            pending = []
    if pending:
        sender.send(pending)  # type: ignore[arg-type]
    return events / (time.process_time() - started)


def lambda_parse_rates(bodies: list[bytes], rounds: int = 3) -> dict[str, float]:
    """The Lambda's parser on the collector's blobs, and on the same events without a blob
    context: what storing `context.source` (merged into every event) costs downstream."""
    from datetime import UTC, datetime

    from analytics_pipeline.contract import DEFAULT_LIMITS, parse_blob

    source = parse_write_keys(f"{WRITE_KEY}=bench")[WRITE_KEY]
    collector_blobs, plain_blobs = [], []
    for body in bodies:
        payload = decode_request(request_text(body, None, DEFAULT_LIMITS), "batch", DEFAULT_LIMITS)
        collector_blobs.append(compress_batch(payload.blob(source)))
        decoded = json.loads(body)
        plain = {"sentAt": decoded["sentAt"], "batch": decoded["batch"]}
        plain_blobs.append(compress_batch(json.dumps(plain).encode()))
    received_at = datetime(2026, 11, 29, 12, 0, 6, tzinfo=UTC)
    rates = {}
    for label, blobs in (
        ("with context.source", collector_blobs),
        ("no blob context", plain_blobs),
    ):
        best = 0.0
        for _ in range(rounds):
            started, events = time.process_time(), 0
            for blob in blobs:
                events += len(parse_blob(blob, received_at=received_at, source="bench").accepted)
            best = max(best, events / (time.process_time() - started))
        rates[label] = best
    return rates


def profile_collector(pid: int, seconds: float, run: Any, out: Path) -> list[tuple[str, float]]:
    """py-spy (GIL holder only) while `run()` loads the collector; top functions by own time."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = out / "collector.pyspy.txt"
    sampler = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--gil", "--nonblocking", "--subprocesses",
         "--format", "raw", "--rate", "250",
         "--duration", str(int(seconds)), "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    run()
    sampler.wait(timeout=seconds + 30)
    own: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        own[_short(leaf)] += int(count)
    total = sum(own.values()) or 1
    return [(name, 100 * n / total) for name, n in own.most_common(25)]


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "python3.11/", "analytics_pipeline/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv: list[str] | None = None) -> BenchResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100, help="events per request")
    parser.add_argument("--requests", type=int, default=4_000, help="requests per throughput run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1_000.0, help="requests/s, latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--profile", action="store_true", help="py-spy the collector")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn workers; with more than one nothing is pinned (they share both cores)",
    )
    arguments = parser.parse_args(argv)

    own_cores = os.sched_getaffinity(0)
    try:
        return _run(arguments)
    finally:
        pin(os.getpid(), own_cores)  # e.g. a test process must not stay on one core


def _run(arguments: argparse.Namespace) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as folder:
        base = Path(folder)
        emulator = start_emulator(free_port(), base / "emulator.log")
        collector = None
        try:
            env = unique_settings_env(
                emulator.endpoint_url, base, ANALYTICS_WRITE_KEYS=f"{WRITE_KEY}=bench"
            )
            settings = Settings.from_env(env)
            ensure_resources(settings)
            log = (base / "collector.log").open("wb")
            collector = subprocess.Popen(
                [
                    *(sys.executable, "-m", "analytics_pipeline.cli", "collector"),
                    *("--workers", str(arguments.workers)),
                ],
                env=child_env(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            url = f"http://127.0.0.1:{settings.collector_port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    health(url)
                    break
                except OSError as error:
                    if time.monotonic() > deadline or collector.poll() is not None:
                        raise RuntimeError(
                            f"the collector did not start; see {log.name}"
                        ) from error
                    time.sleep(0.1)
            pinned = arguments.workers == 1
            if pinned:
                pin(collector.pid, COLLECTOR_CORE)
                pin(emulator.pid, OTHERS_CORE)
                pin(os.getpid(), OTHERS_CORE)
            pids = {"collector": collector.pid, "emulator": emulator.pid}
            bodies = sdk_bodies(64, arguments.events)
            where = (
                f"on core {COLLECTOR_CORE}, emulator and generator on core {OTHERS_CORE}"
                if pinned
                else "unpinned"
            )
            print(
                f"bodies: {arguments.events} events, {len(bodies[0]):,} bytes each; "
                f"collector ({arguments.workers} worker(s)) {where}",
                flush=True,
            )
            port = settings.collector_port
            measure_throughput(url, port, pids, bodies, 300, arguments.concurrency)  # warm-up
            throughput = measure_throughput(
                url, port, pids, bodies, arguments.requests, arguments.concurrency
            )
            print(f"throughput: {throughput.line()}", flush=True)
            result = BenchResult(throughput)

            latencies, statuses = asyncio.run(
                open_loop(port, [request_bytes(b, port) for b in bodies], arguments.rate,
                          arguments.seconds)
            )  # fmt: skip
            result.latency = {
                "rate": arguments.rate,
                "p50_ms": 1000 * percentile(latencies, 0.50),
                "p99_ms": 1000 * percentile(latencies, 0.99),
                "max_ms": 1000 * max(latencies),
                "ok": statuses[200],
                "not_ok": sum(statuses.values()) - statuses[200],
            }
            print(
                f"latency at {arguments.rate:,.0f} requests/s for {arguments.seconds:g} s: "
                f"p50 {result.latency['p50_ms']:.1f} ms, p99 {result.latency['p99_ms']:.1f} ms, "
                f"max {result.latency['max_ms']:.1f} ms; statuses {dict(statuses)}",
                flush=True,
            )
            if arguments.profile:
                result.profile = profile_collector(
                    collector.pid,
                    seconds=12,
                    run=lambda: measure_throughput(
                        url, port, pids, bodies, arguments.requests, arguments.concurrency
                    ),
                    out=Path.cwd(),
                )
                print("collector profile (share of GIL-holding samples, own time):")
                for name, share in result.profile:
                    print(f"  {share:5.1f} %  {name}")
        finally:
            if collector is not None:
                stop_process_group(collector)
        try:
            pin(os.getpid(), COLLECTOR_CORE)  # the ceiling runs where the collector ran
            per_call = max(1, round(throughput.records_per_call))
            for label, size in ((f"{per_call} records per call (as the collector)", per_call),
                                ("500 records per call", 500)):  # fmt: skip
                before = cpu_seconds(emulator.pid)
                rate = measure_ceiling(settings, bodies, arguments.requests, size)
                result.ceilings[label] = rate
                print(
                    f"ceiling, decode + PutRecords, {label}: {rate:,.0f} events per CPU-second "
                    f"(emulator CPU {cpu_seconds(emulator.pid) - before:.2f} s)",
                    flush=True,
                )
        finally:
            emulator.stop()
    ratio = throughput.per_core / max(result.ceilings.values())
    print(f"collector per core / best ceiling: {ratio:.2f}")
    result.lambda_parse = lambda_parse_rates(bodies)
    print(
        "the Lambda's parse_blob on these blobs: "
        + ", ".join(f"{label} {rate:,.0f} events/s" for label, rate in result.lambda_parse.items())
    )
    return result


if __name__ == "__main__":
    main()
