"""Faults injected into the real local stack; the pipeline must recover on its own.

One `analytics-pipeline dev` (supervisor, trigger poller, `dagster dev` with its daemon,
webserver, code server and run workers) runs for the whole module, pointed through a fault
proxy (`fault_proxy.py`) at the session's AWS emulator. Each scenario sends its own events
(message ids with a scenario prefix, valid and invalid), injects one fault for real - an AWS
answer the proxy fails or holds, a SIGKILL of the process found through /proc, a second process
holding the DuckDB lock - and then waits, without helping, until:

    valid events sent   == rows in `events` with that prefix, each messageId exactly once
    invalid events sent == rows in `events_quarantine` with that prefix, with their reason
    the queue (and its dead-letter queue) is empty.

Scenarios run in file order; the last one kills every process and starts `dev` again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from analytics_pipeline import aws
from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.local.stack import child_env
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import (
    command_line,
    descendants,
    free_port,
    graphql,
    is_loopback,
    kill_tree_at_once,
    listening_addresses,
    pid_of_client,
    server_answers,
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
    ShiftArrival,
    entry_attribute,
    received_messages,
    sent_batch_ids,
)

pytestmark = pytest.mark.e2e

VISIBILITY_SECONDS = 20
LOCK_WAIT_SECONDS = 8
# One GetObject as the run's S3 client makes it: botocore's `max_attempts` (5 in the resource)
# counts retries, so the call is tried 6 times before the op sees the error.
FETCH_CALLS = 6
SETTLE_SECONDS = 180  # generous: a loaded 2-core box, timers of 20 s, run retries


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
        self.port = free_port()
        self.starts += 1
        env = child_env(self.settings)
        env["DAGSTER_DISABLE_TELEMETRY"] = "1"
        self.supervisor = ChildProcess(
            "dev",
            [sys.executable, "-m", "analytics_pipeline.cli", "dev", "--port", str(self.port)],
            self.base_dir / f"dev-{self.starts}.log",
            env,
        ).start()
        wait_for(self._ready, timeout=180, interval=1, what="analytics-pipeline dev")

    def _ready(self) -> bool:
        assert self.supervisor is not None
        if not self.supervisor.alive():
            raise AssertionError(f"analytics-pipeline dev exited:\n{self.supervisor.tail()}")
        return server_answers(self.url)

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


@pytest.fixture(scope="module")
def stack(aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base_dir = tmp_path_factory.mktemp("faults")
    proxy = FaultProxy(aws_endpoint, keep_replies_of=frozenset({"ReceiveMessage"})).start()
    env = unique_settings_env(
        proxy.endpoint_url,
        base_dir,
        ANALYTICS_SQS_VISIBILITY_SECONDS=str(VISIBILITY_SECONDS),
        ANALYTICS_QUEUE_MAX_RECEIVES="50",  # recovery must never dead-letter here
        ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS=str(LOCK_WAIT_SECONDS),
        ANALYTICS_TRIGGER_POLL_SECONDS="0.2",
        ANALYTICS_AGGREGATE_CRON="0 0 1 1 *",  # keep aggregate runs out of the way
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

    def batch_ids(self, proxy: FaultProxy) -> set[str]:
        """Batch ids the Lambda sent for this scenario (everything sent since it started)."""
        return {
            b
            for call in proxy.calls_of("SendMessageBatch", self.started_at)
            for b in sent_batch_ids(call)
        }


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


def settle(
    stack: Stack,
    sent: Sent,
    expected_events: dict[str, int] | None = None,
    expected_quarantine: dict[str, tuple[str, int]] | None = None,
    timeout: float = SETTLE_SECONDS,
) -> None:
    """Wait (without helping) until every sent event is accounted for and the queue is empty,
    then assert the exact reconciliation (by default: each valid messageId once in `events`,
    each invalid one once in `events_quarantine` with its reason)."""
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
        return (events, quarantine, depths) if enough and depths[0] == 0 else None

    try:
        events, quarantine, depths = wait_for(
            accounted, timeout=timeout, interval=2, what=f"{sent.prefix} reconciled"
        )
    except AssertionError:
        print(
            stack.supervisor.tail(30) if stack.supervisor else "",
            stack.log_text("trigger.log")[-3000:],
            stack.log_text("dagster.log")[-6000:],
            sep="\n----\n",
        )
        raise
    assert events == expected
    assert quarantine == expected_quarantine
    assert depths == (0, 0)


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


def deletes_of(stack: Stack, sent: Sent) -> Callable[[Call], bool]:
    """Matches a DeleteMessageBatch of messages carrying this scenario's batches."""

    def matches(call: Call) -> bool:
        batch_ids = sent.batch_ids(stack.proxy)
        handles = {
            message.receipt_handle
            for receive in stack.proxy.calls_of("ReceiveMessage", sent.started_at)
            for message in received_messages(receive)
            if message.batch_id in batch_ids
        }
        return any(entry["ReceiptHandle"] in handles for entry in call.entries())

    return matches


