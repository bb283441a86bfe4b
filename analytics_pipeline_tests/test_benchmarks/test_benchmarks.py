"""The benchmark code runs once on tiny inputs so it cannot rot (no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.e2e_bench import run_e2e
from benchmarks.loader_bench import load_input
from benchmarks.report import BenchRun, write
from benchmarks.workload import MAX_BLOB_EVENTS, MIN_BLOB_EVENTS, realistic_workload


def test_the_workload_has_the_shape_the_benchmarks_claim() -> None:
    workload = realistic_workload(3_000, seed=3)
    assert workload.events == 3_000
    assert all(MIN_BLOB_EVENTS <= n <= MAX_BLOB_EVENTS for n in workload.event_counts[:-1])
    assert all(blob[:2] == b"\x1f\x8b" for blob in workload.blobs)  # gzip, as clients send


def test_micro_benchmarks_write_results_on_tiny_inputs(tmp_path: Path) -> None:
    arguments = ["--events", "1500", "--rounds", "1", "--batch-events", "200"]
    arguments += ["--run-events", "500", "--dlt-events", "300", "--loader-rounds", "1"]
    results = run.main([*arguments, "--skip-e2e", "--out", str(tmp_path)])

    text = results.read_text()
    for section in ("## Summary", "## 1. Handler", "## 2. Loader", "## 4. Bytes per event"):
        assert section in text
    for loader in ("read_json", "dlt `pipeline.run`, default", "parquet"):
        assert loader in text
    assert "analytics-pipeline cost --events-per-month 1000000000" in text
    assert "all-in $ per million events at 1 B events/month" in text


def test_load_input_groups_batches_into_runs_of_the_asked_size() -> None:
    data = load_input(realistic_workload(2_000, seed=5), events_per_batch=200, events_per_run=700)
    assert data.events == 2_000
    assert len({ref.batch_id for ref in data.all_refs()}) == len(data.all_refs())
    multi_batch_runs = [run_ for run_ in data.runs if len(run_) > 1]
    assert all(sum(ref.row_count for ref in run_) <= 700 for run_ in multi_batch_runs)


@pytest.mark.e2e
def test_e2e_bench_smoke_loads_everything_it_sent(tmp_path: Path) -> None:
    result = run_e2e(rate=200, seconds=4, drain_timeout=90, say=lambda _: None)

    assert result.failure is None
    assert result.sent > 0 and result.queryable == result.sent
    assert len(result.latencies) == result.sent and result.runs
    assert set(result.peak_rss_mb) == {"emulator", "trigger", "dagster", "clients"}
    assert any(s.iterator_age_seconds is not None for s in result.samples)  # trigger log format
    assert result.sensor_ticks  # read back from Dagster's tick history
    write(BenchRun(command="test", workload="tiny", e2e=[result]), tmp_path)
    assert (tmp_path / "e2e_200.png").stat().st_size > 0
    assert "## 3. End to end" in (tmp_path / "RESULTS.md").read_text()
