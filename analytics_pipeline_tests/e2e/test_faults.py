"""Faults injected into the real local stack; the pipeline must recover on its own.

One `analytics-pipeline dev` (supervisor, trigger poller, collector, `dagster dev` with its daemon,
webserver, code server and the run of the load loop) runs for the whole module, pointed through
a fault proxy (`fault_proxy.py`) at the session's AWS emulator. Each scenario sends its own
events (message ids with a scenario prefix, valid and invalid), injects one fault for real - an
AWS answer the proxy fails, holds or delays, a SIGKILL of the process found by its TCP
connection or by the loader store's lock file, a run terminated from Dagster, a second process
holding the DuckDB lock, a batch whose S3 object is gone - and then waits, without helping, until:

    valid events sent   == rows in `events` with that prefix, each messageId exactly once
    invalid events sent == rows in `events_quarantine` with that prefix, with their reason
    the aggregates      == SQL over `events` (each load keeps them, incrementally)
    the queue (and its dead-letter queue) is empty.

Loop runs last LOOP_SECONDS here, so loop runs hand over to each other under every scenario.
Scenarios run in file order; the last one kills every process and starts `dev` again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from analytics_pipeline import aws
from analytics_pipeline.defs.ingest.keys import COUNTS_RECONCILE_CHECK
from analytics_pipeline.defs.ingest.loop import RECOVERED_MESSAGE
from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.loader.replay import dead_letters_for
from analytics_pipeline.loader.store import LOCK_FILE, store_in_use
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import (
    command_line,
    descendants,
    graphql,
    is_alive,
    is_loopback,
    kill_tree_at_once,
    listening_addresses,
    pid_of_client,
    start_dev,
    wait_for,
    wait_gone,
)
from analytics_pipeline_testkit.traffic import blob, track_event
from analytics_pipeline_tests.e2e.fault_proxy import (
    Call,
    DelayResponse,
    FailEntries,
    FailStatus,
    FaultProxy,
    Gate,
    Hold,
    Received,
    ShiftArrival,
    entry_attribute,
    received_messages,
    sent_batch_ids,
)

pytestmark = pytest.mark.e2e

VISIBILITY_SECONDS = 10
LOCK_WAIT_SECONDS = 8
LOOP_SECONDS = 45  # each loop run loads for this long, then the sensor starts the next
MAX_RECEIVES = 50  # recovery must never dead-letter here (the poison scenario lowers it)
# Batches whose SQS message would be larger go to S3 behind a pointer: the scenarios' small
# batches stay inline, `Sent.big_blob` makes an oversize one.
INLINE_MAX_BYTES = 16_384
# One GetObject as the loop's S3 client makes it: botocore's `max_attempts` (5 in the resource)
# counts retries, so the call is tried 6 times before the load sees the error.
FETCH_CALLS = 6
LONG_POLL_SECONDS = 20  # the loop's longest ReceiveMessage wait
SETTLE_SECONDS = 240  # generous: a loaded 2-core box, timers of 10 s, a loop run's restart

SENSOR_MARKED_DEAD = "the loop run's process is gone"  # defs/ingest/loop.py, in the run's log

T = TypeVar("T")


# -- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    settings: Settings  # what the pipeline sees: AWS through the fault proxy
    direct: Settings  # the test's own AWS calls go straight to the emulator
    proxy: FaultProxy
    base_dir: Path
    supervisor: ChildProcess | None = None
    port: int = 0
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        log_path = self.base_dir / f"dev-{self.starts}.log"
        self.supervisor, self.port = start_dev(self.settings.to_env(), log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()

    def pipeline_pids(self) -> list[int]:
        assert self.supervisor is not None
        return descendants(self.supervisor.pid)

    def trigger_pids(self) -> list[int]:
        return [p for p in self.pipeline_pids() if command_line(p).endswith("cli trigger")]

    def caller_of(self, rule: Hold) -> int:
        """The pipeline process that made the call `rule` is holding."""
        assert rule.client_port is not None
        pid = pid_of_client(rule.client_port, self.proxy.port, self.pipeline_pids())
        assert pid is not None, f"no pipeline process owns client port {rule.client_port}"
        return pid

    def warehouse(self) -> DuckDBWarehouse:
        return DuckDBWarehouse(self.settings.duckdb_path, open_timeout_seconds=5)

    def queue_depths(self) -> tuple[int, int]:
        """(messages in the queue, visible or in flight; messages in the dead-letter queue)."""
        main, dead = (
            sum(BatchQueue.for_settings(self.direct, dead_letters=dlq).depth().values())
            for dlq in (False, True)
        )
        return main, dead

    def log_text(self, name: str) -> str:
        path = self.settings.state_dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the load loop, as Dagster and the loader store see it ------------------------------

    def loop_runs(self) -> list[dict[str, Any]]:
        """Every run of the load loop, newest first (runId, status, startTime, endTime)."""
        return graphql(
            self.url,
            """{ runsOrError(filter: {pipelineName: "events_loop_job"}, limit: 100) {
                  ... on Runs { results { runId status startTime endTime } } } }""",
        )["runsOrError"]["results"]

    def run_events(self, run_id: str, since: float = 0.0) -> list[dict[str, Any]]:
        """The event log of one run (from `since`, epoch seconds)."""
        logs = graphql(
            self.url,
            """query ($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection {
                  events { __typename ... on MessageEvent { message timestamp }
                    ... on ExecutionStepFailureEvent { error { message cause { message } } }
                    ... on ExecutionStepUpForRetryEvent { error { message cause { message } } }
                    ... on AssetCheckEvaluationEvent { evaluation { checkName success } }
                    ... on MaterializationEvent { partition metadataEntries { label } }
                  } } } }""",
            {"runId": run_id},
        )["logsForRun"]
        return [e for e in logs["events"] if int(e["timestamp"]) / 1000 >= since - 1]

    def loop_log(self, since: float) -> list[dict[str, Any]]:
        """The events every loop run wrote since `since`."""
        return [
            event
            for run in self.loop_runs()
            if not run["endTime"] or run["endTime"] >= since - 1
            for event in self.run_events(run["runId"], since)
        ]

    def run_pid(self, run_id: str) -> int | None:
        """The pid of a run's process, as its run worker reported it to Dagster."""
        for event in self.run_events(run_id):
            found = re.search(r"Started process for run \(pid: (\d+)\)", event["message"])
            if found:
                return int(found.group(1))
        return None

    def store_holder(self) -> int:
        """The pid in the loader store's lock file, checked to hold the lock right now."""
        store = self.settings.loader_store_dir
        assert store_in_use(store) is True, "no process holds the loader store"
        words = (store / LOCK_FILE).read_text().split()
        assert words[0] == "pid", words
        return int(words[1])

    def loop_run_of(self, pid: int) -> str:
        """The id of the STARTED loop run whose process is `pid`."""
        started = [run["runId"] for run in self.loop_runs() if run["status"] == "STARTED"]
        owners = [run_id for run_id in started if self.run_pid(run_id) == pid]
        assert owners, f"no STARTED loop run has pid {pid} (started: {started})"
        return owners[0]

    def current_loop(self) -> str:
        """The id of the loop run that holds the store now (waiting for one)."""

        def holder() -> str | None:
            if store_in_use(self.settings.loader_store_dir) is not True:
                return None
            try:
                return self.loop_run_of(self.store_holder())
            except AssertionError:  # the holder is between runs or reports in a moment
                return None

        return wait_for(holder, timeout=SETTLE_SECONDS, interval=1, what="a loop run loading")

    def next_loop_after(self, run_id: str, status: str) -> str:
        """Wait until loop run `run_id` has `status` and another loop run is loading."""

        def replaced() -> str | None:
            statuses = {run["runId"]: run["status"] for run in self.loop_runs()}
            if statuses.get(run_id) != status:
                return None
            new = [r for r, s in statuses.items() if s == "STARTED" and r != run_id]
            return new[0] if new else None

        return wait_for(
            replaced, timeout=SETTLE_SECONDS, interval=2, what=f"{run_id} {status}, a new loop"
        )