def fetches_of(stack: Stack, sent: Sent) -> Callable[[Call], bool]:
    """Matches an S3 GetObject of one of this scenario's batch bodies."""
    return lambda call: any(b in call.path for b in sent.batch_ids(stack.proxy))


def load_run_events(stack: Stack, since: float) -> str:
    """The event logs of the load runs started since `since`, as text to search."""
    runs = graphql(
        stack.url,
        """{ runsOrError(filter: {pipelineName: "load_batches_job"}, limit: 100) {
              ... on Runs { results { runId startTime } } } }""",
    )["runsOrError"]["results"]
    texts = []
    for run in runs:
        if (run["startTime"] or 0) < since - 1:
            continue
        logs = graphql(
            stack.url,
            """query ($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection {
                  events { __typename ... on MessageEvent { message }
                    ... on ExecutionStepFailureEvent { error { message cause { message } } }
                    ... on ExecutionStepUpForRetryEvent { error { message cause { message } } }
                  } } } }""",
            {"runId": run["runId"]},
        )
        texts.append(json.dumps(logs))
    return "\n".join(texts)


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
    log_offset = len(stack.log_text("trigger.log"))
    put_in_one_invocation(
        stack,
        (sent.blob(valid=5, invalid=0, at=now - timedelta(days=1)), "p"),
        (sent.blob(valid=5, invalid=1, at=now), "p"),
    )
    settle(stack, sent)
    assert failing.applied == 4
    assert partial_failures_in(trigger_log_since(stack, log_offset))


def test_send_message_batch_partly_fails(stack: Stack) -> None:
    """SQS answers with some entries in `Failed` twice; the sink re-sends only those entries."""
    sent = Sent("f-sqs-partly-")
    now = datetime.now(UTC)
    failing = stack.proxy.add(
        FailEntries(lambda e: entry_attribute(e, "kind") == "events", times=2)
    )
    log_offset = len(stack.log_text("trigger.log"))
    put_in_one_invocation(
        stack,
        (sent.blob(valid=4, invalid=1, at=now - timedelta(days=1)), "q"),
        (sent.blob(valid=4, invalid=1, at=now), "q"),
    )
    settle(stack, sent)
    assert failing.applied == 2 and failing.failed_entries
    assert not partial_failures_in(trigger_log_since(stack, log_offset))  # healed in the sink


def test_load_fails_before_commit(stack: Stack) -> None:
    """The run cannot read a batch body (S3 answers 500 to every botocore retry of one fetch):
    that load attempt fails before any warehouse write; a retry (of the run, or SQS redelivery)
    loads the batch."""
    sent = Sent("f-before-commit-")
    failing = stack.proxy.add(
        FailStatus("s3:GetObject", 500, when=fetches_of(stack, sent), times=FETCH_CALLS)
    )
    put(stack, *[(sent.blob(), f"c{i}") for i in range(4)])
    settle(stack, sent)
    assert failing.applied == FETCH_CALLS
    # A load attempt failed (its step failed or went up for retry) before the one that loaded.
    events = load_run_events(stack, sent.started_at)
    assert "ExecutionStepFailureEvent" in events or "ExecutionStepUpForRetryEvent" in events


def test_load_killed_after_commit_before_the_sqs_delete(stack: Stack) -> None:
    """SIGKILL the run worker while its DeleteMessageBatch (sent after the commit) is held: the
    rows are in, the messages are not deleted; they come back and the ledger skips them."""
    sent = Sent("f-after-commit-")
    held = stack.proxy.add(
        Hold("DeleteMessageBatch", forward_first=False, when=deletes_of(stack, sent))
    )
    put(stack, *[(sent.blob(), f"d{i}") for i in range(4)])
    assert held.held.wait(120), "no load run deleted this scenario's messages"
    victim = stack.caller_of(held)
    print(f"run worker holding the delete: {victim} {command_line(victim)}")
    assert "trigger" not in command_line(victim)
    os.kill(victim, signal.SIGKILL)
    assert not wait_gone([victim])
    held.release()
    # Killed after its commit: the batches of the held delete are in the ledger (their rows
    # committed with them), and their messages are still in the queue.
    in_flight = batches_deleted_by(stack, held.calls[0], sent)
    assert in_flight
    ledger = wait_for(
        lambda: ledger_rows(stack, in_flight), 30, what="warehouse readable after the kill"
    )
    assert ledger == in_flight
    assert stack.queue_depths()[0] > 0
    settle(stack, sent)


