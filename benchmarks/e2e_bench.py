"""End to end on the real local stack: clients -> emulator -> trigger -> Dagster -> DuckDB.

Everything `analytics-pipeline dev` runs, started on free ports with its own state under a
temporary folder, each process in its own session and stopped by process group: the patched
emulator, the trigger process (the real handler), `dagster dev` with the repository's
dagster.yaml, and `benchmarks.clients` (the simulator at a steady rate, exact device clocks).

Every second the driver samples: the clients' sent count, SQS messages visible + in flight, the
trigger's iterator age (Lambda's IteratorAge: now minus the arrival time of the last record
handled), RSS and CPU time of every process of each component (from /proc), and the new rows
in the warehouse. Latency is measured the way a user sees it: a row counts as queryable at the
first warehouse poll that returns it, so `queryable - sent_at` over-states the true latency by
at most the poll interval; `loaded_at - sent_at` (stamped inside the load transaction just before
its commit) is reported next to it as the lower bound.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.emulator import start_emulator
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.local.stack import child_env
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline_testkit.processes import DagsterDev, free_port, start_trigger
from benchmarks.workload import REPO_ROOT

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_AGE = re.compile(rb"iterator_age_ms=(\d+)")
RUNS_QUERY = """
{ runsOrError(limit: 10000) { ... on Runs { results {
    runId status creationTime startTime endTime } } } }
"""
TICKS_QUERY = """
{ sensorOrError(sensorSelector: {repositoryLocationName: "analytics_pipeline",
    repositoryName: "__repository__", sensorName: "sqs_batches_sensor"}) {
  ... on Sensor { sensorState { ticks(limit: 10000) { timestamp endTimestamp status } } } } }
"""


@dataclass
class Sample:
    seconds: float  # since the clients started
    sent: int
    queryable: int
    sqs_visible: int
    sqs_in_flight: int
    iterator_age_seconds: float | None
    rss_mb: dict[str, float]

    @property
    def backlog(self) -> int:
        return max(self.sent - self.queryable, 0)


@dataclass
class E2EResult:
    rate: float
    seconds: float
    settings: dict[str, str]
    sent: int = 0
    queryable: int = 0
    samples: list[Sample] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent, queryable-sent)
    loaded_minus_sent: list[float] = field(default_factory=list)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # component total
    peak_process_rss_mb: dict[str, float] = field(default_factory=dict)  # its largest process
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    drain_seconds: float | None = None
    failure: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)  # Dagster runs: times, status
    sensor_ticks: list[dict[str, Any]] = field(default_factory=list)  # timestamp, status

    def tick_spacing_seconds(self) -> float | None:
        """Median seconds between sensor evaluations (the daemon loop and the min interval)."""
        times = sorted(t["timestamp"] for t in self.sensor_ticks)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return statistics.median(gaps) if gaps else None

    def tick_duration_seconds(self) -> float | None:
        """Median seconds one sensor evaluation took (receive, stage bodies, request runs)."""
        spans = [
            t["endTimestamp"] - t["timestamp"] for t in self.sensor_ticks if t.get("endTimestamp")
        ]
        return statistics.median(spans) if spans else None

    def run_phase_seconds(self) -> dict[str, float]:
        """Median seconds from run created to started (launch) and started to ended (load)."""
        done = [r for r in self.runs if r.get("startTime") and r.get("endTime")]
        if not done:
            return {}
        return {
            "launch": statistics.median(r["startTime"] - r["creationTime"] for r in done),
            "execute": statistics.median(r["endTime"] - r["startTime"] for r in done),
        }

    def percentile(self, values: list[float], share: float) -> float:
        ordered = sorted(values)
        return (
            ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")
        )

    @property
    def queryable_latencies(self) -> list[float]:
        return [latency for _, latency in self.latencies]

    def latency(self, share: float) -> float:
        return self.percentile(self.queryable_latencies, share)

    @property
    def max_latency(self) -> float:
        return max(self.queryable_latencies, default=float("nan"))

    @property
    def client_rate(self) -> float:
        return self.sent / self.seconds

    @property
    def sustained_rate(self) -> float:
        """Rows becoming queryable per second over the last three quarters of the client window."""
        window = [s for s in self.samples if self.seconds * 0.25 <= s.seconds <= self.seconds]
        if len(window) < 2:
            return 0.0
        first, last = window[0], window[-1]
        return (last.queryable - first.queryable) / max(last.seconds - first.seconds, 1e-9)

    @property
    def bounded(self) -> bool:
        """Clients kept the rate, the backlog stayed under 20 s of traffic in the second half
        and did not keep growing, and everything sent was loaded afterwards."""
        second_half = [s for s in self.samples if self.seconds / 2 <= s.seconds <= self.seconds]
        if not second_half or self.failure:
            return False
        worst = max(s.backlog for s in second_half)
        quarter = [s.backlog for s in second_half if s.seconds <= self.seconds * 0.75]
        last = [s.backlog for s in second_half if s.seconds > self.seconds * 0.75]
        growing = bool(quarter and last) and min(last) > max(quarter)
        return (
            self.client_rate >= 0.95 * self.rate
            and worst <= 20 * self.rate
            and not growing
            and self.queryable >= self.sent
        )

    def cpu_share(self) -> dict[str, float]:
        """Cores used by each component over the run (1.0 = one core busy)."""
        duration = self.seconds + (self.drain_seconds or 0.0)
        return {name: seconds / duration for name, seconds in self.cpu_seconds.items()}


class ProcessMeter:
    """RSS and CPU of every process in each component's session, read from /proc."""

    def __init__(self, sessions: dict[str, int]) -> None:
        self.sessions = sessions  # component -> session id (its leader's pid)
        self.cpu_by_pid: dict[int, tuple[str, float]] = {}
        self.peak_total: dict[str, float] = {}
        self.peak_process: dict[str, float] = {}

    def sample(self) -> dict[str, float]:
        by_session = {sid: name for name, sid in self.sessions.items()}
        totals = dict.fromkeys(self.sessions, 0.0)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = by_session.get(int(fields[3]))  # session id
            if name is None:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
            rss_mb = int(fields[21]) * PAGE_KB / 1024
            self.cpu_by_pid[int(entry)] = (name, cpu)
            totals[name] += rss_mb
            self.peak_process[name] = max(self.peak_process.get(name, 0.0), rss_mb)
        for name, total in totals.items():
            self.peak_total[name] = max(self.peak_total.get(name, 0.0), total)
        return totals

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time per component (short-lived processes count as last seen)."""
        totals = dict.fromkeys(self.sessions, 0.0)
        for name, cpu in self.cpu_by_pid.values():
            totals[name] += cpu
        return totals


class LogTail:
    """New bytes of a growing log file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> bytes:
        if not self.path.exists():
            return b""
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        return data


