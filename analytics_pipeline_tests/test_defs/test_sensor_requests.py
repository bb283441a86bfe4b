"""How the sensor turns received batches into run requests (pure logic, no AWS)."""

import dagster as dg

from analytics_pipeline.defs.ingest.sensors import run_key_for, run_requests_for
from analytics_pipeline.loader import BatchRef

PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=2)


def _ref(message_id: str, day: str, kind: str = "events", receive_count: int = 1) -> BatchRef:
    return BatchRef(
        sqs_message_id=message_id,
        receipt_handle=f"rh-{message_id}-{receive_count}",
        receive_count=receive_count,
        batch_id=f"b-{message_id}",
        kind=kind,
        day=day,
        row_count=10,
        bucket="bucket",
        key=f"staging/{kind}/{day}/b-{message_id}.ndjson.gz",
        staged=True,
    )


def test_one_run_per_day_with_the_kinds_present() -> None:
    refs = [
        _ref("m1", "2026-03-01"),
        _ref("m2", "2026-03-01", kind="quarantine"),
        _ref("m3", "2026-03-02"),
    ]
    requests, outside = run_requests_for(refs, PARTITIONS)
    assert outside == []
    by_day = {request.partition_key: request for request in requests}
    assert set(by_day) == {"2026-03-01", "2026-03-02"}
    assert {k.to_user_string() for k in by_day["2026-03-01"].asset_selection} == {
        "events",
        "events_quarantine",
    }
    assert {k.to_user_string() for k in by_day["2026-03-02"].asset_selection} == {"events"}
    messages = by_day["2026-03-01"].run_config["ops"]["load_batches"]["config"]["messages"]
    assert {m["sqs_message_id"] for m in messages} == {"m1", "m2"}
    assert by_day["2026-03-01"].tags["analytics/rows"] == "20"


def test_days_outside_the_partitions_are_not_requested() -> None:
    requests, outside = run_requests_for([_ref("old", "2025-06-01")], PARTITIONS)
    assert requests == []
    assert [ref.sqs_message_id for ref in outside] == ["old"]


def test_run_key_changes_with_the_receive_count() -> None:
    """A run key is used once ever: a redelivered message must get a new one."""
    first = run_key_for([_ref("m1", "2026-03-01"), _ref("m2", "2026-03-01")])
    same = run_key_for([_ref("m2", "2026-03-01"), _ref("m1", "2026-03-01")])
    redelivered = run_key_for([_ref("m1", "2026-03-01", receive_count=2), _ref("m2", "2026-03-01")])
    assert first == same
    assert redelivered != first
