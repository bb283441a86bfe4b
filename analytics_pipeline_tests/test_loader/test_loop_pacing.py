"""The loop spaces loads by the write streams they created (BigQuery's CreateWriteStream quota)."""

from __future__ import annotations

from types import SimpleNamespace

from analytics_pipeline.loader.load import LoadOutcome
from analytics_pipeline.loader.loop import run_loop
from analytics_pipeline.settings import Settings


class BusyQueue:
    """A queue that always has a message (an in-process double)."""

    def receive(self, **_: object) -> list[object]:
        return [object()]


def loader_creating(streams: int) -> SimpleNamespace:
    return SimpleNamespace(
        queue=BusyQueue(),
        load=lambda messages: LoadOutcome(write_streams=streams),
        unreported=list,  # no load left unreported
        reported=lambda outcome: None,
    )


def test_loads_that_create_streams_are_spaced_to_the_hourly_budget() -> None:
    # 4 streams a load at 28,800 streams an hour: one load per 0.5 s at most.
    settings = Settings.from_env({"ANALYTICS_BIGQUERY_STREAMS_PER_HOUR": "28800"})

    loads = list(run_loop(loader_creating(4), settings, seconds=2.0))

    assert 1 <= len(loads) <= 5  # 2 s / 0.5 s, plus the first at once


def test_loads_that_create_no_streams_are_not_held_back() -> None:
    settings = Settings.from_env({"ANALYTICS_BIGQUERY_STREAMS_PER_HOUR": "1"})

    loads = list(run_loop(loader_creating(0), settings, seconds=0.5))

    assert len(loads) > 5  # a budget of one stream an hour would allow one load