def bench_settings_env(endpoint: str, folder: Path, overrides: dict[str, str]) -> dict[str, str]:
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "ANALYTICS_STATE_DIR": str(folder / "state"),
        "ANALYTICS_DUCKDB_PATH": str(folder / "warehouse.duckdb"),
        "DAGSTER_HOME": str(folder / "dagster_home"),
    }
    return env | overrides


def run_e2e(
    rate: float,
    seconds: float,
    *,
    overrides: dict[str, str] | None = None,
    drain_timeout: float = 120.0,
    sample_every: float = 1.0,
    clients: int = 100,
    say: Callable[[str], None] = print,
) -> E2EResult:
    """One steady run at `rate` events/s for `seconds`, then until drained (or timed out)."""
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as name:
        folder = Path(name)
        emulator = start_emulator(free_port(), folder / "emulator.log")
        processes: list[ChildProcess] = []
        try:
            env = bench_settings_env(emulator.endpoint_url, folder, overrides or {})
            settings = Settings.from_env(env)
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            ensure_resources(settings)
            result = E2EResult(rate, seconds, settings.to_env())
            trigger = start_trigger(settings)
            processes.append(trigger)
            dagster = DagsterDev(settings, free_port())
            processes.append(dagster)
            dagster.wait_ready()
            status_file = settings.state_dir / "clients.jsonl"
            command = [sys.executable, "-m", "benchmarks.clients", "--rate", str(rate)]
            command += ["--seconds", str(seconds), "--clients", str(clients)]
            command += ["--status-file", str(status_file)]
            clients = ChildProcess(
                "clients",
                command,
                settings.state_dir / "clients.log",
                child_env(settings),
                REPO_ROOT,
            )
            processes.append(clients.start())
            sessions = {"emulator": emulator.pid, "trigger": trigger.pid, "dagster": dagster.pid}
            sessions["clients"] = processes[-1].pid
            say(f"e2e {rate:g} events/s for {seconds:g} s: clients started")
            _observe(
                result, settings, sessions, processes, status_file, drain_timeout, sample_every
            )
            result.runs = dagster.graphql(RUNS_QUERY)["runsOrError"].get("results", [])
            sensor = dagster.graphql(TICKS_QUERY)["sensorOrError"]
            result.sensor_ticks = (sensor.get("sensorState") or {}).get("ticks") or []
            return result
        finally:
            for process in reversed(processes):
                process.stop()
            emulator.stop()


