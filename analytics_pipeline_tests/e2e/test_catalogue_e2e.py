"""The bad-input catalogue end to end, while good events keep flowing, plus poison batches.

Every catalogue entry is put on the emulator's Kinesis stream over HTTP as one record, while an
SDK client sends good events from another thread; the real trigger process runs the real
handler, batches go through SQS, `dagster dev` loads them into DuckDB. The test ends when every
good event is in `events` once, every catalogue outcome is where the catalogue says (matched to
its Kinesis record by the quarantine row's `source`), the verbatim entries round-trip column by
column, and three poison messages (a corrupt gzip body, a body that is not base64, a message
without batch attributes) have left the main queue for the dead-letter queue, where
`analytics-pipeline dlq list` (a real process) shows why.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from analytics_pipeline import aws
from analytics_pipeline.client import Client
from analytics_pipeline.contract import blob_quarantine_id, event_quarantine_id
from analytics_pipeline.contract.batches import BatchHeader, BatchKind, Payload
from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.local.stack import child_env
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import open_warehouse
from analytics_pipeline_testkit.catalogue import (
    ACCEPTED,
    CATALOGUE,
    BadInput,
    Build,
    event_positions,
)
from analytics_pipeline_testkit.processes import (
    DagsterDev,
    is_loopback,
    listening_addresses,
    running_stack,
    wait_showing_logs,
)

pytestmark = pytest.mark.e2e

MAX_RECEIVES = 3
VISIBILITY_SECONDS = 20  # a poison message comes back quickly; a good batch loads well within it


@pytest.fixture
def settings(new_pipeline: Callable[..., Settings]) -> Settings:
    return new_pipeline(
        ANALYTICS_STREAM_SHARDS="1",
        ANALYTICS_QUEUE_MAX_RECEIVES=str(MAX_RECEIVES),
        ANALYTICS_SQS_VISIBILITY_SECONDS=str(VISIBILITY_SECONDS),
        ANALYTICS_TRIGGER_POLL_SECONDS="0.2",
    )


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials every process of the stack gets; none may write the secret anywhere."""
    value = f"sentinel-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", f"sentinel-key-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", value)
    return value


@pytest.fixture
def stack(settings: Settings, secret: str) -> Iterator[tuple[ChildProcess, DagsterDev]]:
    with running_stack(settings) as processes:
        yield processes


