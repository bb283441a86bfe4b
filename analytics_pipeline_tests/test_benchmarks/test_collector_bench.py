"""The collector benchmark runs once on tiny inputs so it cannot rot (no timing is asserted)."""

from __future__ import annotations

import pytest

from benchmarks import collector_bench


@pytest.mark.e2e
def test_collector_bench_smoke_measures_every_part() -> None:
    arguments = ["--events", "10", "--requests", "60", "--concurrency", "4"]
    result = collector_bench.main([*arguments, "--rate", "50", "--seconds", "1"])
    assert result.throughput.statuses == {200: 60}
    assert result.throughput.events == 600 and result.throughput.collector_cpu > 0
    assert len(result.ceilings) == 2 and all(rate > 0 for rate in result.ceilings.values())
    assert result.latency["ok"] == 50 and result.latency["not_ok"] == 0
