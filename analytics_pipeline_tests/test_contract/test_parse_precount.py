"""The batch count taken before decoding (blobs with very many commas) is exact.

Commas inside strings, escaped quotes and brackets inside strings, and nested arrays must not
count as events; what is counted must be what the list decode would have found.
"""

from __future__ import annotations

import msgspec

from analytics_pipeline.contract import Limits
from analytics_pipeline.contract.blob import PRECOUNT_MIN_COMMAS
from analytics_pipeline_testkit.blobs import blob_bytes, parse, track

TRICKY = 'a,b "quoted, [with] {brackets}" \\ back\\slash ,,,'


def events_with_commas(count: int, commas_each: int) -> list[dict[str, object]]:
    return [
        track(f"m-{i}", properties={"s": TRICKY, "list": [[1, 2], {"x": [3, 4]}] * commas_each})
        for i in range(count)
    ]


def test_commas_inside_strings_and_nested_values_are_not_events() -> None:
    batch = events_with_commas(40, commas_each=PRECOUNT_MIN_COMMAS // 40 // 4 + 1)
    data = blob_bytes(batch)
    assert data.count(b",") >= PRECOUNT_MIN_COMMAS  # the precount path runs

    result = parse(data, Limits(max_events_per_blob=40, max_event_bytes=1_000_000))

    assert [row.reason for row in result.rejected] == []
    assert len(result.accepted) == 40
    assert msgspec.json.decode(result.accepted[0].properties)["s"] == TRICKY


def test_the_precount_reports_the_exact_number_of_events() -> None:
    batch = events_with_commas(41, commas_each=PRECOUNT_MIN_COMMAS // 41 // 4 + 1)
    data = blob_bytes(batch)
    assert data.count(b",") >= PRECOUNT_MIN_COMMAS

    result = parse(data, Limits(max_events_per_blob=40, max_event_bytes=1_000_000))

    assert [row.reason for row in result.rejected] == ["blob_too_many_events"]
    assert "41 events; the limit is 40" in result.rejected[0].detail


def test_an_unreadable_blob_with_many_commas_is_judged_by_the_full_decode() -> None:
    data = b'{"batch": [' + b"1," * PRECOUNT_MIN_COMMAS  # truncated JSON

    assert [row.reason for row in parse(data).rejected] == ["blob_not_json"]
