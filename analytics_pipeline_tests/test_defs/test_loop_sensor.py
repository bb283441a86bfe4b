"""The loop sensor's rule for a dead loop run (the one it marks failed and replaces).

A wrong "dead" starts a second loop beside a live one (it waits for the store, and the live one
shows as failed); a wrong "alive" leaves the queue unloaded until the run's max runtime.
"""

from __future__ import annotations

from analytics_pipeline.defs.ingest.loop import DEAD_AFTER_SECONDS, is_dead

NOW = 1_800_000_000.0
TEN_MINUTES_OLD = NOW - 600


def test_a_loop_run_between_an_op_failure_and_its_retry_is_not_taken_for_dead() -> None:
    """During the RetryPolicy's backoff the op has let the store go, but the run wrote its
    STEP_UP_FOR_RETRY seconds ago."""
    assert not is_dead(TEN_MINUTES_OLD, NOW - 10, store_held=False, now=NOW)
    assert not is_dead(TEN_MINUTES_OLD, NOW - DEAD_AFTER_SECONDS + 1, store_held=False, now=NOW)


def test_a_loop_run_quiet_and_without_its_store_is_dead_and_one_holding_it_is_not() -> None:
    assert is_dead(TEN_MINUTES_OLD, NOW - DEAD_AFTER_SECONDS, store_held=False, now=NOW)
    assert not is_dead(TEN_MINUTES_OLD, NOW - 3600, store_held=True, now=NOW)  # idle, loading
    assert not is_dead(NOW - 5, NOW - 5, store_held=False, now=NOW)  # still opening the store