@pytest.fixture(scope="module")
def stack(aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base_dir = tmp_path_factory.mktemp("faults")
    proxy = FaultProxy(aws_endpoint, keep_replies_of=frozenset({"ReceiveMessage"})).start()
    env = unique_settings_env(
        proxy.endpoint_url,
        base_dir,
        ANALYTICS_SQS_VISIBILITY_SECONDS=str(VISIBILITY_SECONDS),
        ANALYTICS_QUEUE_MAX_RECEIVES=str(MAX_RECEIVES),
        ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS=str(LOCK_WAIT_SECONDS),
        ANALYTICS_TRIGGER_POLL_SECONDS="0.2",
        ANALYTICS_LOOP_SECONDS=str(LOOP_SECONDS),
        ANALYTICS_SQS_MESSAGE_MAX_BYTES=str(INLINE_MAX_BYTES),
    )
    settings = Settings.from_env(env)
    direct = Settings.from_env({**env, "AWS_ENDPOINT_URL": aws_endpoint})
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_resources(direct)
    running = Stack(settings, direct, proxy, base_dir)
    try:
        running.start()
        yield running
    finally:
        proxy.clear()
        running.stop()
        proxy.stop()


@pytest.fixture(autouse=True)
def no_faults_left(stack: Stack) -> Iterator[None]:
    yield
    stack.proxy.clear()


# -- traffic and the reconciliation ----------------------------------------------------------


@dataclass
class Sent:
    prefix: str
    valid: set[str] = field(default_factory=set)
    invalid: dict[str, str] = field(default_factory=dict)  # messageId -> reason
    started_at: float = field(default_factory=time.time)

    def new_id(self) -> str:
        return f"{self.prefix}{uuid.uuid4().hex[:12]}"

    def blob(
        self,
        valid: int = 4,
        invalid: int = 1,
        at: datetime | None = None,
        sent_at: datetime | None = None,
    ) -> bytes:
        """A gzip blob of `valid` good events and `invalid` tracks without an event name."""
        events: list[dict[str, Any]] = []
        for _ in range(valid):
            events.append(track_event(self.new_id(), at=at))
            self.valid.add(events[-1]["messageId"])
        for _ in range(invalid):
            bad = track_event(self.new_id(), at=at)
            del bad["event"]
            events.append(bad)
            self.invalid[bad["messageId"]] = "missing_event_name"
        return blob(events, gzipped=True, sent_at=sent_at)

    def big_blob(self, at: datetime) -> bytes:
        """Events of day `at` that no other blob shares, enough incompressible bytes for their
        batch to go to S3 (an oversize batch, over INLINE_MAX_BYTES as an SQS message)."""
        events = [track_event(self.new_id(), at=at) for _ in range(60)]
        for event in events:
            event["properties"]["noise"] = os.urandom(300).hex()
            self.valid.add(event["messageId"])
        return blob(events, gzipped=True)

    def batch_ids(self, proxy: FaultProxy) -> set[str]:
        """Batch ids the Lambda sent for this scenario (everything sent since it started)."""
        return {
            b
            for call in proxy.calls_of("SendMessageBatch", self.started_at)
            for b in sent_batch_ids(call)
        }

    def oversize_batch_ids(self, proxy: FaultProxy) -> set[str]:
        return {
            entry_attribute(entry, "batch_id") or ""
            for call in proxy.calls_of("SendMessageBatch", self.started_at)
            for entry in call.entries()
            if entry_attribute(entry, "payload") == "s3"
        }


def received_since(stack: Stack, since: float) -> list[Received]:
    """Messages the loop received since `since` (from receives made up to a long poll before:
    a receive that was waiting when the messages arrived answers with them)."""
    return [
        message
        for call in stack.proxy.calls_of("ReceiveMessage", since - LONG_POLL_SECONDS - 5)
        for message in received_messages(call)
    ]


def put(stack: Stack, *records: tuple[bytes, str]) -> None:
    """PutRecords, straight to the emulator (the client side is not under test here)."""
    kinesis = aws.client("kinesis", stack.direct)
    response = kinesis.put_records(
        StreamName=stack.direct.stream_name,
        Records=[{"Data": data, "PartitionKey": key} for data, key in records],
    )
    assert response["FailedRecordCount"] == 0


def put_in_one_invocation(stack: Stack, *records: tuple[bytes, str]) -> None:
    """Records on one shard that the trigger reads in one GetRecords (its reads wait meanwhile)."""
    gate = stack.proxy.add(Gate("GetRecords"))
    time.sleep(1.0)  # a read already past the gate finishes
    try:
        put(stack, *records)
    finally:
        gate.open()
        stack.proxy.rules.remove(gate)


class SteadyTraffic(threading.Thread):
    """A blob every `interval` seconds until stopped: clients that keep sending through a fault."""

    def __init__(self, stack: Stack, sent: Sent, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.stack, self.sent, self.interval = stack, sent, interval
        self.stopping = threading.Event()
        self.blobs = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            put(self.stack, (self.sent.blob(valid=3, invalid=self.blobs % 4 == 0), "steady"))
            self.blobs += 1
            self.stopping.wait(self.interval)

    def stop(self) -> int:
        self.stopping.set()
        self.join(timeout=30)
        return self.blobs


def readable(read: Callable[[], T | None], what: str) -> T:
    """`read()` once the warehouse lets us (None: a load holds the file right now)."""

    def value() -> tuple[T] | None:
        result = read()
        return None if result is None else (result,)

    return wait_for(value, timeout=60, interval=0.5, what=what)[0]


def rows_of(stack: Stack, prefix: str) -> tuple[dict[str, int], dict[str, tuple[str, int]]] | None:
    """(messageId -> rows in events, messageId -> (reason, rows) in quarantine), or None while
    the warehouse is locked by the loader (or by a scenario)."""
    try:
        warehouse = stack.warehouse()
        events = warehouse.query(
            "SELECT message_id, count(*) FROM analytics.events "
            "WHERE starts_with(message_id, ?) GROUP BY 1",
            [prefix],
        )
        quarantine = warehouse.query(
            "SELECT message_id, min(reason), count(*) FROM analytics.events_quarantine "
            "WHERE starts_with(message_id, ?) GROUP BY 1",
            [prefix],
        )
    except Exception:  # locked, or tables not created yet
        return None
    return (
        {row[0]: row[1] for row in events.rows},
        {row[0]: (row[1], row[2]) for row in quarantine.rows},
    )


# Rows where what the loads kept incrementally differs from the same aggregate computed from
# `events` now (the SQL that materialising a partition runs, over every day at once).
AGGREGATE_DIFFERENCES = {
    "daily_event_counts": """
        WITH counted AS (
            SELECT CAST("timestamp" AS DATE) AS day, type, event, count(*) AS events,
                   count(DISTINCT coalesce(user_id, anonymous_id)) AS users
            FROM analytics.events GROUP BY ALL),
        kept AS (SELECT day, type, event, events, users FROM analytics.daily_event_counts)
        (SELECT 'kept', * FROM kept EXCEPT SELECT 'kept', * FROM counted)
        UNION ALL (SELECT 'counted', * FROM counted EXCEPT SELECT 'counted', * FROM kept)""",
    "daily_active_users": """
        WITH counted AS (
            SELECT CAST("timestamp" AS DATE) AS day,
                   count(DISTINCT coalesce(user_id, anonymous_id)) AS active_users,
                   count(DISTINCT user_id) AS identified_users,
                   count(DISTINCT anonymous_id) FILTER (WHERE user_id IS NULL) AS anonymous_users
            FROM analytics.events GROUP BY 1),
        kept AS (SELECT day, active_users, identified_users, anonymous_users
                 FROM analytics.daily_active_users)
        (SELECT 'kept', * FROM kept EXCEPT SELECT 'kept', * FROM counted)
        UNION ALL (SELECT 'counted', * FROM counted EXCEPT SELECT 'counted', * FROM kept)""",
}


def aggregate_differences(stack: Stack) -> dict[str, list[tuple[Any, ...]]] | None:
    try:
        return {
            table: stack.warehouse().query(sql).rows for table, sql in AGGREGATE_DIFFERENCES.items()
        }
    except Exception:  # locked by a load right now
        return None


def settle(
    stack: Stack,
    sent: Sent,
    expected_events: dict[str, int] | None = None,
    expected_quarantine: dict[str, tuple[str, int]] | None = None,
    expected_dead_letters: int = 0,
    loop_killed: bool = False,
    timeout: float = SETTLE_SECONDS,
) -> None:
    """Wait (without helping) until every sent event is accounted for and the queue is empty,
    then assert the exact reconciliation (by default: each valid messageId once in `events`,
    each invalid one once in `events_quarantine` with its reason), the aggregates against SQL
    over `events`, and that every load since the scenario started reconciled its counts."""
    expected = expected_events or dict.fromkeys(sent.valid, 1)
    if expected_quarantine is None:
        expected_quarantine = {m: (reason, 1) for m, reason in sent.invalid.items()}

    def accounted() -> tuple[Any, ...] | None:
        assert stack.supervisor is not None and stack.supervisor.alive(), "dev exited"
        rows = rows_of(stack, sent.prefix)
        if rows is None:
            return None
        events, quarantine = rows
        depths = stack.queue_depths()
        enough = sum(events.values()) >= sum(expected.values()) and sum(
            count for _, count in quarantine.values()
        ) >= sum(count for _, count in expected_quarantine.values())
        done = enough and depths[0] == 0 and depths[1] >= expected_dead_letters
        return (events, quarantine, depths) if done else None

    try:
        events, quarantine, depths = wait_for(
            accounted, timeout=timeout, interval=2, what=f"{sent.prefix} reconciled"
        )
    except AssertionError:
        print(
            stack.supervisor.tail(30) if stack.supervisor else "",
            stack.log_text("trigger.log")[-3000:],
            stack.log_text("dagster.log")[-6000:],
            json.dumps(stack.loop_runs(), indent=1),
            sep="\n----\n",
        )
        raise
    assert events == expected
    assert quarantine == expected_quarantine
    assert depths == (0, expected_dead_letters)
    differences = readable(lambda: aggregate_differences(stack), "the aggregates")
    assert differences == {table: [] for table in AGGREGATE_DIFFERENCES}, differences
    log = stack.loop_log(sent.started_at)
    if not expected_dead_letters:  # a failed batch fails its load's counts_reconcile check
        # counts_reconcile only: the scenarios send invalid events on purpose, so the loop's
        # quarantine_rate check may rightly warn.
        checks = [
            event["evaluation"]["success"]
            for event in log
            if event["__typename"] == "AssetCheckEvaluationEvent"
            and event["evaluation"]["checkName"] == COUNTS_RECONCILE_CHECK
        ]
        # A killed loop's committed load is reported by the next loop (from the store).
        assert checks and all(checks), checks
    if not loop_killed:  # the sensor fails a loop run only when its process is gone
        marked = [event for event in log if SENSOR_MARKED_DEAD in event.get("message", "")]
        assert not marked, marked


# -- scenarios -------------------------------------------------------------------------------


def test_dev_serves_the_collector_on_loopback(stack: Stack) -> None:
    """`dev` starts the HTTP collector beside the rest and prints its URL (127.0.0.1:8088 by
    default; here the free port the test configured)."""
    url = f"http://127.0.0.1:{stack.settings.collector_port}"
    assert (Settings.from_env({}).collector_host, Settings.from_env({}).collector_port) == (
        "127.0.0.1",
        8088,
    )
    wait_for(lambda: http_status(f"{url}/health") == 200, 60, 0.5, "the collector of dev")
    assert f"Collector (Segment HTTP API): {url}/v1" in stack.supervisor.log_path.read_text()
    collector = [p for p in stack.pipeline_pids() if command_line(p).endswith("cli collector")]
    assert len(collector) == 1
    addresses = listening_addresses(collector[0])
    assert addresses and all(is_loopback(address) for address, _ in addresses), addresses


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


def test_trigger_killed_mid_batch_is_restarted_and_skips_nothing(stack: Stack) -> None:
    """SIGKILL the poller after its SendMessageBatch reached SQS but before it checkpointed."""
    sent = Sent("f-trigger-kill-")
    answered_late = stack.proxy.add(Hold("SendMessageBatch", forward_first=True))
    put(stack, *[(sent.blob(), f"k{i}") for i in range(6)])

    assert answered_late.held.wait(60), "the trigger never sent a batch"
    victim = stack.caller_of(answered_late)
    assert command_line(victim).endswith("cli trigger"), command_line(victim)
    os.kill(victim, signal.SIGKILL)
    answered_late.release()
    assert not wait_gone([victim])
    # The supervisor restarts it; it resumes from its last checkpoint.
    wait_for(lambda: [p for p in stack.trigger_pids() if p != victim], 60, what="new trigger")
    settle(stack, sent)
    # The events in flight at the kill were sent to SQS again by the restarted trigger.
    assert events_sent_to_sqs(stack, sent) > len(sent.valid)


def events_sent_to_sqs(stack: Stack, sent: Sent) -> int:
    """Event rows in the batches the Lambda sent since the scenario started (resends included)."""
    return sum(
        int(entry_attribute(entry, "row_count") or 0)
        for call in stack.proxy.calls_of("SendMessageBatch", sent.started_at)
        for entry in call.entries()
        if entry_attribute(entry, "kind") == "events"
    )


def trigger_log_since(stack: Stack, offset: int) -> str:
    return stack.log_text("trigger.log")[offset:]


def partial_failures_in(log: str) -> list[str]:
    """Sequence numbers a handler invocation reported back as failed (Lambda would retry them)."""
    return re.findall(r"failed_from=(\d+)", log)


def send_yesterday_and_today(
    stack: Stack,
    sent: Sent,
    now: datetime,
    yesterday: tuple[int, int],
    today: tuple[int, int],
    *,
    partition_key: str,
) -> str:
    """A blob of (valid, invalid) events dated yesterday and one dated today, in one Lambda
    invocation, settled; returns what the trigger logged meanwhile."""
    log_offset = len(stack.log_text("trigger.log"))
    put_in_one_invocation(
        stack,
        (sent.blob(*yesterday, at=now - timedelta(days=1)), partition_key),
        (sent.blob(*today, at=now), partition_key),
    )
    settle(stack, sent)
    return trigger_log_since(stack, log_offset)


def test_handler_fails_for_part_of_a_kinesis_batch(stack: Stack) -> None:
    """Today's batch cannot be sent (every attempt of the sink): the handler reports that record
    in batchItemFailures; the trigger keeps the earlier record and retries from the failed one."""
    sent = Sent("f-partial-")
    now = datetime.now(UTC)
    today = now.date().isoformat()
    failing = stack.proxy.add(
        FailEntries(
            lambda e: entry_attribute(e, "kind") == "events" and entry_attribute(e, "day") == today,
            times=4,  # the sink's attempts: all fail, so the handler gives the record back
        )
    )
    trigger_log = send_yesterday_and_today(stack, sent, now, (5, 0), (5, 1), partition_key="p")
    assert failing.applied == 4
    assert partial_failures_in(trigger_log)


def test_send_message_batch_partly_fails(stack: Stack) -> None:
    """SQS answers with some entries in `Failed` twice; the sink re-sends only those entries."""
    sent = Sent("f-sqs-partly-")
    now = datetime.now(UTC)
    failing = stack.proxy.add(
        FailEntries(lambda e: entry_attribute(e, "kind") == "events", times=2)
    )
    trigger_log = send_yesterday_and_today(stack, sent, now, (4, 1), (4, 1), partition_key="q")
    assert failing.applied == 2 and failing.failed_entries
    assert not partial_failures_in(trigger_log)  # healed in the sink


def fetches_of(stack: Stack, sent: Sent) -> Callable[[Call], bool]:
    """Matches an S3 GetObject of one of this scenario's oversize batch bodies."""
    return lambda call: any(b in call.path for b in sent.batch_ids(stack.proxy))


def test_load_fails_before_commit(stack: Stack) -> None:
    """The loop cannot read an oversize batch's body (S3 answers 500 to every botocore retry of
    one read): that load fails before it plans or writes anything, the op's RetryPolicy runs
    the loop again and SQS redelivers the load's messages after the visibility timeout."""
    sent = Sent("f-before-commit-")
    failing = stack.proxy.add(
        FailStatus("s3:GetObject", 500, when=fetches_of(stack, sent), times=FETCH_CALLS)
    )
    put(stack, (sent.big_blob(datetime.now(UTC)), "c0"), *[(sent.blob(), f"c{i}") for i in (1, 2)])
    settle(stack, sent)
    assert sent.oversize_batch_ids(stack.proxy)
    assert failing.applied == FETCH_CALLS
    # The loop's step failed on it (and went up for retry) before a later attempt loaded it.
    failures = [
        event
        for event in stack.loop_log(sent.started_at)
        if event["__typename"] in ("ExecutionStepUpForRetryEvent", "ExecutionStepFailureEvent")
    ]
    assert "injected by the fault proxy" in json.dumps(failures), failures


def deletes_of(stack: Stack, sent: Sent) -> Callable[[Call], bool]:
    """Matches a DeleteMessageBatch of messages carrying this scenario's batches."""

    def matches(call: Call) -> bool:
        batch_ids = sent.batch_ids(stack.proxy)
        handles = {
            message.receipt_handle
            for message in received_since(stack, sent.started_at)
            if message.batch_id in batch_ids
        }
        return any(entry["ReceiptHandle"] in handles for entry in call.entries())

    return matches


def kill_the_loop(stack: Stack, victim: int) -> str:
    """SIGKILL the load loop's process, checked three ways (the caller the test found, the
    store's lock holder, the run's own pid in Dagster); returns the id of its run."""
    assert victim == stack.store_holder(), command_line(victim)
    run_id = stack.loop_run_of(victim)
    print(f"killing loop run {run_id}: {victim} {command_line(victim)[:120]}")
    os.kill(victim, signal.SIGKILL)
    assert not wait_gone([victim])
    return run_id


def test_load_killed_after_commit_before_the_sqs_delete(stack: Stack) -> None:
    """SIGKILL the loop's process while its DeleteMessageBatch (sent after the commit and after
    the store recorded the load) is held: the rows are in, the messages are not deleted. The
    sensor finds the run STARTED with its store lock free, fails it and starts the next loop;
    the messages come back and the store's ledger skips them (the oversize object is deleted
    then, with its message)."""
    sent = Sent("f-after-commit-")
    held = stack.proxy.add(
        Hold("DeleteMessageBatch", forward_first=False, when=deletes_of(stack, sent))
    )
    put(
        stack,
        (sent.big_blob(datetime.now(UTC) - timedelta(days=2)), "d0"),
        *[(sent.blob(), f"d{i}") for i in range(1, 4)],
    )
    assert held.held.wait(120), "the loop never deleted this scenario's messages"
    killed = kill_the_loop(stack, stack.caller_of(held))
    held.release()
    # Killed after its commit: the batches of the held delete are in the warehouse's ledger
    # (their rows committed with them), and their messages are still in the queue.
    in_flight = batches_deleted_by(stack, held.calls[0], sent)
    assert in_flight
    ledger = readable(lambda: ledger_rows(stack, in_flight), "the warehouse after the kill")
    assert ledger == in_flight
    assert stack.queue_depths()[0] > 0
    stack.next_loop_after(killed, "FAILURE")
    settle(stack, sent, loop_killed=True)
    oversize = sent.oversize_batch_ids(stack.proxy)
    assert oversize and not objects_of(stack, oversize)
    # The killed load never reached Dagster from its own run: the next loop reports it (as
    # materializations of the days that are partitions: this state folder's start is today,
    # and the held load may hold only the oversize blob's day).
    log = stack.loop_log(sent.started_at)
    assert [event for event in log if RECOVERED_MESSAGE in event.get("message", "")], log
    recovered = [
        event
        for event in log
        if event["__typename"] == "MaterializationEvent"
        and "recovered_load_ids" in {entry["label"] for entry in event["metadataEntries"]}
    ]
    assert all(event["partition"] for event in recovered)


def objects_of(stack: Stack, batch_ids: set[str]) -> list[str]:
    """Keys in the bucket that belong to these batches (oversize bodies, failure records)."""
    listing = aws.client("s3", stack.direct).list_objects_v2(Bucket=stack.direct.bucket)
    keys = [item["Key"] for item in listing.get("Contents", [])]
    return [key for key in keys if any(b in key for b in batch_ids)]


def batches_deleted_by(stack: Stack, delete: Call, sent: Sent) -> set[str]:
    """Batch ids of the messages a DeleteMessageBatch call names (from the receives it used)."""
    handles = {entry["ReceiptHandle"] for entry in delete.entries()}
    return {
        message.batch_id
        for message in received_since(stack, sent.started_at)
        if message.receipt_handle in handles and message.batch_id
    }


def ledger_rows(stack: Stack, batch_ids: set[str]) -> set[str] | None:
    """Which of `batch_ids` the warehouse's batch ledger holds (None while it is locked)."""
    try:
        result = stack.warehouse().query(
            "SELECT batch_id FROM analytics.loaded_batches WHERE list_contains(?, batch_id)",
            [sorted(batch_ids)],
        )
    except Exception:  # locked by a load right now
        return None
    return {row[0] for row in result.rows}


def test_a_load_that_outlasts_the_visibility_timeout(stack: Stack) -> None:
    """The loop's read of an oversize body answers 5 s after the visibility timeout: the
    load's messages are visible again while it works. No second loader takes them - the store
    is held, so the sensor does not start another loop (and another would wait for the
    store) - and the load commits and deletes them with the receipt handles it has."""
    sent = Sent("f-visibility-")
    slow = stack.proxy.add(
        DelayResponse("s3:GetObject", VISIBILITY_SECONDS + 5, when=fetches_of(stack, sent), times=1)
    )
    put(stack, (sent.big_blob(datetime.now(UTC)), "v0"), *[(sent.blob(), f"v{i}") for i in (1, 2)])
    settle(stack, sent)
    assert slow.applied == 1
    batch_ids = sent.batch_ids(stack.proxy)
    receive_counts = [
        message.receive_count
        for message in received_since(stack, sent.started_at)
        if message.batch_id in batch_ids
    ]
    assert receive_counts and max(receive_counts) == 1, receive_counts
    failed = [
        run
        for run in stack.loop_runs()
        if run["status"] == "FAILURE" and (run["endTime"] or 0) >= sent.started_at
    ]
    assert not failed, failed


LOCK_HOLDER = """
import sys, time, duckdb
while True:
    try:
        connection = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        time.sleep(0.05)
print("locked", flush=True)
sys.stdin.readline()
connection.close()
"""


def test_warehouse_locked_by_another_process_for_longer_than_a_load_attempt(
    stack: Stack,
) -> None:
    """A second real process holds the DuckDB file until a load attempt has given up (after
    ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS, 8 s here) with its intent written: the op's retry
    first recovers that intent (never committed: forgotten), and loads once the file is free."""
    sent = Sent("f-locked-")
    log_offset = len(stack.log_text("dagster.log"))
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(stack.settings.duckdb_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        put(stack, *[(sent.blob(), f"w{i}") for i in range(4)])
        wait_for(
            lambda: "locked by another process" in json.dumps(stack.loop_log(sent.started_at)),
            timeout=180,
            interval=2,
            what="a load attempt that gave up on the lock",
        )
        time.sleep(LOCK_WAIT_SECONDS / 2)  # and into the next attempt
        assert holder.stdin is not None
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
        released_at = datetime.now(UTC).replace(tzinfo=None)
    finally:
        holder.kill()
        holder.wait()
    settle(stack, sent)
    first_load = (
        stack.warehouse()
        .query(
            "SELECT min(loaded_at) FROM analytics.events WHERE starts_with(message_id, ?)",
            [sent.prefix],
        )
        .rows[0][0]
    )
    assert first_load >= released_at - timedelta(seconds=1)
    # The attempt that gave up had written its intent; a later attempt found it uncommitted.
    assert "never committed: its batches load again" in stack.log_text("dagster.log")[log_offset:]


def test_client_resends_a_blob_after_a_lost_acknowledgement(stack: Stack) -> None:
    """The SDK resends the same events (sentAt restamped) after a lost PutRecords answer.

    The first copies arrived minutes or days before the resend (the proxy moves their Kinesis
    arrival time back). The loader's key index is global over its retention (the late-arrival
    window + 1 day of load time), so a copy is skipped whatever its delay and whatever its
    timestamp says: a device clock that jumps 8 days between the attempts moves the copy's
    corrected timestamp into another day, and it is still skipped. Beyond the late-arrival
    window (40 days) the resend is quarantined as timestamp_too_old. A resent invalid event
    stays one quarantine row: its id is its messageId and bytes, not the Kinesis record.
    """
    sent = Sent("f-resend-")
    now = datetime.now(UTC)
    delays = {
        "minutes": timedelta(minutes=5),
        "days-3": timedelta(days=3),
        "days-10": timedelta(days=10),
        "days-40": timedelta(days=40),
    }
    stack.proxy.add(
        ShiftArrival({f"first-{name}": -delay.total_seconds() for name, delay in delays.items()})
    )
    copies: dict[str, list[dict[str, Any]]] = {}
    for name, delay in delays.items():
        created = now - delay - timedelta(seconds=2)
        copies[name] = [track_event(sent.new_id(), at=created) for _ in range(3)]
    bad = track_event(sent.new_id(), at=now - delays["minutes"] - timedelta(seconds=2))
    del bad["event"]
    copies["minutes"].append(bad)
    jumped = [track_event(sent.new_id(), at=now - timedelta(seconds=2)) for _ in range(3)]

    put(
        stack,
        *[
            (blob(copies[name], gzipped=True, sent_at=now - delays[name]), f"first-{name}")
            for name in delays
        ],
        (blob(jumped, gzipped=True, sent_at=now), "first-jumped"),
    )
    first_events = {e["messageId"]: 1 for name in delays for e in copies[name] if e is not bad}
    first_events |= {e["messageId"]: 1 for e in jumped}
    settle(
        stack,
        sent,
        expected_events=first_events,
        expected_quarantine={bad["messageId"]: ("missing_event_name", 1)},
    )

    # The resends, now, each beside fresh events of the same day (so the batch is a new one and
    # the key index, not the batch ledger, must catch the copy).
    resent_at = datetime.now(UTC)
    records = []
    fresh: dict[str, int] = {}
    for name, delay in delays.items():
        records.append((blob(copies[name], gzipped=True, sent_at=resent_at), "again"))
        if name != "days-40":
            companions = [track_event(sent.new_id(), at=now - delay) for _ in range(2)]
            fresh |= {e["messageId"]: 1 for e in companions}
            records.append((blob(companions, gzipped=True, sent_at=resent_at), "again"))
    records.append((blob(jumped, gzipped=True, sent_at=resent_at + timedelta(days=8)), "again"))
    resends_started = time.time()
    put_in_one_invocation(stack, *records)

    too_old = {e["messageId"]: ("timestamp_too_old", 1) for e in copies["days-40"]}
    settle(
        stack,
        sent,
        expected_events=first_events | fresh,
        expected_quarantine={bad["messageId"]: ("missing_event_name", 1)} | too_old,
    )
    # Every batch of the resends reached the loop (none is still queued: the copies were
    # received and skipped), the jumped copies' batch of 8 days ago among them.
    resent = {
        b
        for call in stack.proxy.calls_of("SendMessageBatch", resends_started)
        for b in sent_batch_ids(call)
    }
    received = {message.batch_id for message in received_since(stack, resends_started)}
    eight_days_ago = (resent_at - timedelta(days=8)).date().isoformat()
    days = {
        entry_attribute(entry, "day")
        for call in stack.proxy.calls_of("SendMessageBatch", resends_started)
        for entry in call.entries()
    }
    assert resent and resent <= received
    assert eight_days_ago in days


def loaded_ids(stack: Stack, sent: Sent) -> set[str]:
    """MessageIds of the scenario in `events` so far (none while the file is locked)."""
    rows = rows_of(stack, sent.prefix)
    return set(rows[0]) if rows else set()


def test_the_loop_run_terminated_from_dagster_mid_stream(stack: Stack) -> None:
    """Clients keep sending while an operator terminates the loop run from Dagster: the op is
    interrupted wherever it is (a receive, a load, a delete), the run ends CANCELED, the sensor
    starts the next loop, and that one recovers what the first left (an intent, undeleted
    messages) before it loads on."""
    sent = Sent("f-terminate-")
    traffic = SteadyTraffic(stack, sent, interval=0.5)
    traffic.start()
    try:
        wait_for(lambda: loaded_ids(stack, sent), 120, 1, "the first rows loaded")
        run_id = stack.current_loop()
        answer = graphql(
            stack.url,
            """mutation ($runId: String!) { terminateRun(runId: $runId) { __typename } }""",
            {"runId": run_id},
        )
        assert answer["terminateRun"]["__typename"] == "TerminateRunSuccess", answer
        terminated_at = time.time()
        stack.next_loop_after(run_id, "CANCELED")
        time.sleep(3)  # and a few blobs for the new loop
    finally:
        assert traffic.stop() >= 4
    settle(stack, sent)
    # Ended, not retried: the op's RetryPolicy did not open the loader again after it.
    after = [
        event
        for event in stack.run_events(run_id)
        if int(event["timestamp"]) / 1000 >= terminated_at
    ]
    assert "RunCanceledEvent" in [event["__typename"] for event in after], after
    reopened = f"loading {stack.settings.queue_name} for"
    assert not [event for event in after if reopened in event.get("message", "")], after


def test_a_loop_run_ends_at_its_deadline_and_the_next_takes_over(stack: Stack) -> None:
    """Each loop run loads for ANALYTICS_LOOP_SECONDS (45 s here), then returns; the sensor
    starts the next. Clients sending across the handover lose nothing and double nothing, and
    the run that ended did so by its deadline (SUCCESS), not by a failure."""
    sent = Sent("f-handover-")
    first = stack.current_loop()
    traffic = SteadyTraffic(stack, sent, interval=2.0)
    traffic.start()
    try:
        second = stack.next_loop_after(first, "SUCCESS")
        wait_for(
            lambda: any(
                e["__typename"] == "MaterializationEvent" for e in stack.run_events(second)
            ),
            SETTLE_SECONDS,
            2,
            "a load by the next loop run",
        )
    finally:
        traffic.stop()
    settle(stack, sent)


def test_an_oversize_batch_whose_s3_object_is_gone_goes_to_the_dead_letter_queue(
    stack: Stack,
) -> None:
    """The S3 object of an oversize batch is deleted before the loop reads it (an expired
    object, an operator's mistake): GetObject answers NoSuchKey, the batch fails alone and is
    not deleted; SQS gives it back until maxReceiveCount (2 here), then moves it to the
    dead-letter queue, where `dlq list` shows why. The loop keeps loading everything else
    meanwhile, in the same run."""
    sent = Sent("f-object-gone-")
    ensure_resources(
        Settings.from_env({**stack.direct.to_env(), "ANALYTICS_QUEUE_MAX_RECEIVES": "2"})
    )
    loop = stack.current_loop()
    read = stack.proxy.add(Hold("s3:GetObject", forward_first=False, when=fetches_of(stack, sent)))
    try:
        put(stack, (sent.big_blob(datetime.now(UTC) - timedelta(days=1)), "o0"))
        gone = set(sent.valid)  # its events are never loaded
        sent.valid.clear()
        assert read.held.wait(120), "the loop never read the oversize body"
        oversize = sent.oversize_batch_ids(stack.proxy)
        assert len(oversize) == 1
        objects = objects_of(stack, oversize)
        assert len(objects) == 1, objects
        aws.client("s3", stack.direct).delete_object(Bucket=stack.direct.bucket, Key=objects[0])
        read.release()  # dropped unanswered: botocore retries and finds no object
        # Everything else keeps loading while the batch goes round.
        put(stack, *[(sent.blob(), f"o{i}") for i in range(1, 4)])
        settle(stack, sent, expected_dead_letters=1)
    finally:
        ensure_resources(stack.direct)
    letters = dead_letters_for(stack.direct)
    assert [letter.batch_id for letter in letters] == list(oversize)
    assert letters[0].failure is not None and "NoSuchKey" in letters[0].failure.error
    assert letters[0].failure.receive_count == 2
    loaded = rows_of(stack, sent.prefix)
    assert loaded is not None and not set(loaded[0]) & gone
    assert [run["status"] for run in stack.loop_runs() if run["runId"] == loop] in (
        ["STARTED"],
        ["SUCCESS"],  # its time was up meanwhile
    )
    dead = BatchQueue.for_settings(stack.direct, dead_letters=True)
    dead.delete_messages([m.receipt_handle for m in dead.receive(10, 30)])
    assert stack.queue_depths() == (0, 0)


def test_every_pipeline_process_killed_at_once_and_dev_started_again(stack: Stack) -> None:
    """SIGKILL the supervisor and its whole tree (trigger, collector, dagster dev, webserver,
    daemon, code server, the loop run between its commit and its SQS delete) at once, keep
    sending, and start `analytics-pipeline dev` again: it reuses the emulator, whose state
    survived; its sensor fails the dead loop run (its store lock is free) and starts a loop."""
    sent = Sent("f-kill-all-")
    held = stack.proxy.add(
        Hold("DeleteMessageBatch", forward_first=False, when=deletes_of(stack, sent))
    )
    put(stack, *[(sent.blob(), f"x{i}") for i in range(4)])
    assert held.held.wait(120), "the loop never deleted this scenario's messages"
    loop_process = stack.caller_of(held)
    assert loop_process == stack.store_holder()
    dead_run = stack.loop_run_of(loop_process)
    assert stack.supervisor is not None
    old = stack.supervisor
    tree = {pid: command_line(pid) for pid in [old.pid, *stack.pipeline_pids()]}
    assert any(c.endswith("cli trigger") for c in tree.values()), tree
    assert any(" dev " in c and "dagster" in c for c in tree.values()), tree
    assert loop_process in tree

    print("killing at once:", *[f"{p} {c[:90]}" for p, c in sorted(tree.items())], sep="\n  ")
    killed = kill_tree_at_once(old.pid)
    held.release()
    assert set(tree) <= set(killed)
    assert not wait_gone(killed), {pid: tree.get(pid) for pid in killed}
    assert not is_alive(loop_process)
    old.stop()  # reaps it; nothing left to signal

    put(stack, *[(sent.blob(), f"y{i}") for i in range(4)])  # clients keep sending meanwhile
    stack.start()
    assert stack.supervisor is not None
    assert "reused" in stack.supervisor.log_path.read_text()
    stack.next_loop_after(dead_run, "FAILURE")
    settle(stack, sent, loop_killed=True)
    failure = [e for e in stack.run_events(dead_run) if e["__typename"] == "RunFailureEvent"]
    assert SENSOR_MARKED_DEAD in json.dumps(failure), failure  # no code server left to tell
