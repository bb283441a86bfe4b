"""The BigQuery items of the bill: Storage Write API bytes, storage, the scheduled duplicate
check's scans (at least 10 MB per table per query) and the queries a load does not make."""

from __future__ import annotations

import math

from analytics_pipeline.cost.bill import Bill, any_of, qty
from analytics_pipeline.cost.prices import (
    BIGQUERY_MIN_BYTES_PER_TABLE,
    DAYS_PER_MONTH,
    GIB,
    HOURS_PER_MONTH,
    PRICES,
    TIB,
)
from analytics_pipeline.cost.terms import round6


def add_bigquery_items(bill: Bill) -> None:
    """Adds to `bill` what BigQuery bills for its loads (after the SQS items set them)."""
    s, a, p = bill.sizes, bill.assume, bill.pipeline
    epi = bill.events_per_load
    names = a.distinct_event_names
    p_late = any_of(epi, a.late_event_share)
    counts_rows = names * any_of(epi * (1 - a.late_event_share), 1 / names)  # distinct
    counts_rows += p_late  # a late day's few events: about one row
    users_rows = 1 + p_late
    delta_bytes = (
        counts_rows * s.event_counts_delta_row_bytes + users_rows * s.active_users_delta_row_bytes
    )
    events_bytes = bill.events * s.write_api_row_bytes
    quarantine_bytes = bill.events * a.rejected_share * s.quarantine_row_bytes
    deltas = bill.loads * delta_bytes
    ledger = bill.fetches * bill.messages_per_send * s.ledger_row_bytes  # a row per batch
    written = events_bytes + quarantine_bytes + deltas + ledger
    # one PENDING stream per table a load writes (model._Bill._sqs: loads are spaced by them)
    streams_per_hour = bill.loads / HOURS_PER_MONTH * bill.streams_per_load
    write = PRICES["bigquery_write_api"]
    bill.add(
        "BigQuery Storage Write API",
        written / GIB * write.usd,
        f"({qty(bill.events)} events x {qty(s.write_api_row_bytes)} B + "
        f"{qty(bill.events * a.rejected_share)} quarantine rows x "
        f"{qty(s.quarantine_row_bytes)} B + {qty(bill.loads)} loads x {qty(delta_bytes)} B of "
        f"aggregate deltas ({qty(counts_rows)} event-count rows, {qty(users_rows)} active-user "
        f"rows) + {qty(ledger / GIB)} GiB of ledger rows) = {qty(written / GIB)} GiB x "
        f"${write.usd}/GiB; the stream calls "
        f"(create, append, finalize, commit: {qty(streams_per_hour)} streams an hour) are not "
        "billed",
        "BigQuery",
    )
    bill.free(
        "BigQuery Storage Write API: 2 TiB monthly free tier",
        "bigquery_write_api_tib",
        written / TIB,
        write.usd * TIB / GIB,
        "BigQuery",
    )
    stored = (
        bill.events * s.events_row_bytes + quarantine_bytes + deltas + ledger
    ) * a.storage_months
    storage = PRICES["bigquery_active_storage"]
    bill.add(
        "BigQuery active storage (first month)",
        stored / GIB * storage.usd,
        f"({qty(bill.events)} x {qty(s.events_row_bytes)} B of events + quarantine + deltas + "
        "ledger) x "
        f"{a.storage_months:g} month(s) = {qty(stored / GIB)} GiB-month x ${storage.usd}",
        "BigQuery",
    )
    bill.free(
        "BigQuery storage: monthly free tier",
        "bigquery_storage_gib",
        stored / GIB,
        storage.usd,
        "BigQuery",
    )
    bill.add(
        "BigQuery queries per load",
        0.0,
        "none: rows go in by Storage Write API appends (PENDING stream per table, one "
        "BatchCommitWriteStreams); the dedupe index and batch ledger are in the loader store; "
        "aggregates are delta rows in the same commit: 0 tables referenced x 10 MB",
        "BigQuery",
    )
    query = PRICES["bigquery_on_demand_query"]
    check = p.duplicate_check
    ticks = check.ticks_per_month
    day_rows = bill.events / DAYS_PER_MONTH
    per_row = s.duplicate_check_bytes_per_row
    floor = BIGQUERY_MIN_BYTES_PER_TABLE
    full_day = max(floor, day_rows * per_row)
    # Each tick scans the days updated since the one before: today's partition as full as
    # the time of day (none at 00:00), each finished day once after its midnight, and the
    # older days late events updated (every tick, or every day when ticks are rarer).
    p_today = -math.expm1(-bill.loads / ticks) if ticks else 0.0
    today = check.days_per_month * sum(
        p_today * max(floor, minute / 1440 * day_rows * per_row)
        for minute in check.minutes_of_day
        if minute
    )
    finished = DAYS_PER_MONTH * full_day
    late_scans = a.late_days_updated_per_day * max(ticks, DAYS_PER_MONTH)
    scanned = today + finished + late_scans * full_day if ticks else 0.0
    fill = (
        sum(m / 1440 for m in check.minutes_of_day) / len(check.minutes_of_day)
        if check.minutes_of_day
        else 0
    )
    bill.add(
        "BigQuery duplicate check (scheduled)",
        scanned / TIB * query.usd,
        f"'{check.expression}' = {qty(ticks)} ticks; each scans message_id + timestamp "
        f"({qty(per_row)} B a row, at least 10 MiB a day scanned; clustering prunes nothing) "
        f"of: today so far ({fill:.0%} of {qty(day_rows)} rows on average) = "
        f"{qty(today / GIB)} GiB, each finished day once: {qty(DAYS_PER_MONTH)} x "
        f"{qty(full_day / GIB)} GiB, {a.late_days_updated_per_day} late day(s) x "
        f"{qty(max(ticks, DAYS_PER_MONTH))} = {qty(late_scans)} x {qty(full_day / GIB)} GiB; "
        f"= {qty(scanned / TIB)} TiB x ${query.usd}/TiB",
        "BigQuery",
    )
    bill.free(
        "BigQuery queries: 1 TiB monthly free tier",
        "bigquery_query_tib",
        scanned / TIB,
        query.usd,
        "BigQuery",
    )
    bill.add(
        "BigQuery aggregate refresh (scheduled)",
        0.0,
        "none: daily_event_counts and daily_active_users are views summing the delta rows "
        "written with each load (in the Write API and storage items); no scheduled query; "
        "reading a view is your query (a day repaired from the UI scans that day once)",
        "BigQuery",
    )
    bill.derived.update(
        bigquery_written_gib=round6(written / GIB),
        write_streams_per_hour=round6(streams_per_hour),
        bigquery_stored_gib_month=round6(stored / GIB),
        duplicate_check_tib=round6(scanned / TIB),
    )
