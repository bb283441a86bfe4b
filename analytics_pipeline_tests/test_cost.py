"""The cost model: its arithmetic on inputs worked out by hand, its choices, its output, the CLI.

The expected figures below are written as plain products of the inputs and the list prices, not
through the model's code, so a wrong formula or a wrong price in the model fails them.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from analytics_pipeline.cli import main
from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.cost import Assumptions, PipelineParameters, estimate, pipeline_parameters
from analytics_pipeline.cost.cron import schedule, ticks_per_month
from analytics_pipeline.cost.sizes import MeasuredSizes, measure
from analytics_pipeline.settings import Settings

GIB, TIB = 2**30, 2**40
# 2,628,000 s in a 730-hour month: 2.628 billion events are 1,000 events/s, 86.4 M a day.
EVENTS = 2_628_000_000

SIZES = MeasuredSizes(
    events_per_blob=10,
    blob_bytes=1000,
    blob_bytes_per_event=100,
    events_row_bytes=500,
    write_api_row_bytes=500,
    quarantine_row_bytes=400,
    sqs_body_bytes_per_event=100,
    sqs_body_bytes_per_rejected_row=300,
    sqs_attribute_bytes_per_message=200,
    s3_pointer_body_bytes=100,
    duplicate_check_bytes_per_row=40,
    event_counts_delta_row_bytes=50,
    active_users_delta_row_bytes=40,
    store_keys_per_event=1.5,
    ledger_row_bytes=120,
)
PIPELINE = PipelineParameters(
    trigger_batch_size=1000,
    sqs_message_max_bytes=1_048_576,
    sqs_batch_max_entries=10,
    sqs_batch_max_bytes=1_048_576,
    sqs_receive_max_messages=10,
    load_max_messages=100,
    loop_max_wait_seconds=20,
    duplicate_check=schedule("0 * * * *"),
    key_retention_days=31,
    bigquery_streams_per_hour=100_000,  # no spacing at these volumes (tested on its own)
    health_interval_seconds=30,
    health_cloudwatch_every_seconds=0,
)
ASSUME = Assumptions(
    events_per_blob=10,
    peak_to_average=1.0,
    late_event_share=0.0,
    late_days_updated_per_day=1,
    rejected_share=0.0,
    distinct_event_names=1,
    lambda_architecture="x86_64",
    lambda_memory_mb=1769,
    lambda_fixed_ms=10.0,
    handler_events_per_second=100_000,
    kinesis_retention_hours=24,
    queues=1,
    loader_host_in_aws=False,
    hosts=1,
    host_hourly_usd=0.1,
    free_tiers=False,
    storage_months=1.0,
)


def _items(events: int = EVENTS, warehouse: str = "bigquery", **changes: object) -> dict:
    result = estimate(events, warehouse, PIPELINE, SIZES, replace(ASSUME, **changes))
    return {item.item: item.monthly_usd for item in result.items}


def test_the_arithmetic_on_known_inputs() -> None:
    # 262.8 M records of 1,000 B: 100 records/s and 100 kB/s, one shard; Lambda invokes once a
    # second (1,000 events), 10 ms + 1,000 / 100,000 s = 20 ms at 1,769 MB (a full vCPU); 24 h
    # of Kinesis retention are free; one SQS message of
    # 1,000 x 100 B + 200 B = 100,200 B = 2 chunks of 64 KiB, each way; one delete per load.
    expected = {
        "Kinesis shard-hours (provisioned)": 1 * 730 * 0.015,
        "Kinesis PUT payload units": 262_800_000 * 1 * 0.014 / 1e6,
        "Kinesis extended retention (provisioned)": 0.0,
        "Lambda requests": 2_628_000 * 0.20 / 1e6,
        "Lambda duration (x86_64)": 2_628_000 * 0.020 * (1769 / 1024) * 0.0000166667,
        "SQS SendMessageBatch (Lambda)": 2_628_000 * 2 * 0.40 / 1e6,
        "SQS DeleteMessageBatch (loader loop)": 2_628_000 * 0.40 / 1e6,
        # the health sensor: the queue's and the DLQ's depths every 30 s
        "SQS GetQueueAttributes (health sensor)": 2_628_000 / 30 * 2 * 0.40 / 1e6,
        "S3 (oversize batches only)": 0.0,
        "AWS data transfer out": 2_628_000 * 100_200 / GIB * 0.09,
        # 500 B per event + one 50 B and one 40 B delta row per load + a 120 B ledger row
        "BigQuery Storage Write API": (EVENTS * 500 + 2_628_000 * 210) / GIB * 0.025,
        "BigQuery active storage (first month)": (EVENTS * 500 + 2_628_000 * 210) / GIB * 0.02,
        "BigQuery queries per load": 0.0,
        # hourly, 86.4 M rows a day x 40 B: today at 01:00 ... 23:00 (1/24 ... 23/24 of a day,
        # 11.5 days a day), each day once finished, 1 late day at each of the 730 ticks
        "BigQuery duplicate check (scheduled)": (365 / 12 * 11.5 + 365 / 12 + 730)
        * 86_400_000
        * 40
        / TIB
        * 6.25,
        "BigQuery aggregate refresh (scheduled)": 0.0,
    }
    items = _items()
    for name, usd in expected.items():
        assert items[name] == pytest.approx(usd, rel=1e-6), name
    # receives: the same 2 chunks per load and the short poll that finds the queue empty; (nearly)
    # no empty long polls at one message a second
    assert items["SQS ReceiveMessage (loader loop)"] == pytest.approx(2_628_000 * 3 * 0.4 / 1e6)
    result = estimate(EVENTS, "bigquery", PIPELINE, SIZES, ASSUME)
    assert result.monthly_usd == pytest.approx(sum(items.values()))
    assert result.monthly_usd == pytest.approx(
        sum(expected.values()) + 2_628_000 * 3 * 0.4 / 1e6, rel=1e-6
    )
    assert result.per_million_usd == pytest.approx(result.monthly_usd / 2628)
    assert result.hosts_monthly_usd == pytest.approx(1 * 0.1 * 730)


def test_the_health_sensor_pays_per_tick_and_cloudwatch_only_when_enabled() -> None:
    assert "CloudWatch GetMetricData (health sensor)" not in _items()
    quick = replace(PIPELINE, health_interval_seconds=5, health_cloudwatch_every_seconds=60)
    result = estimate(EVENTS, "bigquery", quick, SIZES, ASSUME)
    items = {item.item: item.monthly_usd for item in result.items}
    assert items["SQS GetQueueAttributes (health sensor)"] == pytest.approx(
        2_628_000 / 5 * 2 * 0.40 / 1e6
    )
    # once a minute, 3 metrics (queue and DLQ oldest-message age, the Lambda's IteratorAge)
    assert items["CloudWatch GetMetricData (health sensor)"] == pytest.approx(
        2_628_000 / 60 * 3 * 0.01 / 1000
    )
    two = estimate(EVENTS, "bigquery", quick, SIZES, replace(ASSUME, queues=2))
    doubled = {item.item: item.monthly_usd for item in two.items}
    assert doubled["SQS GetQueueAttributes (health sensor)"] == pytest.approx(
        2 * items["SQS GetQueueAttributes (health sensor)"]
    )


def test_the_health_parameters_come_from_the_settings() -> None:
    from analytics_pipeline.cost import pipeline_parameters

    assert pipeline_parameters(Settings.from_env({})).health_cloudwatch_every_seconds == 0
    on = Settings.from_env(
        {"ANALYTICS_HEALTH_CLOUDWATCH": "true", "ANALYTICS_HEALTH_INTERVAL_SECONDS": "10"}
    )
    parameters = pipeline_parameters(on)
    assert parameters.health_interval_seconds == 10
    assert parameters.health_cloudwatch_every_seconds == 60  # CloudWatch has a point a minute


def test_bigquery_loads_are_spaced_to_the_write_stream_budget() -> None:
    """At one load a second and 4 streams a load (14,400 an hour) a budget of 8,000 streams an
    hour allows 1,460,000 loads a month of 1.8 sends each: fewer receives and deletes, the
    same bytes."""
    spaced = PipelineParameters(**{**vars(PIPELINE), "bigquery_streams_per_hour": 8000})
    items = {
        item.item: item.monthly_usd
        for item in estimate(EVENTS, "bigquery", spaced, SIZES, ASSUME).items
    }
    free = _items()
    loads = 8000 * 730 / 4
    assert items["SQS DeleteMessageBatch (loader loop)"] == pytest.approx(loads * 0.4 / 1e6)
    # 1.8 x 100,200 B = 180,360 B: 3 chunks of 64 KiB, and the closing short poll
    assert items["SQS ReceiveMessage (loader loop)"] == pytest.approx(
        loads * 4 * 0.4 / 1e6, rel=1e-4
    )
    assert items["AWS data transfer out"] == pytest.approx(free["AWS data transfer out"])
    # the delta rows are per load: 1,460,000 x 90 B instead of 2,628,000 x 90 B
    fewer = (2_628_000 - loads) * 90 / GIB * 0.025
    assert items["BigQuery Storage Write API"] == pytest.approx(
        free["BigQuery Storage Write API"] - fewer
    )
    duckdb = estimate(EVENTS, "duckdb", spaced, SIZES, ASSUME).items
    deletes = next(i for i in duckdb if i.item == "SQS DeleteMessageBatch (loader loop)")
    assert deletes.monthly_usd == pytest.approx(2_628_000 * 0.4 / 1e6)  # DuckDB: no spacing


def test_retention_beyond_24_hours_and_a_smaller_lambda() -> None:
    items = _items(kinesis_retention_hours=168, lambda_memory_mb=1024)
    assert items["Kinesis extended retention (provisioned)"] == pytest.approx(1 * 730 * 0.02)
    # 1,024 MB is 1024/1769 of a vCPU: 1,000 events take 10 ms x 1769/1024 = 17.3 ms, + 10 ms
    assert items["Lambda duration (x86_64)"] == pytest.approx(2_628_000 * 0.028 * 1 * 0.0000166667)
    on_demand = _items(kinesis_retention_hours=168, peak_to_average=200.0)
    # 262.8 M records x 1 KiB a month, kept 144 h beyond the free 24: 144/730 of a month
    retained = 262_800_000 * 1024 / GIB * 144 / 730
    assert on_demand["Kinesis extended retention (on-demand)"] == pytest.approx(retained * 0.10)
    with pytest.raises(ValueError, match="168"):
        _items(kinesis_retention_hours=200)


def test_a_quiet_pipeline_pays_requests_per_record_and_idle_long_polls() -> None:
    result = estimate(1_000_000, "duckdb", PIPELINE, SIZES, ASSUME)
    derived = result.assumptions["derived"]
    # 100,000 records over 2,628,000 s: almost every record its own invocation and message
    assert derived["lambda_invocations"] == pytest.approx(100_000, rel=0.02)
    assert derived["lambda_invocations"] < 100_000
    items = {item.item: item for item in result.items}
    # each load: its receive and the short poll that comes back empty; and a 20 s long poll
    # comes back empty unless a message arrives: fewer than the 131,400 polls of an idle month
    receives = items["SQS ReceiveMessage (loader loop)"].monthly_usd / 0.4 * 1e6
    assert 2 * 98_000 + 0.4 * 131_400 < receives < 2 * 100_000 + 131_400
    assert not any(item.startswith("BigQuery") for item in items)
    assert items["Warehouse: DuckDB"].monthly_usd == 0


def test_the_write_api_free_tier_ends_at_two_tib() -> None:
    no_deltas = replace(
        SIZES, event_counts_delta_row_bytes=0, active_users_delta_row_bytes=0, ledger_row_bytes=0
    )
    at_tier = 2**32  # x 512 B = 2 TiB
    gib_more = 2**21  # x 512 B = 1 GiB

    def write_api(events: int) -> tuple[float, float]:
        sizes = replace(no_deltas, write_api_row_bytes=512)
        result = estimate(events, "bigquery", PIPELINE, sizes, replace(ASSUME, free_tiers=True))
        items = {item.item: item.monthly_usd for item in result.items}
        return items["BigQuery Storage Write API"], items[
            "BigQuery Storage Write API: 2 TiB monthly free tier"
        ]

    below_gross, below_free = write_api(at_tier - gib_more)
    assert below_gross == pytest.approx(2047 * 0.025)
    assert below_free == pytest.approx(-2047 * 0.025)
    gross, free = write_api(at_tier)
    assert gross + free == pytest.approx(0, abs=1e-9)
    above_gross, above_free = write_api(at_tier + gib_more)
    assert above_free == pytest.approx(-2048 * 0.025)
    assert above_gross + above_free == pytest.approx(1 * 0.025)


def test_free_tiers_are_items_of_their_own_and_can_be_left_out() -> None:
    with_tiers = _items(free_tiers=True)
    without = _items(free_tiers=False)
    tiers = {name: usd for name, usd in with_tiers.items() if "free tier" in name}
    assert len(tiers) == 7 and all(usd <= 0 for usd in tiers.values())
    assert not any("free tier" in name for name in without)
    assert tiers["Lambda requests: monthly free tier"] == pytest.approx(-1_000_000 * 0.2 / 1e6)
    assert tiers["BigQuery queries: 1 TiB monthly free tier"] == pytest.approx(-6.25)
    # after free tiers: the Write API's 1.2 TiB are free, SQS's million split over its 3 items
    result = estimate(EVENTS, "bigquery", PIPELINE, SIZES, replace(ASSUME, free_tiers=True))
    net = dict(result.net_items())
    assert net["BigQuery Storage Write API"] == pytest.approx(0, abs=1e-9)
    # SQS: 2 + 3 + 1 requests a load, 2,628,000 loads = $6.3072, and the health sensor's
    # 175,200 GetQueueAttributes = $0.07008, before the free million ($0.40)
    assert net["SQS DeleteMessageBatch (loader loop)"] == pytest.approx(
        1.0512 * (1 - 0.4 / (6.3072 + 0.07008))
    )
    assert sum(net.values()) == pytest.approx(result.monthly_usd)
    assert "BigQuery Storage Write API" not in [name for name, _ in result.biggest(5)]


def test_kinesis_switches_to_on_demand_when_the_peak_needs_enough_shards() -> None:
    # On-demand: 730 h x $0.04 + 262.8 M records x 1 KiB x $0.08/GiB + 262.8 M x 1,000 B x
    # $0.04/GiB = $59.04; provisioned: shards x $10.95 + $3.68 of PUT units. At 50x the peak is
    # 5,000 records/s (5 shards, $58.43); at 60x, 6,000 records/s (6 shards, $69.38).
    on_demand = 730 * 0.04 + 262_800_000 * 1024 / GIB * 0.08 + 262_800_000 * 1000 / GIB * 0.04
    units = 262_800_000 * 0.014 / 1e6
    at_50 = _items(peak_to_average=50.0)
    assert at_50["Kinesis shard-hours (provisioned)"] == pytest.approx(5 * 730 * 0.015)
    assert 5 * 730 * 0.015 + units < on_demand
    at_60 = _items(peak_to_average=60.0)
    assert "Kinesis shard-hours (provisioned)" not in at_60
    kinesis = sum(usd for name, usd in at_60.items() if name.startswith("Kinesis"))
    assert kinesis == pytest.approx(on_demand)
    assert on_demand < 6 * 730 * 0.015 + units


def test_shards_follow_records_per_second_when_records_are_small() -> None:
    # 100 B records: 20 x the peak is 2,000 records/s (2 shards) but only 200 kB/s (1 shard)
    small = replace(SIZES, blob_bytes=100)
    result = estimate(EVENTS, "duckdb", PIPELINE, small, replace(ASSUME, peak_to_average=20.0))
    shard_hours = next(i for i in result.items if i.item == "Kinesis shard-hours (provisioned)")
    assert shard_hours.monthly_usd == pytest.approx(2 * 730 * 0.015)


def test_a_batch_over_the_sqs_limit_goes_through_s3() -> None:
    # 1,000 events x 2,000 B = 2 MB a batch: over the 1 MiB message limit, so S3 PUT + GET
    assert _items()["S3 (oversize batches only)"] == 0  # 100 kB batches stay inline
    big = replace(SIZES, sqs_body_bytes_per_event=2000)
    result = estimate(EVENTS, "bigquery", PIPELINE, big, ASSUME)
    s3 = next(item for item in result.items if item.item.startswith("S3"))
    assert s3.monthly_usd == pytest.approx(2_628_000 * (0.005 + 0.0004) / 1000)


def test_the_duplicate_check_pays_the_10_mb_minimum_per_scanned_day() -> None:
    # 1 M events a month: 32,877 rows a day x 40 B is under 10 MiB, so each scan bills 10 MiB:
    # hourly, today 23 times a day (not at 00:00) + each day once finished = 730 scans, and
    # 3 late days x 730 ticks
    items = _items(events=1_000_000, late_days_updated_per_day=3)
    scanned = items["BigQuery duplicate check (scheduled)"] / 6.25 * TIB
    assert scanned / (10 * 2**20) == pytest.approx(730 + 3 * 730, rel=1e-3)


def test_a_daily_duplicate_check_scans_each_day_about_twice_and_the_late_days() -> None:
    daily_pipeline = pipeline_parameters(
        Settings.from_env({"ANALYTICS_DUPLICATE_CHECK_CRON": "0 4 * * *"})
    )
    assert daily_pipeline.duplicate_check.minutes_of_day == (240,)
    result = estimate(EVENTS, "bigquery", daily_pipeline, SIZES, ASSUME)
    daily = next(i for i in result.items if i.item == "BigQuery duplicate check (scheduled)")
    # at 04:00 today is 1/6 full; yesterday is scanned whole once; 1 late day a day
    day = 86_400_000 * 40
    assert daily.monthly_usd == pytest.approx(365 / 12 * day * (1 / 6 + 1 + 1) / TIB * 6.25)


@pytest.mark.parametrize(
    ("expression", "ticks_a_year"),
    [
        ("* * * * *", 525_600),
        ("0 * * * *", 8_760),
        ("*/15 * * * *", 35_040),
        ("0 3 * * *", 365),
        ("0 9 * * MON-FRI", 261),  # 2026 has 261 weekdays
        ("0 0 1 * MON", 63),  # cron's either-day rule: 12 firsts + 52 Mondays - June 1st
        ("30 2 1 1,7 *", 2),
    ],
)
def test_cron_ticks_per_month(expression: str, ticks_a_year: int) -> None:
    assert ticks_per_month(expression) == pytest.approx(ticks_a_year / 12)


def test_cron_forms_the_counter_cannot_count_are_refused() -> None:
    with pytest.raises(ValueError):
        ticks_per_month("0 0 L * *")


def test_sizes_are_measured_through_the_pipelines_own_code() -> None:
    sizes = measure(40, Limits(), 1_048_576, "bucket")
    # gzip blobs of 40 sample events, and rows of ~500-800 logical bytes with a 36-char UUID
    assert 40 < sizes.blob_bytes_per_event < sizes.sqs_body_bytes_per_event < 400
    assert 400 < sizes.events_row_bytes < 1000
    assert sizes.duplicate_check_bytes_per_row == 2 + 36 + 8
    # the contract's parser judges the sample: a blob over its event limit is refused
    with pytest.raises(ValueError, match="events"):
        measure(40, Limits(max_events_per_blob=20), 1_048_576, "bucket")


def test_the_json_has_the_issues_shape() -> None:
    result = estimate(EVENTS, "bigquery", PIPELINE, SIZES, ASSUME).as_json()
    assert list(result) == [
        "events_per_month",
        "monthly_usd",
        "per_million_usd",
        "hosts_monthly_usd",
        "items",
        "assumptions",
    ]
    assert all(list(item) == ["item", "monthly_usd", "arithmetic"] for item in result["items"])
    assert result["monthly_usd"] == pytest.approx(sum(i["monthly_usd"] for i in result["items"]))
    assumptions = result["assumptions"]
    assert assumptions["events_per_blob"] == 10 and assumptions["warehouse"] == "bigquery"
    assert assumptions["measured_bytes"]["events_row_bytes"] == 500
    assert "kinesis_on_demand_stream_hour" in assumptions["unverified_prices"]
    assert all(p["source"].startswith("https://") for p in assumptions["prices"].values())
    json.dumps(result)  # plain JSON types only


def test_cli_table_and_json(pipeline_env) -> None:
    pipeline_env({"ANALYTICS_WAREHOUSE": "bigquery"})
    runner = CliRunner()
    table = runner.invoke(main, ["cost", "--events-per-month", "1000000"])
    assert table.exit_code == 0, table.output
    assert "warehouse bigquery" in table.output  # the default comes from the settings
    assert "BigQuery duplicate check (scheduled)" in table.output
    assert "= total (AWS + BigQuery)" in table.output and "Arithmetic:" in table.output

    as_json = runner.invoke(
        main,
        ["cost", "--events-per-month", "1000000", "--format", "json", "--warehouse", "duckdb"],
    )
    assert as_json.exit_code == 0, as_json.output
    result = json.loads(as_json.output)
    assert result["events_per_month"] == 1_000_000
    assert not any(item["item"].startswith("BigQuery") for item in result["items"])
    # one Kinesis shard is most of a small bill: $10.95
    assert 10.95 <= result["monthly_usd"] <= 10.95 + 1


def test_cli_assumptions_can_be_changed_and_bad_ones_are_refused(pipeline_env) -> None:
    pipeline_env({})
    runner = CliRunner()
    assume = ["--assume", "lambda_architecture=arm64", "--assume", "free_tiers=false"]
    arm = runner.invoke(
        main, ["cost", "--events-per-month", "5000000000", "--format", "json", *assume]
    )
    assert arm.exit_code == 0, arm.output
    result = json.loads(arm.output)
    names = [item["item"] for item in result["items"]]
    assert "Lambda duration (arm64)" in names and not any("free tier" in n for n in names)
    typed = Assumptions().with_overrides(["handler_events_per_second=1.5e5", "free_tiers=no"])
    assert typed.handler_events_per_second == 150_000.0 and typed.free_tiers is False
    bad = runner.invoke(main, ["cost", "--events-per-month", "10", "--assume", "shards=3"])
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output


def _cli_json(*arguments: str) -> dict:
    done = CliRunner().invoke(main, ["cost", "--format", "json", *arguments])
    assert done.exit_code == 0, done.output
    return json.loads(done.output)


def _item(result: dict, name: str) -> float:
    return next(item["monthly_usd"] for item in result["items"] if item["item"] == name)


RETENTION = "Kinesis extended retention (provisioned)"


def test_one_billion_events_a_month_on_bigquery_cost_at_most_5_cents_per_million(
    pipeline_env,
) -> None:
    """Issue 13's target, with every query of a load and every scheduled query itemised."""
    pipeline_env({})
    result = _cli_json("--events-per-month", "1000000000", "--warehouse", "bigquery")
    names = [item["item"] for item in result["items"]]
    for counted in (
        "BigQuery queries per load",
        "BigQuery duplicate check (scheduled)",
        "BigQuery aggregate refresh (scheduled)",
        "SQS ReceiveMessage (loader loop)",
    ):
        assert counted in names
    assert result["per_million_usd"] <= 0.05


def test_a_million_events_a_month_cost_at_most_15_dollars_and_a_week_of_retention_adds_14_60(
    pipeline_env,
) -> None:
    """Issue 13's <= $15 a month at 1 M, with the stream's free 24 h (the default); a week of
    retention, for a longer replay window, adds $14.60 per shard-month (README, Cost)."""
    pipeline_env({})
    million = ["--events-per-month", "1000000", "--warehouse", "bigquery"]
    small = _cli_json(*million)
    assert small["monthly_usd"] <= 15
    assert _item(small, RETENTION) == 0
    week = _cli_json(*million, "--assume", "kinesis_retention_hours=168")
    assert _item(week, RETENTION) == pytest.approx(14.60)
    assert week["monthly_usd"] == pytest.approx(small["monthly_usd"] + 14.60)
