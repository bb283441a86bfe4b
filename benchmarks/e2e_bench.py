"""End to end on the real local stack: clients -> emulator -> trigger -> the load loop -> warehouse.

`analytics-pipeline dev` runs everything a user runs (the trigger poller with the real handler,
the HTTP collector, `dagster dev` whose sensor keeps one `events_loop_job` run loading, and on
BigQuery the emulator `dev` starts), on free ports with its own state under a temporary folder;
the AWS emulator is started here (dev reuses it) and `benchmarks.clients` sends (the simulator
at a steady rate, exact device clocks). Everything is stopped by process group afterwards.
The clients start once the loop run holds the loader store, so the figures are the steady
state, and the start-up is reported on its own.

`stack_root` points `dev` at another checkout (its own `.venv`): the same measurement of an
older design (there is no loop run to wait for then: the clients start after the first sensor
tick).

Every `poll_seconds` the driver samples: the clients' sent count, SQS messages visible + in
flight, the trigger's iterator age (Lambda's IteratorAge: now minus the arrival time of the last
record handled), RSS and CPU time of every process of each component (from /proc), and the new
rows in the warehouse. Latency is what a user sees: a row counts as queryable when the first
warehouse poll that returns it has returned, so `queryable - sent_at` over-states the true
latency by at most the poll interval plus the poll's own duration (reported); `loaded_at -
sent_at` (stamped when the load was planned, before its commit) is the lower bound. Per row,
`received_at` (the Kinesis arrival) and `loaded_at` split the latency into the client's put,
the path to the load, and the commit plus the poll.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.loader.store import store_in_use
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.emulator import start_emulator
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import Warehouse, open_warehouse
from analytics_pipeline_testkit.processes import descendants, free_port, graphql, server_answers
from benchmarks import loop_profile
from benchmarks.workload import REPO_ROOT

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_AGE = re.compile(rb"iterator_age_ms=(\d+)")
LOOP_JOB = "events_loop_job"
RUN_WORKER = "run worker"  # a Dagster run process (the loop run; the old design: one per batch)
RUNS_QUERY = """
{ runsOrError(limit: 10000) { ... on Runs { results {
    runId jobName status creationTime startTime endTime } } } }
"""
TICKS_QUERY = """
{ sensorOrError(sensorSelector: {repositoryLocationName: "analytics_pipeline",
    repositoryName: "__repository__", sensorName: "sqs_batches_sensor"}) {
  ... on Sensor { sensorState { ticks(limit: 10000) { timestamp endTimestamp status } } } } }
"""
# `load_seconds` of each materialization of `events`: receive -> delete as the loop timed it.
LOADS_QUERY = """
{ assetOrError(assetKey: {path: ["events"]}) { ... on Asset {
    assetMaterializations(limit: 10000) { timestamp metadataEntries {
      label ... on FloatMetadataEntry { floatValue } ... on IntMetadataEntry { intValue } } } } } }
