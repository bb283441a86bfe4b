"""The benchmark code runs once on tiny inputs so it cannot rot (no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.e2e_bench import E2EResult, Sample, group_runs, run_e2e
from benchmarks.loader_bench import events_in, load_input
from benchmarks.report import BenchRun, write
from benchmarks.workload import MAX_BLOB_EVENTS, MIN_BLOB_EVENTS, realistic_workload


def test_the_workload_has_the_shape_the_benchmarks_claim() -> None:
    workload = realistic_workload(3_000, seed=3)
    assert workload.events == 3_000
    assert all(MIN_BLOB_EVENTS <= n <= MAX_BLOB_EVENTS for n in workload.event_counts[:-1])
    assert all(blob[:2] == b"\x1f\x8b" for blob in workload.blobs)  # gzip, as clients send


def test_micro_benchmarks_write_results_on_tiny_inputs(tmp_path: Path) -> None:
    arguments = ["--events", "1500", "--rounds", "1", "--batch-events", "200"]
    arguments += ["--load-events", "500", "--dlt-events", "300", "--loader-rounds", "1"]
    results = run.main([*arguments, "--skip-e2e", "--out", str(tmp_path)])

    text = results.read_text()
    for section in ("## Summary", "## 1. Handler", "## 2. Loader", "## 4. Bytes per event"):
        assert section in text
    for loader in ("read_json", "dlt `pipeline.run`, default", "parquet"):
        assert loader in text
    assert "analytics-pipeline cost --events-per-month 1000000000" in text
    assert "all-in $ per million events at 1 B events/month" in text


def test_load_input_groups_batches_into_loads_of_the_asked_size() -> None:
    data = load_input(realistic_workload(2_000, seed=5), events_per_batch=200, events_per_load=700)
    assert data.events == 2_000
    assert len({batch.batch_id for batch in data.all_batches()}) == len(data.all_batches())
    multi_batch_loads = [load for load in data.loads if len(load) > 1]
    assert multi_batch_loads and all(events_in(load) <= 700 for load in multi_batch_loads)


def steady_run(backlog: list[int], sqs_depth: list[int], loaded_rate: int = 100) -> E2EResult:
    """A 100 s run at 100 events/s whose samples (one per second over the second half) have
    these backlogs and queue depths, rows becoming queryable at `loaded_rate`; everything sent
    was loaded."""
    result = E2EResult(rate=100, seconds=100, warehouse="duckdb", settings={})
    result.sent = result.queryable = 10_000
    for index, (behind, depth) in enumerate(zip(backlog, sqs_depth, strict=True)):
        queryable = loaded_rate * (50 + index)
        sample = Sample(50 + index, queryable + behind, queryable, depth, 0, None, {}, 0.0)
        result.samples.append(sample)
    return result


def test_a_run_is_bounded_only_while_it_keeps_up_and_neither_backlog_nor_depth_grows() -> None:
    flat = [300, 500, 200] * 17
    rising = list(range(100, 151))
    assert steady_run(flat, [2, 0, 1] * 17).bounded
    assert not steady_run(rising, [2, 0, 1] * 17).bounded
    assert not steady_run(flat, list(range(51))).bounded
    assert not steady_run([2_100, *flat[1:]], [1] * 51).bounded  # over 20 s of traffic
    # a backlog that looks flat, while rows became queryable at only 70 % of the rate
    assert not steady_run(flat, [1] * 51, loaded_rate=70).bounded


def test_repeats_report_the_median_run() -> None:
    runs = []
    for p50 in (3.0, 1.0, 2.0):
        result = E2EResult(rate=1_000, seconds=10, warehouse="duckdb", settings={})
        result.latencies = [(0.0, p50)] * 10
        runs.append(result)
    (group,) = group_runs(runs)
    assert group.p50 == 2.0 and group.representative is runs[2] and len(group.runs) == 3


@pytest.mark.e2e
@pytest.mark.parametrize("warehouse", ["duckdb", "bigquery"])
def test_e2e_bench_smoke_loads_everything_it_sent(warehouse: str, tmp_path: Path) -> None:
    result = run_e2e(rate=200, seconds=4, warehouse=warehouse, drain_timeout=90, say=print)

    assert result.failure is None
    assert result.sent > 0 and result.queryable == result.sent
    assert len(result.latencies) == len(result.stages) == result.sent
    assert [run_["jobName"] for run_ in result.runs] == ["events_loop_job"]  # one loop run
    assert {"emulator", "trigger", "dagster", "run worker", "clients"} <= set(result.peak_rss_mb)
    assert result.cpu_seconds["run worker"] > 0  # the loop run's process was found
    assert any(s.iterator_age_seconds is not None for s in result.samples)  # trigger log format
    assert sum(events for _, events in result.loads) == result.sent  # from the ledger
    assert result.load_seconds  # from the loop's materializations
    write(BenchRun(command="test", workload="tiny", e2e=[result]), tmp_path)
    assert (tmp_path / f"e2e_loop_{warehouse}_200.png").stat().st_size > 0
    assert "## 3. End to end" in (tmp_path / "RESULTS.md").read_text()