def batches_deleted_by(stack: Stack, delete: Call, sent: Sent) -> set[str]:
    """Batch ids of the messages a DeleteMessageBatch call names (from the receives it used)."""
    handles = {entry["ReceiptHandle"] for entry in delete.entries()}
    return {
        message.batch_id
        for receive in stack.proxy.calls_of("ReceiveMessage", sent.started_at)
        for message in received_messages(receive)
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


def test_visibility_timeout_expires_while_the_first_run_still_works(stack: Stack) -> None:
    """The first run's read of a batch body answers after the visibility timeout: the message
    is received again and a second run loads it too; the ledger keeps one copy."""
    sent = Sent("f-visibility-")
    slow = stack.proxy.add(
        DelayResponse(
            "s3:GetObject", VISIBILITY_SECONDS + 15, when=fetches_of(stack, sent), times=1
        )
    )
    put(stack, *[(sent.blob(), f"v{i}") for i in range(4)])
    settle(stack, sent)
    assert slow.applied == 1
    batch_ids = sent.batch_ids(stack.proxy)
    receive_counts = [
        message.receive_count
        for receive in stack.proxy.calls_of("ReceiveMessage", sent.started_at)
        for message in received_messages(receive)
        if message.batch_id in batch_ids
    ]
    assert max(receive_counts) >= 2, receive_counts


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
    ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS, 8 s here); the load is retried and succeeds once
    the file is free."""
    sent = Sent("f-locked-")
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
            lambda: "locked by another process" in load_run_events(stack, sent.started_at),
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


def test_client_resends_a_blob_after_a_lost_acknowledgement(stack: Stack) -> None:
    """The SDK resends the same events (sentAt restamped) after a lost PutRecords answer.

    The first copies arrived minutes or days before the resend (the proxy moves their Kinesis
    arrival time back). Skew correction gives both copies the same `timestamp`, and the loader's
    dedupe window is centred on `timestamp`, so a resend is skipped whatever its delay, up to the
    late-arrival window: beyond it (40 days) the resend is quarantined as timestamp_too_old.
    A device clock that jumps between the attempts moves the corrected timestamp; beyond the
    dedupe window (8 days) that copy is loaded a second time. A resent invalid event stays one
    quarantine row: its id is its messageId and bytes, not the Kinesis record it came in.
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
    # the messageId check, not the batch ledger, must catch the copy).
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
    put_in_one_invocation(stack, *records)

    too_old = {e["messageId"]: ("timestamp_too_old", 1) for e in copies["days-40"]}
    settle(
        stack,
        sent,
        expected_events=first_events | fresh | {e["messageId"]: 2 for e in jumped},
        expected_quarantine={bad["messageId"]: ("missing_event_name", 1)} | too_old,
    )
    # Every batch the Lambda sent is in the ledger now, the resent quarantine row's included:
    # the single row is the loader's dedupe on a content-derived id, not a copy still queued.
    batch_ids = sent.batch_ids(stack.proxy)
    wait_for(
        lambda: ledger_rows(stack, batch_ids) == batch_ids,
        timeout=SETTLE_SECONDS,
        interval=2,
        what="every batch of the scenario in the ledger",
    )
    rows = wait_for(lambda: rows_of(stack, sent.prefix), timeout=60, what="the quarantine")
    assert rows[1][bad["messageId"]] == ("missing_event_name", 1)


def test_every_pipeline_process_killed_at_once_and_dev_started_again(stack: Stack) -> None:
    """SIGKILL the supervisor and its whole tree (trigger, dagster dev, webserver, daemon, code
    server, a run worker between its commit and its SQS delete) at once, keep sending, and start
    `analytics-pipeline dev` again: it reuses the emulator, whose state survived."""
    sent = Sent("f-kill-all-")
    held = stack.proxy.add(
        Hold("DeleteMessageBatch", forward_first=False, when=deletes_of(stack, sent))
    )
    put(stack, *[(sent.blob(), f"x{i}") for i in range(4)])
    assert held.held.wait(120), "no load run deleted this scenario's messages"
    run_worker = stack.caller_of(held)
    assert stack.supervisor is not None
    old = stack.supervisor
    tree = {pid: command_line(pid) for pid in [old.pid, *stack.pipeline_pids()]}
    assert any(c.endswith("cli trigger") for c in tree.values()), tree
    assert any(" dev " in c and "dagster" in c for c in tree.values()), tree
    assert run_worker in tree

    print("killing at once:", *[f"{p} {c[:90]}" for p, c in sorted(tree.items())], sep="\n  ")
    killed = kill_tree_at_once(old.pid)
    held.release()
    assert set(tree) <= set(killed)
    assert not wait_gone(killed), {pid: tree.get(pid) for pid in killed}
    old.stop()  # reaps it; nothing left to signal

    put(stack, *[(sent.blob(), f"y{i}") for i in range(4)])  # clients keep sending meanwhile
    stack.start()
    assert stack.supervisor is not None
    assert "reused" in stack.supervisor.log_path.read_text()
    settle(stack, sent)