"""
EPOCH = datetime(2000, 1, 1)


@dataclass
class Sample:
    seconds: float  # since the clients started
    sent: int
    queryable: int
    sqs_visible: int
    sqs_in_flight: int
    iterator_age_seconds: float | None
    rss_mb: dict[str, float]
    load_average: float  # 1-minute load average of the box

    @property
    def backlog(self) -> int:
        return max(self.sent - self.queryable, 0)

    @property
    def sqs_depth(self) -> int:
        return self.sqs_visible + self.sqs_in_flight


@dataclass
class Stage:
    """Per row: the three legs of send -> queryable, in seconds."""

    to_kinesis: float  # received_at - sent_at: the client's PutRecords
    to_load: float  # loaded_at - received_at: trigger, handler, SQS, receive, plan
    to_queryable: float  # queryable - loaded_at: commit, record, and the bench's poll


@dataclass
class E2EResult:
    rate: float
    seconds: float
    warehouse: str
    settings: dict[str, str]
    design: str = "loop"  # "loop" (this checkout) or the label of `stack_root`'s checkout
    sent: int = 0
    queryable: int = 0
    samples: list[Sample] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent, queryable-sent)
    stages: list[Stage] = field(default_factory=list)
    poll_seconds: float = 0.5
    poll_durations: list[float] = field(default_factory=list)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # component total
    peak_process_rss_mb: dict[str, float] = field(default_factory=dict)  # its largest process
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    others_cores: float | None = None  # CPU the rest of the box used meanwhile (/proc/stat)
    load_before: float = 0.0  # 1-minute load average before the stack started
    startup_seconds: float | None = None  # `dev` started -> loop loading (or first tick)
    drain_seconds: float | None = None
    failure: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)  # Dagster runs: times, status
    sensor_ticks: list[dict[str, Any]] = field(default_factory=list)  # timestamp, status
    loads: list[tuple[float, int]] = field(default_factory=list)  # (loaded_at, events) per load
    profiles: dict[str, Path] = field(default_factory=dict)  # component -> py-spy recording
    load_seconds: list[float] = field(default_factory=list)  # the loop's own time per load

    # -- latency ---------------------------------------------------------------------------

    @staticmethod
    def percentile(values: list[float], share: float) -> float:
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
    def poll_p50(self) -> float:
        """Median seconds one warehouse poll of the driver took."""
        return statistics.median(self.poll_durations) if self.poll_durations else float("nan")

    def stage_median(self, name: str) -> float:
        values = [getattr(stage, name) for stage in self.stages]
        return statistics.median(values) if values else float("nan")

    @property
    def lower_bound_p50(self) -> float:
        """Median `loaded_at - sent_at`: the latency if the commit and the poll took no time."""
        values = [stage.to_kinesis + stage.to_load for stage in self.stages]
        return statistics.median(values) if values else float("nan")

    # -- rate and backlog ------------------------------------------------------------------

    @property
    def client_rate(self) -> float:
        return self.sent / self.seconds

    def _window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if self.seconds * start <= s.seconds <= self.seconds * end]

    @property
    def sustained_rate(self) -> float:
        """Rows becoming queryable per second over the last three quarters of the client window."""
        window = self._window(0.25, 1.0)
        if len(window) < 2:
            return 0.0
        first, last = window[0], window[-1]
        return (last.queryable - first.queryable) / max(last.seconds - first.seconds, 1e-9)

    def growing(self, value: Callable[[Sample], int]) -> bool:
        """Whether `value` kept growing: its lowest in the last quarter of the client window
        is above its highest in the quarter before."""
        last = [value(s) for s in self._window(0.75, 1.0)]
        third = [value(s) for s in self._window(0.5, 0.75) if s.seconds < self.seconds * 0.75]
        return bool(third and last) and min(last) > max(third)

    @property
    def bounded(self) -> bool:
        """Clients kept the rate and rows became queryable at >= 90 % of it (the last three
        quarters of the window); in the second half the backlog (sent, not yet queryable)
        stayed under 20 s of traffic and neither it nor the SQS queue depth kept growing; and
        everything sent was loaded afterwards."""
        second_half = self._window(0.5, 1.0)
        if not second_half or self.failure:
            return False
        return (
            self.client_rate >= 0.95 * self.rate
            and self.sustained_rate >= 0.9 * self.rate
            and max(s.backlog for s in second_half) <= 20 * self.rate
            and not self.growing(lambda s: s.backlog)
            and not self.growing(lambda s: s.sqs_depth)
            and self.queryable >= self.sent
        )

    # -- the box ---------------------------------------------------------------------------

    @property
    def load_during(self) -> float:
        """Mean 1-minute load average while the clients sent."""
        values = [s.load_average for s in self._window(0.0, 1.0)]
        return statistics.fmean(values) if values else float("nan")

    def cpu_share(self) -> dict[str, float]:
        """Cores used by each component over the run (1.0 = one core busy)."""
        duration = self.seconds + (self.drain_seconds or 0.0)
        return {name: seconds / duration for name, seconds in self.cpu_seconds.items()}

    # -- Dagster and the loads -------------------------------------------------------------

    def tick_spacing_seconds(self) -> float | None:
        """Median seconds between sensor evaluations."""
        times = sorted(t["timestamp"] for t in self.sensor_ticks)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return statistics.median(gaps) if gaps else None

    def load_gap_seconds(self) -> float | None:
        """Median seconds between the starts of consecutive loads."""
        times = sorted(at for at, _ in self.loads)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return statistics.median(gaps) if gaps else None

    def events_per_load(self) -> float | None:
        counts = [events for _, events in self.loads if events]
        return statistics.median(counts) if counts else None

    def median_load_seconds(self) -> float | None:
        return statistics.median(self.load_seconds) if self.load_seconds else None


@dataclass
class RepeatedRuns:
    """The repeats of one (design, warehouse, rate): figures are medians over them."""

    design: str
    warehouse: str
    rate: float
    runs: list[E2EResult] = field(default_factory=list)

    def median(self, figure: Callable[[E2EResult], float | None]) -> float:
        values = [v for v in (figure(r) for r in self.runs) if v is not None and v == v]
        return statistics.median(values) if values else float("nan")

    @property
    def p50(self) -> float:
        return self.median(lambda r: r.latency(0.5))

    @property
    def p95(self) -> float:
        return self.median(lambda r: r.latency(0.95))

    @property
    def bounded(self) -> bool:
        return all(r.bounded for r in self.runs)

    @property
    def representative(self) -> E2EResult:
        """The run whose p50 is the median (the lower of the two middle ones)."""
        ordered = sorted(self.runs, key=lambda r: r.latency(0.5))
        return ordered[(len(ordered) - 1) // 2]


def group_runs(results: list[E2EResult]) -> list[RepeatedRuns]:
    """Runs grouped by (design, warehouse, rate), in the order each group first ran."""
    groups: dict[tuple[str, str, float], RepeatedRuns] = {}
    for result in results:
        key = (result.design, result.warehouse, result.rate)
        groups.setdefault(key, RepeatedRuns(*key)).runs.append(result)
    return sorted(
        groups.values(), key=lambda g: (g.design != "loop", g.warehouse != "duckdb", g.rate)
    )


class ProcessMeter:
    """RSS and CPU of every process of each component, read from /proc; components are the
    sessions of `dev`'s children (each runs in its own) plus the ones started here."""

    def __init__(self, dev_pid: int, fixed: dict[int, str]) -> None:
        self.dev_pid = dev_pid
        self.fixed = fixed  # session id -> component, for what is not a child of dev
        self.cpu_by_pid: dict[int, tuple[str, float]] = {}
        self.cpu_before: dict[int, float] = {}  # CPU seconds at the first sample
        self.first_sample = True
        self.commands: dict[int, str] = {}
        self.peak_total: dict[str, float] = {}
        self.peak_process: dict[str, float] = {}
        self.busy_at_start = _busy_jiffies()
        self.started = time.monotonic()
        self.own_cpu_at_start = time.process_time()

    def _command(self, pid: int) -> str:
        if pid not in self.commands:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    self.commands[pid] = handle.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                self.commands[pid] = ""
        return self.commands[pid]

    def sessions(self) -> dict[int, str]:
        found = dict(self.fixed)
        found[self.dev_pid] = "dev"
        for pid in descendants(self.dev_pid):
            try:
                leader = os.getsid(pid) == pid
            except OSError:  # gone meanwhile
                continue
            if leader:
                found[pid] = component_of(self._command(pid))
        return found

    def sample(self) -> dict[str, float]:
        by_session = self.sessions()
        totals = dict.fromkeys(set(by_session.values()) | {RUN_WORKER}, 0.0)
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
            pid = int(entry)
            if name == "dagster" and "spawn_main" in self._command(pid):
                name = RUN_WORKER  # the code server starts runs through multiprocessing
            cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
            if self.first_sample:  # what it used before the measurement does not count
                self.cpu_before[pid] = cpu
            cpu -= self.cpu_before.get(pid, 0.0)
            rss_mb = int(fields[21]) * PAGE_KB / 1024
            self.cpu_by_pid[pid] = (name, cpu)
            totals[name] += rss_mb
            self.peak_process[name] = max(self.peak_process.get(name, 0.0), rss_mb)
        for name, total in totals.items():
            self.peak_total[name] = max(self.peak_total.get(name, 0.0), total)
        self.first_sample = False
        return totals

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time per component (short-lived processes count as last seen)."""
        totals: dict[str, float] = dict.fromkeys(self.peak_total, 0.0)
        for name, cpu in self.cpu_by_pid.values():
            totals[name] = totals.get(name, 0.0) + cpu
        totals["bench driver"] = time.process_time() - self.own_cpu_at_start
        return totals

    def others_cores(self) -> float:
        """Cores busy on the box meanwhile that none of our processes account for."""
        elapsed = time.monotonic() - self.started
        busy = (_busy_jiffies() - self.busy_at_start) / CLOCK_TICKS
        ours = sum(self.cpu_seconds().values())
        return max(busy - ours, 0.0) / max(elapsed, 1e-9)


def _busy_jiffies() -> int:
    """Jiffies every CPU spent not idle since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return sum(values) - values[3] - values[4]  # minus idle and iowait