def _observe(
    result: E2EResult,
    settings: Settings,
    sessions: dict[str, int],
    processes: list[ChildProcess],
    status_file: Path,
    drain_timeout: float,
    sample_every: float,
) -> None:
    queue = BatchQueue.for_settings(settings)
    warehouse = DuckDBWarehouse(settings.duckdb_path, open_timeout_seconds=30.0)
    meter = ProcessMeter(sessions)
    trigger_log = LogTail(settings.state_dir / "trigger.log")
    status_tail = LogTail(status_file)
    watermark: datetime | None = None
    iterator_age: float | None = None
    clients_done_at: float | None = None
    started = time.time()
    while True:
        tick = time.monotonic()
        for line in status_tail.read().splitlines():
            status = json.loads(line)
            result.sent = int(status["sent"])
            if status["done"]:
                clients_done_at = clients_done_at or time.time()
        ages = _AGE.findall(trigger_log.read())
        if ages:
            iterator_age = int(ages[-1]) / 1000
        depth = queue.depth()
        if settings.duckdb_path.exists():
            polled_at = time.time()
            rows = warehouse.query(
                "SELECT epoch(sent_at), epoch(loaded_at), loaded_at FROM analytics.events "
                "WHERE loaded_at > coalesce(?::TIMESTAMP, '-infinity'::TIMESTAMP)",
                [watermark],
            ).rows
            for sent_epoch, loaded_epoch, loaded_at in rows:
                result.latencies.append((sent_epoch - started, polled_at - sent_epoch))
                result.loaded_minus_sent.append(loaded_epoch - sent_epoch)
                watermark = max(watermark or loaded_at, loaded_at)
            result.queryable += len(rows)
        result.samples.append(
            Sample(
                seconds=time.time() - started,
                sent=result.sent,
                queryable=result.queryable,
                sqs_visible=depth["visible"],
                sqs_in_flight=depth["in_flight"],
                iterator_age_seconds=iterator_age,
                rss_mb=meter.sample(),
            )
        )
        for process in processes:
            if not process.alive() and process is not processes[-1]:
                result.failure = f"{process.log_path.name} exited:\n{process.tail()}"
        if result.failure:
            break
        if clients_done_at is not None:
            if result.queryable >= result.sent:
                result.drain_seconds = time.time() - clients_done_at
                break
            if time.time() - clients_done_at > drain_timeout:
                result.failure = f"not drained {drain_timeout:g} s after the clients stopped"
                break
        time.sleep(max(0.0, sample_every - (time.monotonic() - tick)))
    result.peak_rss_mb = meter.peak_total
    result.peak_process_rss_mb = meter.peak_process
    result.cpu_seconds = meter.cpu_seconds()


def describe(result: E2EResult) -> str:
    shares = ", ".join(f"{k} {v:.2f}" for k, v in result.cpu_share().items())
    lower = statistics.median(result.loaded_minus_sent or [float("nan")])
    drain = result.drain_seconds if result.drain_seconds is not None else float("nan")
    return (
        f"rate {result.rate:g}/s: sent {result.sent:,} ({result.client_rate:,.0f}/s), "
        f"queryable {result.queryable:,}; latency p50 {result.latency(0.5):.1f} s, "
        f"p95 {result.latency(0.95):.1f} s, max {result.max_latency:.1f} s "
        f"(loaded_at-sent_at p50 {lower:.1f} s); sustained {result.sustained_rate:,.0f}/s; "
        f"bounded {result.bounded}; drain {drain:.1f} s; cores: {shares}; "
        f"runs {len(result.runs)} {result.run_phase_seconds()}; "
        f"sensor ticks every {result.tick_spacing_seconds()} s, "
        f"taking {result.tick_duration_seconds()} s"
        + (f"; FAILED: {result.failure[:300]}" if result.failure else "")
    )
