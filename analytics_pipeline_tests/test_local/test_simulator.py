"""The traffic simulator: what it sends is what it reports, judged by the real wire contract."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from analytics_pipeline.client.client import kinesis_client
from analytics_pipeline.contract import Limits, parse_blob
from analytics_pipeline.local.simulator import SimulationReport, run_forever, simulate
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.doubles import KinesisDouble
from analytics_pipeline_testkit.traffic import read_stream


def judge(settings: Settings, blobs: list[bytes]) -> tuple[list[str], Counter[str], list[float]]:
    """Accepted message ids, rejections by reason, and |timestamp - received_at| in seconds."""
    accepted: list[str] = []
    rejected: Counter[str] = Counter()
    offsets: list[float] = []
    for data in blobs:
        received_at = datetime.now(UTC)
        result = parse_blob(
            data, received_at=received_at, source="test", limits=Limits.from_settings(settings)
        )
        accepted += [row.message_id for row in result.accepted]
        offsets += [abs((row.timestamp - received_at).total_seconds()) for row in result.accepted]
        rejected.update(row.reason for row in result.rejected)
    return accepted, rejected, offsets


def simulate_to_double(
    kinesis: KinesisDouble | None = None, *, rate: float | None = None, **options: Any
) -> SimulationReport:
    """`simulate` on default settings into a Kinesis double, with no progress line."""
    return simulate(
        Settings.from_env({}),
        rate=rate,
        progress=False,
        kinesis=kinesis if kinesis is not None else KinesisDouble(),
        **options,
    )


def test_simulated_events_are_judged_as_the_report_says() -> None:
    settings = Settings.from_env({})
    kinesis = KinesisDouble()
    report = simulate_to_double(kinesis, clients=8, events=600, invalid_ratio=0.25, seed=7)
    assert report.generated == 600
    assert report.stats is not None and report.stats.sent == 600
    assert report.stats.dropped == report.stats.failed == 0
    assert len(report.invalid_by_reason) >= 8  # the faults are spread over many reasons
    assert report.events_by_type["track"] > report.events_by_type["screen"] > 0

    accepted, rejected, offsets = judge(settings, [r["Data"] for r in kinesis.stored_records()])
    assert sorted(accepted) == sorted(report.valid_message_ids)
    assert rejected == report.invalid_by_reason
    assert sum(rejected.values()) == report.invalid
    assert set(report.invalid_message_ids).isdisjoint(accepted)

    # Device clocks are minutes off, yet every corrected timestamp lands near the receive time.
    assert max(abs(skew) for skew in report.clock_skews_seconds) > 60
    assert max(offsets) < 5


def test_devices_have_skewed_clocks_and_some_identify() -> None:
    kinesis = KinesisDouble()
    report = simulate_to_double(kinesis, clients=20, events=1000, seed=3)
    assert 0 < report.identified_devices < 20
    blobs = kinesis.stored_blobs()
    assert len({blob["context"]["device"]["id"] for blob in blobs}) == 20
    assert len({record["PartitionKey"] for record in kinesis.stored_records()}) == 20
    now = datetime.now(UTC)
    skews = [(datetime.fromisoformat(blob["sentAt"]) - now).total_seconds() for blob in blobs]
    assert min(skews) < -30 and max(skews) > 30  # sentAt is stamped by each device's own clock
    events = [event for blob in blobs for event in blob["batch"]]
    identified = {e["anonymousId"] for e in events if e["type"] == "identify"}
    assert len(identified) == report.identified_devices
    tracks = [e for e in events if e["type"] == "track"]
    assert 300 < sum(len(str(e["properties"])) for e in tracks) / len(tracks) < 900


def test_same_seed_same_traffic_new_message_ids() -> None:
    runs = [simulate_to_double(clients=4, events=200, invalid_ratio=0.1, seed=11) for _ in range(2)]
    assert runs[0].events_by_type == runs[1].events_by_type
    assert runs[0].invalid_by_reason == runs[1].invalid_by_reason
    assert runs[0].clock_skews_seconds == runs[1].clock_skews_seconds
    assert set(runs[0].valid_message_ids).isdisjoint(runs[1].valid_message_ids)


def test_rate_limits_events_per_second() -> None:
    started = time.monotonic()
    report = simulate_to_double(clients=3, events=60, rate=150.0)
    elapsed = time.monotonic() - started
    assert 0.35 < elapsed < 2.0  # 60 events at 150/s take 0.4 s
    assert report.generated == 60


def test_run_forever_stops_cleanly_and_sends_everything() -> None:
    kinesis = KinesisDouble()
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    lines: list[str] = []
    report = run_forever(
        Settings.from_env({}), 200.0, clients=10, kinesis=kinesis, stop=stop, say=lines.append
    )
    assert 50 < report.generated < 200
    assert report.stats is not None and report.stats.sent == report.generated
    assert len(kinesis.stored_events()) == report.generated
    assert report.valid_message_ids == []  # a forever run keeps counts, not ids
    assert "events from 10 simulated devices" in lines[-1]


@pytest.mark.e2e
def test_simulate_through_moto(pipeline_settings: Settings) -> None:
    report = simulate(
        pipeline_settings, clients=10, events=300, rate=None, progress=False, invalid_ratio=0.1
    )
    records = read_stream(kinesis_client(pipeline_settings), pipeline_settings.stream_name)
    accepted, rejected, _ = judge(pipeline_settings, [record.data for record in records])
    assert sorted(accepted) == sorted(report.valid_message_ids)
    assert rejected == report.invalid_by_reason
    assert report.valid + report.invalid == 300


@pytest.mark.e2e
def test_simulate_forever_process_stops_on_sigterm(pipeline_settings: Settings) -> None:
    """The way `analytics-pipeline dev --simulate` runs it: its own process, stopped by SIGTERM."""
    code = (
        "from analytics_pipeline.local.simulator import run_forever\n"
        "from analytics_pipeline.settings import Settings\n"
        "run_forever(Settings.from_env(), 300.0, clients=20)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-u", "-c", code],
        env=dict(os.environ),  # pipeline_settings put this test's stream into the environment
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert "simulating 20 devices" in first_line
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    (summary,) = [line for line in output.splitlines() if " events from " in line]
    generated = int(summary.split(" events from ")[0])
    records = read_stream(kinesis_client(pipeline_settings), pipeline_settings.stream_name)
    sent_events = sum(
        len(parse_blob(r.data, received_at=datetime.now(UTC), source="t").accepted) for r in records
    )
    assert generated > 100
    assert sent_events == generated