def component_of(command: str) -> str:
    """Which part of the stack a session leader under `dev` is, from its command line."""
    if "bqemulator" in command:
        return "bigquery emulator"
    if "cli trigger" in command:
        return "trigger"
    if "cli collector" in command:
        return "collector"
    if "dagster" in command:
        return "dagster"
    return "dev"  # the supervisor's lifeline


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


def bench_env(
    endpoint: str, folder: Path, warehouse: str, overrides: dict[str, str]
) -> dict[str, str]:
    """What the benchmark sets for the stack: where things are; every other setting is the
    stack's own default (an older checkout keeps its own defaults too)."""
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "ANALYTICS_STATE_DIR": str(folder / "state"),
        "ANALYTICS_LOADER_STATE_DIR": str(folder / "state" / "loader"),
        "ANALYTICS_DUCKDB_PATH": str(folder / "warehouse.duckdb"),
        "ANALYTICS_COLLECTOR_PORT": str(free_port()),
        "ANALYTICS_WAREHOUSE": warehouse,
        "DAGSTER_HOME": str(folder / "dagster_home"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    if warehouse == "bigquery":
        env["ANALYTICS_BIGQUERY_EMULATOR_REST"] = f"http://127.0.0.1:{free_port()}"
        env["ANALYTICS_BIGQUERY_EMULATOR_GRPC"] = f"127.0.0.1:{free_port()}"
    return env | overrides


def run_e2e(
    rate: float,
    seconds: float,
    *,
    warehouse: str = "duckdb",
    overrides: dict[str, str] | None = None,
    stack_root: Path | None = None,
    design: str = "loop",
    drain_timeout: float = 120.0,
    poll_seconds: float = 0.5,
    clients: int = 100,
    profile_dir: Path | None = None,
    say: Callable[[str], None] = print,
) -> E2EResult:
    """One steady run at `rate` events/s for `seconds`, then until drained (or timed out).

    With `profile_dir`, py-spy records the run worker (wall time, waits included) and, on
    BigQuery, the emulator (CPU) over the middle half of the client window into that folder.
    """
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as name:
        folder = Path(name)
        load_before = os.getloadavg()[0]
        emulator = start_emulator(free_port(), folder / "emulator.log")
        processes: list[ChildProcess] = []
        try:
            env = bench_env(emulator.endpoint_url, folder, warehouse, overrides or {})
            settings = Settings.from_env(env)
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            ensure_resources(settings)
            result = E2EResult(rate, seconds, warehouse, env, design, poll_seconds=poll_seconds)
            result.load_before = load_before
            root = stack_root or REPO_ROOT
            python = str(root / ".venv" / "bin" / "python") if stack_root else sys.executable
            port = free_port()
            dev = ChildProcess(
                "dev",
                [python, "-m", "analytics_pipeline.cli", "dev", "--port", str(port)],
                folder / "dev.log",
                {**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                cwd=root,
            ).start()
            processes.append(dev)
            url = f"http://127.0.0.1:{port}"
            started = time.monotonic()
            _wait_for_stack(dev, url, settings, loop=stack_root is None, timeout=300)
            result.startup_seconds = time.monotonic() - started
            status_file = settings.state_dir / "clients.jsonl"
            command = [sys.executable, "-m", "benchmarks.clients", "--rate", str(rate)]
            command += ["--seconds", str(seconds), "--clients", str(clients)]
            command += ["--status-file", str(status_file)]
            sender = ChildProcess(
                "clients",
                command,
                settings.state_dir / "clients.log",
                {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"},
                REPO_ROOT,
            ).start()
            processes.append(sender)
            meter = ProcessMeter(dev.pid, {emulator.pid: "emulator", sender.pid: "clients"})
            say(
                f"e2e {warehouse} {design} {rate:g} events/s for {seconds:g} s: clients started "
                f"{result.startup_seconds:.0f} s after dev"
            )
            _observe(result, settings, meter, dev, sender, status_file, drain_timeout, profile_dir)
            result.runs = graphql(url, RUNS_QUERY)["runsOrError"].get("results", [])
            sensor = graphql(url, TICKS_QUERY)["sensorOrError"]
            result.sensor_ticks = (sensor.get("sensorState") or {}).get("ticks") or []
            result.load_seconds = _load_seconds(url)
            result.loads = _loads(open_warehouse(settings))
            return result
        finally:
            for process in reversed(processes):
                process.stop()
            emulator.stop()


def _wait_for_stack(
    dev: ChildProcess, url: str, settings: Settings, *, loop: bool, timeout: float
) -> None:
    """Until the loop run holds the loader store (`loop`), else until the sensor has ticked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not dev.alive():
            raise RuntimeError(f"analytics-pipeline dev exited:\n{dev.tail()}")
        if server_answers(url):
            if loop:
                runs = graphql(url, RUNS_QUERY)["runsOrError"].get("results", [])
                started = any(r["jobName"] == LOOP_JOB and r["status"] == "STARTED" for r in runs)
                if started and store_in_use(settings.loader_store_dir):
                    return
            else:
                sensor = graphql(url, TICKS_QUERY)["sensorOrError"]
                if (sensor.get("sensorState") or {}).get("ticks"):
                    return
        time.sleep(0.5)
    raise RuntimeError(
        f"the stack was not loading {timeout:.0f} s after dev started:\n{dev.tail()}"
    )


def _observe(
    result: E2EResult,
    settings: Settings,
    meter: ProcessMeter,
    dev: ChildProcess,
    sender: ChildProcess,
    status_file: Path,
    drain_timeout: float,
    profile_dir: Path | None = None,
) -> None:
    queue = BatchQueue.for_settings(settings)
    recorders: list[subprocess.Popen[bytes]] = []
    warehouse = open_warehouse(settings)
    trigger_log = LogTail(settings.state_dir / "trigger.log")
    status_tail = LogTail(status_file)
    watermark = EPOCH
    iterator_age: float | None = None
    clients_done_at: float | None = None
    started = time.time()
    while True:
        tick = time.monotonic()
        clients_exited = not sender.alive()  # before the read: its last line is in then
        for line in status_tail.read().splitlines():
            status = json.loads(line)
            result.sent = int(status["sent"])
            if status["done"]:
                clients_done_at = clients_done_at or time.time()
        ages = _AGE.findall(trigger_log.read())
        if ages:
            iterator_age = int(ages[-1]) / 1000
        depth = queue.depth()
        poll_started = time.time()
        try:
            rows = warehouse.query(
                "SELECT sent_at, received_at, loaded_at FROM analytics.events WHERE loaded_at > ?",
                [watermark],
            ).rows
        except Exception as error:  # the table may not exist before the first load
            if result.queryable:
                raise
            rows = []
            result.poll_durations.append(time.time() - poll_started)
            if "not found" not in str(error).lower() and "does not exist" not in str(error):
                raise
        else:
            polled_at = time.time()
            result.poll_durations.append(polled_at - poll_started)
            for sent_at, received_at, loaded_at in rows:
                sent, received, loaded = (_epoch(v) for v in (sent_at, received_at, loaded_at))
                result.latencies.append((sent - started, polled_at - sent))
                result.stages.append(Stage(received - sent, loaded - received, polled_at - loaded))
                watermark = max(watermark, loaded_at)
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
                load_average=os.getloadavg()[0],
            )
        )
        if profile_dir and not result.profiles and time.time() - started >= result.seconds / 4:
            recorders = _start_profiles(result, meter, profile_dir)
        if not dev.alive():
            result.failure = f"analytics-pipeline dev exited:\n{dev.tail()}"
        elif clients_exited and clients_done_at is None:
            result.failure = f"the clients exited:\n{sender.tail()}"
        if result.failure:
            break
        if clients_done_at is not None:
            if result.queryable >= result.sent:
                result.drain_seconds = time.time() - clients_done_at
                break
            if time.time() - clients_done_at > drain_timeout:
                result.failure = f"not drained {drain_timeout:g} s after the clients stopped"
                break
        time.sleep(max(0.0, result.poll_seconds - (time.monotonic() - tick)))
    for recorder in recorders:
        recorder.wait(timeout=result.seconds)
    result.peak_rss_mb = meter.peak_total
    result.peak_process_rss_mb = meter.peak_process
    result.cpu_seconds = meter.cpu_seconds()
    result.others_cores = meter.others_cores()


def _start_profiles(
    result: E2EResult, meter: ProcessMeter, folder: Path
) -> list[subprocess.Popen[bytes]]:
    """py-spy on the newest run worker (and the BigQuery emulator) for half the window."""
    folder.mkdir(parents=True, exist_ok=True)
    seconds = max(int(result.seconds / 2), 1)
    workers = [pid for pid, (name, _) in meter.cpu_by_pid.items() if name == RUN_WORKER]
    emulators = [pid for pid, name in meter.sessions().items() if name == "bigquery emulator"]
    recorders = []
    stem = f"profile_{result.design}_{result.warehouse}_{int(result.rate)}"
    for component, pids, idle in (("loop", workers, True), ("bqemulator", emulators, False)):
        if pids:
            result.profiles[component] = folder / f"{stem}_{component}.txt"
            recorders.append(
                loop_profile.record(max(pids), seconds, result.profiles[component], idle=idle)
            )
    return recorders


def _epoch(value: datetime) -> float:
    """Seconds since the epoch of a naive UTC timestamp (as both warehouses return them)."""
    return value.replace(tzinfo=UTC).timestamp()


def _loads(warehouse: Warehouse) -> list[tuple[float, int]]:
    """(loaded_at, events) per load, from the ledger: every batch of a load has its loaded_at."""
    rows = warehouse.query(
        "SELECT loaded_at, sum(rows_inserted) FROM analytics.loaded_batches "
        "WHERE kind = 'events' GROUP BY loaded_at ORDER BY loaded_at"
    ).rows
    return [(_epoch(loaded_at), int(events or 0)) for loaded_at, events in rows]


def _load_seconds(url: str) -> list[float]:
    """The loop's `load_seconds` of each load (none from a design that does not report it)."""
    asset = graphql(url, LOADS_QUERY)["assetOrError"]
    found = []
    for materialization in asset.get("assetMaterializations") or []:
        for entry in materialization["metadataEntries"]:
            if entry["label"] == "load_seconds":
                found.append(float(entry.get("floatValue") or entry.get("intValue") or 0.0))
    return found


def describe(result: E2EResult) -> str:
    shares = ", ".join(f"{k} {v:.2f}" for k, v in result.cpu_share().items())
    drain = result.drain_seconds if result.drain_seconds is not None else float("nan")
    return (
        f"{result.warehouse} {result.design} {result.rate:g}/s: sent {result.sent:,} "
        f"({result.client_rate:,.0f}/s), queryable {result.queryable:,}; latency p50 "
        f"{result.latency(0.5):.2f} s, p95 {result.latency(0.95):.2f} s, max "
        f"{result.max_latency:.1f} s (loaded_at-sent_at p50 {result.lower_bound_p50:.2f} s; legs "
        f"p50 {result.stage_median('to_kinesis'):.2f} / {result.stage_median('to_load'):.2f} / "
        f"{result.stage_median('to_queryable'):.2f} s); sustained {result.sustained_rate:,.0f}/s; "
        f"bounded {result.bounded}; drain {drain:.1f} s; warehouse poll takes "
        f"{result.poll_p50:.2f} s (p50); load average before "
        f"{result.load_before:.2f}, during {result.load_during:.2f}, other work "
        f"{result.others_cores or 0:.2f} cores; cores: {shares}; runs {len(result.runs)}; "
        f"loads {len(result.loads)} (every {result.load_gap_seconds()} s, "
        f"{result.events_per_load()} events, {result.median_load_seconds()} s each); "
        f"start-up {result.startup_seconds or 0:.0f} s"
        + (f"; FAILED: {result.failure[:300]}" if result.failure else "")
    )


def main(argv: list[str] | None = None) -> E2EResult:
    """One run from the command line (the figures `make bench` collects, one at a time)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1_000.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--warehouse", choices=("duckdb", "bigquery"), default="duckdb")
    parser.add_argument("--stack-root", type=Path, help="run `dev` of this checkout instead")
    parser.add_argument("--poll-seconds", type=float, default=0.5)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--profile-dir", type=Path, help="py-spy the loop run into this folder")
    arguments = parser.parse_args(argv)
    result = run_e2e(
        arguments.rate,
        arguments.seconds,
        warehouse=arguments.warehouse,
        overrides=dict(item.split("=", 1) for item in arguments.set),
        stack_root=arguments.stack_root,
        design="before" if arguments.stack_root else "loop",
        poll_seconds=arguments.poll_seconds,
        profile_dir=arguments.profile_dir,
    )
    print(describe(result), flush=True)
    for component, path in result.profiles.items():
        rows = loop_profile.table(path) if component == "loop" else loop_profile.top_frames(path)
        print(f"{component} profile {path}:", *rows, sep="\n")
    return result


if __name__ == "__main__":
    main()
