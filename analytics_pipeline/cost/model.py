"""The monthly bill for N events: every billed request of the pipeline's request pattern, priced.

`estimate` is a pure function of the volume, the warehouse, the pipeline's parameters (from
`Settings` and the code's own constants), the measured bytes and the stated assumptions; each
item carries its arithmetic with the numbers, so a reader can redo it with other prices. The
request pattern is issue 13's loading design (one long-lived loop per queue: long-poll, load
through the Storage Write API, delete; no query per load; aggregates written as delta rows).

Traffic is modelled as spread evenly over the month at its average rate; Kinesis is sized for the
peak (`peak_to_average`). Arrivals are Poisson where it matters (Lambda polls each shard about
once a second, so a quiet shard invokes once per record and a busy one once a second; the loop
issues an empty long poll only for a 20 s gap without a message), which makes the average-rate
figures an upper bound for bursty traffic.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from analytics_pipeline.cost.health import health_items
from analytics_pipeline.cost.prices import (
    BIGQUERY_MIN_BYTES_PER_TABLE,
    DAYS_PER_MONTH,
    FREE_TIERS,
    GIB,
    HOURS_PER_MONTH,
    KINESIS_ON_DEMAND_RECORD_ROUNDING_BYTES,
    KINESIS_PUT_PAYLOAD_UNIT_BYTES,
    KINESIS_SHARD_WRITE_BYTES_PER_SECOND,
    KINESIS_SHARD_WRITE_RECORDS_PER_SECOND,
    PRICES,
    SECONDS_PER_MONTH,
    SQS_BILLING_CHUNK_BYTES,
    TIB,
)
from analytics_pipeline.cost.sizes import MeasuredSizes
from analytics_pipeline.cost.terms import (
    Assumptions,
    Estimate,
    Item,
    PipelineParameters,
    assumption_docs,
    round6,
)

WAREHOUSES = ("duckdb", "bigquery")
# R3 of the issue 13 research: RocksDB held 10 M keys (18 B each) in 212 MB on disk.
LOADER_STORE_BYTES_PER_KEY = 21.2
FULL_VCPU_MB = 1769  # Lambda's memory size with one full vCPU


def estimate(
    events_per_month: int,
    warehouse: str,
    pipeline: PipelineParameters,
    sizes: MeasuredSizes,
    assume: Assumptions,
) -> Estimate:
    if events_per_month < 1:
        raise ValueError("events_per_month must be at least 1")
    if warehouse not in WAREHOUSES:
        raise ValueError(f"warehouse is one of {WAREHOUSES}, not {warehouse!r}")
    if sizes.events_per_blob != assume.events_per_blob:
        raise ValueError("the sizes were measured for another events_per_blob")
    bill = _Bill(events_per_month, warehouse, pipeline, sizes, assume)
    return Estimate(
        events_per_month=events_per_month,
        warehouse=warehouse,
        items=bill.items,
        hosts_monthly_usd=assume.hosts * assume.host_hourly_usd * HOURS_PER_MONTH,
        assumptions={
            "warehouse": warehouse,
            **asdict(assume),
            "explained": assumption_docs(),
            "pipeline": pipeline.as_json(),
            "measured_bytes": sizes.as_json(),
            "derived": bill.derived,
            "not_counted": [
                "your own queries and dashboards (reading the aggregate views included)",
                "CloudWatch logs and metrics of the Lambda",
                "Kinesis retention beyond 7 days and enhanced fan-out (not used)",
                "`analytics-pipeline loader rebuild` after the store is lost (one read of the "
                "retention's keys from the warehouse, not a monthly cost)",
                "the collector (on the hosts; the blobs it puts are the Kinesis items)",
                "storage beyond `storage_months` (each further month adds the storage item again)",
            ],
            "unverified_prices": [
                name for name, price in {**PRICES, **FREE_TIERS}.items() if not price.verified
            ],
            "prices": {name: price.as_json() for name, price in PRICES.items()},
            "free_tier_quantities": {name: tier.as_json() for name, tier in FREE_TIERS.items()},
        },
    )


class _Bill:
    """One estimate's working: items in the order of the data's path, and derived figures."""

    def __init__(
        self,
        events: int,
        warehouse: str,
        pipeline: PipelineParameters,
        sizes: MeasuredSizes,
        assume: Assumptions,
    ) -> None:
        self.events, self.pipeline, self.sizes, self.assume = events, pipeline, sizes, assume
        self.warehouse = warehouse
        self.items: list[Item] = []
        self.derived: dict[str, Any] = {}
        self._kinesis()
        self._lambda()
        self._sqs()
        self._s3()
        self._transfer(warehouse)
        if warehouse == "bigquery":
            self._bigquery()
        else:
            self._add(
                "Warehouse: DuckDB",
                0.0,
                "DuckDB runs on the loader host: in hosts_monthly_usd; the duplicate check and "
                "the aggregates run there too",
                "host",
            )
        self._loader_store()

    def _add(self, item: str, usd: float, arithmetic: str, vendor: str) -> None:
        self.items.append(Item(item, usd, arithmetic, vendor))

    def _free(
        self, item: str, tier: str, used: float, unit_usd: float, vendor: str, covers: int = 1
    ) -> None:
        """A free tier as its own negative item: min(used, free) units at `unit_usd` each, for
        the `covers` items just added."""
        if not self.assume.free_tiers:
            return
        free = FREE_TIERS[tier]
        usd = -min(used, free.usd) * unit_usd
        self.items.append(
            Item(
                item,
                usd,
                f"-min({_n(used)}, {_n(free.usd)} free) {free.per} x ${unit_usd:.4g} = "
                f"-${_money(-usd)}",
                vendor,
                covers,
            )
        )

    # --- AWS -------------------------------------------------------------------------------

    def _kinesis(self) -> None:
        s, a = self.sizes, self.assume
        records = self.events / a.events_per_blob
        avg_bytes = records * s.blob_bytes / SECONDS_PER_MONTH
        avg_records = records / SECONDS_PER_MONTH
        peak_bytes, peak_records = avg_bytes * a.peak_to_average, avg_records * a.peak_to_average
        shards = max(
            1,
            math.ceil(peak_bytes / KINESIS_SHARD_WRITE_BYTES_PER_SECOND),
            math.ceil(peak_records / KINESIS_SHARD_WRITE_RECORDS_PER_SECOND),
        )
        units_per_record = math.ceil(s.blob_bytes / KINESIS_PUT_PAYLOAD_UNIT_BYTES)
        hour, units = PRICES["kinesis_shard_hour"], PRICES["kinesis_put_payload_units"]
        provisioned = [
            (
                "Kinesis shard-hours (provisioned)",
                shards * HOURS_PER_MONTH * hour.usd,
                f"{shards} shard(s) x {HOURS_PER_MONTH} h x ${hour.usd}; sized for the peak: "
                f"{_n(records)} records of {_n(s.blob_bytes)} B ({a.events_per_blob} events) = "
                f"{_n(avg_bytes / 1e3)} kB/s and {_n(avg_records)} records/s on average, x "
                f"{a.peak_to_average:g} = {_n(peak_bytes / 1e3)} kB/s, {_n(peak_records)} "
                f"records/s (a shard takes 1 MiB/s and 1,000 records/s)",
            ),
            (
                "Kinesis PUT payload units",
                records * units_per_record * units.usd / 1e6,
                f"{_n(records)} records x {units_per_record} unit(s) of 25 KiB x ${units.usd}/M",
            ),
            self._retention(
                "Kinesis extended retention (provisioned)",
                shards * HOURS_PER_MONTH * PRICES["kinesis_extended_retention_shard_hour"].usd,
                f"{shards} shard(s) x {HOURS_PER_MONTH} h x "
                f"${PRICES['kinesis_extended_retention_shard_hour'].usd} (unverified price)",
            ),
        ]
        stream_hour = PRICES["kinesis_on_demand_stream_hour"]
        data_in, data_out = (
            PRICES["kinesis_on_demand_data_in"],
            PRICES["kinesis_on_demand_data_out"],
        )
        rounded = math.ceil(s.blob_bytes / KINESIS_ON_DEMAND_RECORD_ROUNDING_BYTES)
        in_gib = records * rounded * KINESIS_ON_DEMAND_RECORD_ROUNDING_BYTES / GIB
        out_gib = records * s.blob_bytes / GIB
        on_demand_retention = PRICES["kinesis_on_demand_extended_retention"]
        retained_share = max(a.kinesis_retention_hours - 24, 0) / HOURS_PER_MONTH
        on_demand = [
            (
                "Kinesis on-demand stream-hours",
                HOURS_PER_MONTH * stream_hour.usd,
                f"{HOURS_PER_MONTH} h x ${stream_hour.usd} (unverified price)",
            ),
            (
                "Kinesis on-demand data in",
                in_gib * data_in.usd,
                f"{_n(records)} records x {rounded} KiB (rounded up) = {_n(in_gib)} GiB x "
                f"${data_in.usd} (unverified price)",
            ),
            (
                "Kinesis on-demand data out (read once, by the Lambda)",
                out_gib * data_out.usd,
                f"{_n(records)} x {_n(s.blob_bytes)} B = {_n(out_gib)} GiB x ${data_out.usd} "
                "(unverified price)",
            ),
            self._retention(
                "Kinesis extended retention (on-demand)",
                in_gib * retained_share * on_demand_retention.usd,
                f"{_n(in_gib)} GiB a month x ({a.kinesis_retention_hours} - 24) h / "
                f"{HOURS_PER_MONTH} h = {_n(in_gib * retained_share)} GiB-month x "
                f"${on_demand_retention.usd} (unverified price)",
            ),
        ]
        cost_provisioned = sum(usd for _, usd, _ in provisioned)
        cost_on_demand = sum(usd for _, usd, _ in on_demand)
        chosen, other = (
            (provisioned, on_demand)
            if cost_provisioned <= cost_on_demand
            else (on_demand, provisioned)
        )
        mode = "provisioned" if chosen is provisioned else "on-demand"
        other_mode = "on-demand" if mode == "provisioned" else "provisioned"
        for index, (name, usd, arithmetic) in enumerate(chosen):
            if index == 0:
                arithmetic += (
                    f"; {mode} is the cheaper mode here: {other_mode} would be "
                    f"${_money(sum(u for _, u, _ in other))}/month"
                )
            self._add(name, usd, arithmetic, "AWS")
        self.shards, self.records = shards, records
        self.derived.update(
            kinesis_mode=mode,
            kinesis_provisioned_monthly_usd=round6(cost_provisioned),
            kinesis_on_demand_monthly_usd=round6(cost_on_demand),
            kinesis_shards=shards,
            kinesis_records=round6(records),
        )

    def _retention(self, name: str, usd: float, arithmetic: str) -> tuple[str, float, str]:
        """Kinesis keeps records 24 h for free; longer (up to 7 days) is billed."""
        hours = self.assume.kinesis_retention_hours
        if not 24 <= hours <= 168:
            raise ValueError("kinesis_retention_hours is modelled from 24 to 168")
        why = (
            f"retention {hours} h (analytics_pipeline/ingest/__init__.py: 24 h leaves 18 h to "
            "replay a failed shard range after its alarm; a week costs the extended retention)"
        )
        if hours == 24:
            return name, 0.0, f"{why}: the free 24 h; 168 h would cost {arithmetic}"
        return name, usd, f"{why}: {arithmetic}"

    def _lambda(self) -> None:
        a, p = self.assume, self.pipeline
        shard_seconds = self.shards * SECONDS_PER_MONTH
        per_shard_second = self.records / shard_seconds
        busy_share = -math.expm1(-per_shard_second)  # P(a record in a given second), Poisson
        invocations = shard_seconds * max(busy_share, per_shard_second / p.trigger_batch_size)
        events_per_invocation = self.events / invocations
        speed = a.handler_events_per_second * min(1.0, a.lambda_memory_mb / FULL_VCPU_MB)
        ms = math.ceil(a.lambda_fixed_ms + events_per_invocation / speed * 1e3)
        gb = a.lambda_memory_mb / 1024
        gb_seconds = invocations * ms / 1e3 * gb
        requests, duration = (
            PRICES["lambda_requests"],
            PRICES[f"lambda_gb_second_{a.lambda_architecture}"],
        )
        self._add(
            "Lambda requests",
            invocations * requests.usd / 1e6,
            f"{_n(invocations)} invocations x ${requests.usd}/M: {self.shards} shard(s) x "
            f"{_n(SECONDS_PER_MONTH)} s x P(a record in the second) {busy_share:.4f} "
            f"({_n(per_shard_second)} records per shard-second, Poisson; at most "
            f"{p.trigger_batch_size} records per invocation)",
            "AWS",
        )
        self._free(
            "Lambda requests: monthly free tier",
            "lambda_requests",
            invocations,
            requests.usd / 1e6,
            "AWS",
        )
        self._add(
            f"Lambda duration ({a.lambda_architecture})",
            gb_seconds * duration.usd,
            f"{_n(invocations)} x {ms} ms ({a.lambda_fixed_ms:g} ms fixed + "
            f"{_n(events_per_invocation)} events / ({_n(a.handler_events_per_second)} events/s "
            f"on a core x min(1, {a.lambda_memory_mb} / {FULL_VCPU_MB} MB))) x {gb:.3f} GB = "
            f"{_n(gb_seconds)} GB-s x ${duration.usd}",
            "AWS",
        )
        self._free(
            "Lambda duration: monthly free tier",
            "lambda_gb_seconds",
            gb_seconds,
            duration.usd,
            "AWS",
        )
        self.invocations, self.events_per_invocation = invocations, events_per_invocation
        self.derived.update(
            lambda_invocations=round6(invocations),
            events_per_invocation=round6(events_per_invocation),
            lambda_billed_ms=ms,
        )

    def _sqs(self) -> None:
        s, a, p = self.sizes, self.assume, self.pipeline
        epi = self.events_per_invocation
        # The Lambda sends to each queue that got events (keys split by hash over the queues)
        # one SendMessageBatch with one batch per (kind, day) present.
        queues_hit = a.queues * _any_of(epi, 1 / a.queues)
        per_send = epi / queues_hit  # events
        p_late = _any_of(per_send, a.late_event_share)  # a late event among them
        p_rejected = _any_of(per_send, a.rejected_share)
        messages = 1 + p_late + p_rejected
        events_message = per_send * (1 - a.late_event_share) * s.sqs_body_bytes_per_event
        events_message += s.sqs_attribute_bytes_per_message
        self.oversize = events_message > p.sqs_message_max_bytes
        inline = per_send * s.sqs_body_bytes_per_event
        body = s.s3_pointer_body_bytes if self.oversize else inline
        send_bytes = (
            body
            + per_send * a.rejected_share * s.sqs_body_bytes_per_rejected_row
            + messages * s.sqs_attribute_bytes_per_message
        )
        calls = max(
            math.ceil(messages / min(p.sqs_batch_max_entries, p.sqs_receive_max_messages)),
            math.ceil(send_bytes / p.sqs_batch_max_bytes),
        )
        chunks = max(calls, math.ceil(send_bytes / SQS_BILLING_CHUNK_BYTES))
        self.batch_sends = self.invocations * queues_hit
        sends = self.batch_sends * chunks
        price = PRICES["sqs_requests"]
        self._add(
            "SQS SendMessageBatch (Lambda)",
            sends * price.usd / 1e6,
            f"{_n(self.invocations)} invocations x {_n(queues_hit)} queue(s) x {chunks} "
            f"request(s) of 64 KiB: {_n(messages)} message(s) ({_n(per_send)} events x "
            f"{_n(s.sqs_body_bytes_per_event)} B base64 gzip NDJSON + "
            f"{_n(s.sqs_attribute_bytes_per_message)} B of attributes a message"
            f"{'; oversize: the body is an S3 pointer' if self.oversize else ''}) = "
            f"{_n(send_bytes)} B x ${price.usd}/M",
            "AWS",
        )
        # A load takes what one send carried (an upper bound: a busy queue packs more into one
        # load): the loop's long poll returns it, SQS_BATCH messages a call, then one more
        # short poll finds the queue empty and ends the receive; one delete per SQS_BATCH.
        self.loads = self.batch_sends * calls
        # On BigQuery the loop spaces loads by the write streams they create (one per table:
        # events, the two delta tables, the ledger, and quarantine when a load has rejects),
        # so a busy queue makes fewer, bigger loads.
        self.streams_per_load = 4 + _any_of(per_send, a.rejected_share)
        stream_cap = (
            p.bigquery_streams_per_hour * HOURS_PER_MONTH / self.streams_per_load * a.queues
        )
        packing = 1.0  # sends one load takes
        if self.warehouse == "bigquery" and self.loads > stream_cap:
            packing = self.loads / stream_cap
            self.loads = stream_cap
        per_load = messages / calls * packing  # messages one load takes
        load_bytes = send_bytes / calls * packing
        receive_calls = math.ceil(min(per_load, p.load_max_messages) / p.sqs_receive_max_messages)
        receive_chunks = max(receive_calls, math.ceil(load_bytes / SQS_BILLING_CHUNK_BYTES))
        closing = 1 if per_load < p.load_max_messages else 0
        wait = p.loop_max_wait_seconds
        arrivals = self.loads / SECONDS_PER_MONTH / a.queues  # per queue
        quiet = math.exp(-wait * arrivals)
        empty = (
            self.loads * quiet / -math.expm1(-wait * arrivals)
            if arrivals
            else a.queues * SECONDS_PER_MONTH / wait
        )
        receives = self.loads * (receive_chunks + closing)
        self._add(
            "SQS ReceiveMessage (loader loop)",
            (receives + empty) * price.usd / 1e6,
            f"{_n(self.loads)} loads x ({receive_chunks} request(s) of 64 KiB for {_n(per_load)} "
            f"message(s) + {closing} empty short poll) + {_n(empty)} empty {wait} s long polls "
            f"({a.queues} loop(s), a = {_n(arrivals)} loads/s each: loads x e^-{wait}a / "
            f"(1 - e^-{wait}a)) = {_n(receives + empty)} x ${price.usd}/M"
            + (
                f"; loads spaced to {p.bigquery_streams_per_hour:,} BigQuery write streams an "
                f"hour ({_n(self.streams_per_load)} a load), so one load takes {_n(packing)} sends"
                if packing > 1
                else ""
            ),
            "AWS",
        )
        deletes = self.loads * math.ceil(per_load / p.sqs_receive_max_messages)
        self._add(
            "SQS DeleteMessageBatch (loader loop)",
            deletes * price.usd / 1e6,
            f"{_n(self.loads)} loads x {math.ceil(per_load / p.sqs_receive_max_messages)} x "
            f"${price.usd}/M",
            "AWS",
        )
        total = sends + receives + empty + deletes + self._health(price.usd)
        self._free(
            "SQS requests: monthly free tier", "sqs_requests", total, price.usd / 1e6, "AWS", 4
        )
        self.send_bytes = send_bytes
        self.messages_per_send = messages
        # what a load downloads: the message, and the batch from S3 when it is oversize
        self.fetched_bytes = send_bytes + (inline * 3 / 4 if self.oversize else 0)
        self.fetches = self.batch_sends * calls  # downloads of send_bytes each
        self.events_per_load = self.events / self.loads
        self.derived.update(
            sqs_messages_per_send=round6(messages),
            sqs_bytes_per_send=round6(send_bytes),
            sqs_requests=round6(total),
            loads=round6(self.loads),
            events_per_load=round6(self.events_per_load),
            oversize_batches=self.oversize,
        )

    def _health(self, sqs_usd: float) -> float:
        """The health sensor's readings (`health.py`); returns its SQS requests."""
        p = self.pipeline
        every = p.health_cloudwatch_every_seconds
        items, requests = health_items(
            p.health_interval_seconds, every, self.assume.queues, sqs_usd
        )
        for item in items:
            self._add(*item, "AWS")
        return requests

    def _s3(self) -> None:
        put, get = PRICES["s3_put"], PRICES["s3_get"]
        if not self.oversize:
            self._add(
                "S3 (oversize batches only)",
                0.0,
                f"no batch is over {_n(self.pipeline.sqs_message_max_bytes)} B: one invocation's "
                f"batch is {_n(self.send_bytes)} B; no staging objects any more",
                "AWS",
            )
            return
        objects = self.batch_sends
        self._add(
            "S3 (oversize batches only)",
            objects * (put.usd + get.usd) / 1e3,
            f"{_n(objects)} batches over {_n(self.pipeline.sqs_message_max_bytes)} B x (PUT "
            f"${put.usd} + GET ${get.usd}) / 1,000; DELETE free, storage seconds-long",
            "AWS",
        )

    def _transfer(self, warehouse: str) -> None:
        price = PRICES["aws_data_transfer_out"]
        if not self.assume.loader_host_in_aws:
            gib = self.fetches * self.fetched_bytes / GIB
            what = (
                f"{_n(self.fetches)} sends x {_n(self.fetched_bytes)} B (SQS messages"
                f"{' and S3 batches' if self.oversize else ''} to a loader outside AWS)"
            )
        elif warehouse == "bigquery":
            gib = self.events * self.sizes.write_api_row_bytes / GIB
            what = (
                f"{_n(self.events)} rows x {_n(self.sizes.write_api_row_bytes)} B (a loader in "
                "AWS writes to BigQuery)"
            )
        else:
            gib = 0.0
            what = "loader and DuckDB in the region: nothing leaves AWS"
        self._add(
            "AWS data transfer out",
            gib * price.usd,
            f"{what} = {_n(gib)} GiB x ${price.usd} (unverified price)",
            "AWS",
        )
        self._free(
            "AWS data transfer out: monthly free tier",
            "aws_data_transfer_out_gib",
            gib,
            price.usd,
            "AWS",
        )

    # --- BigQuery --------------------------------------------------------------------------

    def _bigquery(self) -> None:
        s, a, p = self.sizes, self.assume, self.pipeline
        epi = self.events_per_load
        names = a.distinct_event_names
        p_late = _any_of(epi, a.late_event_share)
        counts_rows = names * _any_of(epi * (1 - a.late_event_share), 1 / names)  # distinct
        counts_rows += p_late  # a late day's few events: about one row
        users_rows = 1 + p_late
        delta_bytes = (
            counts_rows * s.event_counts_delta_row_bytes
            + users_rows * s.active_users_delta_row_bytes
        )
        events_bytes = self.events * s.write_api_row_bytes
        quarantine_bytes = self.events * a.rejected_share * s.quarantine_row_bytes
        deltas = self.loads * delta_bytes
        ledger = self.fetches * self.messages_per_send * s.ledger_row_bytes  # a row per batch
        written = events_bytes + quarantine_bytes + deltas + ledger
        # one PENDING stream per table a load writes (see _sqs: the loop spaces loads by them)
        streams_per_hour = self.loads / HOURS_PER_MONTH * self.streams_per_load
        write = PRICES["bigquery_write_api"]
        self._add(
            "BigQuery Storage Write API",
            written / GIB * write.usd,
            f"({_n(self.events)} events x {_n(s.write_api_row_bytes)} B + "
            f"{_n(self.events * a.rejected_share)} quarantine rows x "
            f"{_n(s.quarantine_row_bytes)} B + {_n(self.loads)} loads x {_n(delta_bytes)} B of "
            f"aggregate deltas ({_n(counts_rows)} event-count rows, {_n(users_rows)} active-user "
            f"rows) + {_n(ledger / GIB)} GiB of ledger rows) = {_n(written / GIB)} GiB x "
            f"${write.usd}/GiB; the stream calls "
            f"(create, append, finalize, commit: {_n(streams_per_hour)} streams an hour) are not "
            "billed",
            "BigQuery",
        )
        self._free(
            "BigQuery Storage Write API: 2 TiB monthly free tier",
            "bigquery_write_api_tib",
            written / TIB,
            write.usd * TIB / GIB,
            "BigQuery",
        )
        stored = (
            self.events * s.events_row_bytes + quarantine_bytes + deltas + ledger
        ) * a.storage_months
        storage = PRICES["bigquery_active_storage"]
        self._add(
            "BigQuery active storage (first month)",
            stored / GIB * storage.usd,
            f"({_n(self.events)} x {_n(s.events_row_bytes)} B of events + quarantine + deltas + "
            "ledger) x "
            f"{a.storage_months:g} month(s) = {_n(stored / GIB)} GiB-month x ${storage.usd}",
            "BigQuery",
        )
        self._free(
            "BigQuery storage: monthly free tier",
            "bigquery_storage_gib",
            stored / GIB,
            storage.usd,
            "BigQuery",
        )
        self._add(
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
        day_rows = self.events / DAYS_PER_MONTH
        per_row = s.duplicate_check_bytes_per_row
        floor = BIGQUERY_MIN_BYTES_PER_TABLE
        full_day = max(floor, day_rows * per_row)
        # Each tick scans the days updated since the one before: today's partition as full as
        # the time of day (none at 00:00), each finished day once after its midnight, and the
        # older days late events updated (every tick, or every day when ticks are rarer).
        p_today = -math.expm1(-self.loads / ticks) if ticks else 0.0
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
        self._add(
            "BigQuery duplicate check (scheduled)",
            scanned / TIB * query.usd,
            f"'{check.expression}' = {_n(ticks)} ticks; each scans message_id + timestamp "
            f"({_n(per_row)} B a row, at least 10 MiB a day scanned; clustering prunes nothing) "
            f"of: today so far ({fill:.0%} of {_n(day_rows)} rows on average) = "
            f"{_n(today / GIB)} GiB, each finished day once: {_n(DAYS_PER_MONTH)} x "
            f"{_n(full_day / GIB)} GiB, {a.late_days_updated_per_day} late day(s) x "
            f"{_n(max(ticks, DAYS_PER_MONTH))} = {_n(late_scans)} x {_n(full_day / GIB)} GiB; "
            f"= {_n(scanned / TIB)} TiB x ${query.usd}/TiB",
            "BigQuery",
        )
        self._free(
            "BigQuery queries: 1 TiB monthly free tier",
            "bigquery_query_tib",
            scanned / TIB,
            query.usd,
            "BigQuery",
        )
        self._add(
            "BigQuery aggregate refresh (scheduled)",
            0.0,
            "none: daily_event_counts and daily_active_users are views summing the delta rows "
            "written with each load (in the Write API and storage items); no scheduled query; "
            "reading a view is your query (a day repaired from the UI scans that day once)",
            "BigQuery",
        )
        self.derived.update(
            bigquery_written_gib=round6(written / GIB),
            write_streams_per_hour=round6(streams_per_hour),
            bigquery_stored_gib_month=round6(stored / GIB),
            duplicate_check_tib=round6(scanned / TIB),
        )

    def _loader_store(self) -> None:
        days = self.pipeline.key_retention_days
        keys = self.events / DAYS_PER_MONTH * days * self.sizes.store_keys_per_event
        disk = keys * LOADER_STORE_BYTES_PER_KEY / 1e9
        self._add(
            "Loader store (RocksDB on the loader host)",
            0.0,
            f"{_n(self.events / DAYS_PER_MONTH)} events a day x {days} days of load time x "
            f"{self.sizes.store_keys_per_event:.2f} keys an event (messageId and first-seen "
            f"users, as the loader plans the sample) x {LOADER_STORE_BYTES_PER_KEY} B = "
            f"{_n(disk)} GB of the host's disk: in hosts_monthly_usd; no requests billed",
            "host",
        )
        self.derived["loader_store_gb"] = round6(disk)


def _any_of(count: float, share: float) -> float:
    """P(at least one of `count` independent draws has a property of this `share`)."""
    return 1 - (1 - share) ** count


def _money(value: float) -> str:
    return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}"


def _n(value: float) -> str:
    """A count or size for people: thousands separators, 3 significant digits when small."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"