class GoodTraffic(threading.Thread):
    """An SDK client sending valid events until stopped: the pipeline must not miss one."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.client = Client(
            settings.stream_name, kinesis=aws.client("kinesis", settings), gzip=True, flush_at=25
        )
        self.sent: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        number = 0
        while not self.stop_event.is_set():
            self.sent.append(
                self.client.track("Good Event", {"n": number}, anonymous_id="good-device")
            )
            number += 1
            if number % 25 == 0:
                time.sleep(0.1)

    def finish(self) -> list[str]:
        self.stop_event.set()
        self.join(timeout=30)
        self.client.close()
        return self.sent


def put_catalogue(settings: Settings, build: Build) -> dict[str, tuple[BadInput, bytes]]:
    """Each entry as one Kinesis record; returns each quarantine `source` -> (entry, its data)."""
    kinesis = aws.client("kinesis", settings)
    sources = {}
    for entry in CATALOGUE:
        data = entry.build(build)
        response = kinesis.put_record(
            StreamName=settings.stream_name, Data=data, PartitionKey=entry.name
        )
        source = (
            f"kinesis:{settings.stream_name}:{response['ShardId']}:{response['SequenceNumber']}"
        )
        sources[source] = (entry, data)
    return sources


def put_poison(settings: Settings) -> dict[str, str]:
    """Three messages no run can load; returns batch id (or 'no-header') -> expected `why`."""
    sqs = aws.client("sqs", settings)
    url = sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
    today = datetime.now(UTC).date().isoformat()
    expected = {}
    for batch_id, body, why in (
        (f"corrupt-gzip-{uuid.uuid4().hex[:6]}", base64.b64encode(b"not gzip").decode(), "load:"),
        (f"not-base64-{uuid.uuid4().hex[:6]}", "*** not base64 ***", "load:"),
    ):
        header = BatchHeader(batch_id, BatchKind.EVENTS, today, 1, "", "", Payload.INLINE)
        sqs.send_message(
            QueueUrl=url, MessageBody=body, MessageAttributes=header.to_message_attributes()
        )
        expected[batch_id] = why
    sqs.send_message(QueueUrl=url, MessageBody="a stray message, not a batch")
    expected["no-header"] = "load: missing message attribute"
    return expected


def queue_counts(settings: Settings, dead_letters: bool = False) -> int:
    """Messages waiting or in flight in the queue (or its dead-letter queue)."""
    return sum(BatchQueue.for_settings(settings, dead_letters=dead_letters).depth().values())


def test_the_catalogue_and_poison_batches_end_to_end_while_good_events_flow(
    settings: Settings, stack: tuple[ChildProcess, DagsterDev], secret: str, tmp_path: Path
) -> None:
    trigger, dagster = stack
    # Everything we start listens on loopback only (webserver, code server, daemon, trigger).
    listening = listening_addresses(dagster.pid) | listening_addresses(trigger.pid)
    assert any(port == int(dagster.url.rsplit(":", 1)[1]) for _, port in listening)
    assert all(is_loopback(address) for address, _ in listening), listening
    build = Build(now=datetime.now(UTC), tag=uuid.uuid4().hex[:8])
    good = GoodTraffic(settings)
    good.start()
    poison = put_poison(settings)
    sources = put_catalogue(settings, build)
    good_ids = set(good.finish())
    assert len(good_ids) >= 25

    expected_events = good_ids | {
        build.message_id(entry.name, index)
        for entry in CATALOGUE
        for index, outcome in enumerate(entry.outcomes)
        if outcome == ACCEPTED
    }
    expected_quarantine = sum(
        1 for entry in CATALOGUE for outcome in entry.outcomes if outcome != ACCEPTED
    )
    warehouse = open_warehouse(settings)

    def settled() -> tuple[int, int, int, int] | None:
        assert trigger.alive(), trigger.tail()
        try:
            counts = warehouse.table_row_counts()
        except Exception:  # not created yet, or a load holds the file
            return None
        seen = (
            counts.get("events", 0),
            counts.get("events_quarantine", 0),
            queue_counts(settings),
            queue_counts(settings, dead_letters=True),
        )
        wanted = (len(expected_events), expected_quarantine, 0, len(poison))
        return seen if seen == wanted else None

    wait_showing_logs(stack, settled, 300, what="events, quarantine, queue and DLQ")

    loaded = warehouse.query(
        "SELECT message_id, count(*) FROM analytics.events GROUP BY message_id"
    ).rows
    assert {message_id for message_id, _ in loaded} == expected_events
    assert {count for _, count in loaded} == {1}

    # Every catalogue outcome, entry by entry, event by event.
    quarantine = warehouse.query(
        "SELECT source, quarantine_id, reason, message_id, payload FROM analytics.events_quarantine"
    ).rows
    outcomes: dict[str, dict[int, str]] = defaultdict(dict)
    for source, row_id, reason, message_id, payload in quarantine:
        entry, data = sources[source]
        if entry.blob_level:
            assert row_id == blob_quarantine_id(data) and message_id is None
            outcomes[entry.name][0] = reason
            continue
        # The payload is the event's bytes verbatim: it gives the position the id may not.
        index = event_positions(data)[payload.encode()]
        assert row_id == event_quarantine_id(payload.encode(), message_id, source, index)
        outcomes[entry.name][index] = reason
    for entry in CATALOGUE:
        got = [outcomes[entry.name].get(i, ACCEPTED) for i in range(len(entry.outcomes))]
        assert tuple(got) == entry.outcomes, entry.name

    # Verbatim entries, compared with what the warehouse returns, column by column.
    for entry in CATALOGUE:
        if not entry.stored:
            continue
        columns = list(entry.stored)
        rows = warehouse.query(
            f"SELECT {', '.join(columns)} FROM analytics.events WHERE message_id = ?",
            [build.message_id(entry.name)],
        ).rows
        assert len(rows) == 1, entry.name
        for column, value in zip(columns, rows[0], strict=True):
            stored = json.loads(value) if column in {"properties", "context", "traits"} else value
            assert stored == entry.stored[column], (entry.name, column, stored)

    # The poison messages: out of the way, and `dlq list` (a real process) says why.
    listing = subprocess.run(
        [sys.executable, "-m", "analytics_pipeline.cli", "dlq", "list", "--format", "json"],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    letters: list[dict[str, Any]] = json.loads(listing.stdout)
    whys = {letter["batch_id"] or "no-header": letter["why"] for letter in letters}
    assert set(whys) == set(poison)
    for batch_id, why in poison.items():
        assert whys[batch_id].startswith(why), whys[batch_id]
    assert "gzip" in whys[next(b for b in poison if b.startswith("corrupt-gzip"))].lower()

    # No credential in any log, run record or state file the stack wrote.
    leaks = [
        str(path)
        for path in tmp_path.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]
    assert not leaks
