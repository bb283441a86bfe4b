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

from analytics_pipeline.cost.bigquery import add_bigquery_items
from analytics_pipeline.cost.bill import Bill, any_of, money, qty
from analytics_pipeline.cost.health import health_items
from analytics_pipeline.cost.prices import (
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
)
from analytics_pipeline.cost.sizes import MeasuredSizes
from analytics_pipeline.cost.terms import (
    Assumptions,
    Estimate,
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


class _Bill(Bill):
    """One estimate's working: items in the order of the data's path, and derived figures."""

    def __init__(
        self,
        events: int,
        warehouse: str,
        pipeline: PipelineParameters,
        sizes: MeasuredSizes,
        assume: Assumptions,
    ) -> None:
        super().__init__(events, pipeline, sizes, assume)
        self.warehouse = warehouse
        self._kinesis()
        self._lambda()
        self._sqs()
        self._s3()
        self._transfer(warehouse)
        if warehouse == "bigquery":
            add_bigquery_items(self)
        else:
            self.add(
                "Warehouse: DuckDB",
                0.0,
                "DuckDB runs on the loader host: in hosts_monthly_usd; the duplicate check and "
                "the aggregates run there too",
                "host",
            )
        self._loader_store()

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
                f"{qty(records)} records of {qty(s.blob_bytes)} B ({a.events_per_blob} events) = "
                f"{qty(avg_bytes / 1e3)} kB/s and {qty(avg_records)} records/s on average, x "
                f"{a.peak_to_average:g} = {qty(peak_bytes / 1e3)} kB/s, {qty(peak_records)} "
                f"records/s (a shard takes 1 MiB/s and 1,000 records/s)",
            ),
            (
                "Kinesis PUT payload units",
                records * units_per_record * units.usd / 1e6,
                f"{qty(records)} records x {units_per_record} unit(s) of 25 KiB x ${units.usd}/M",
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
                f"{qty(records)} records x {rounded} KiB (rounded up) = {qty(in_gib)} GiB x "
                f"${data_in.usd} (unverified price)",
            ),
            (
                "Kinesis on-demand data out (read once, by the Lambda)",
                out_gib * data_out.usd,
                f"{qty(records)} x {qty(s.blob_bytes)} B = {qty(out_gib)} GiB x ${data_out.usd} "
                "(unverified price)",
            ),
            self._retention(
                "Kinesis extended retention (on-demand)",
                in_gib * retained_share * on_demand_retention.usd,
                f"{qty(in_gib)} GiB a month x ({a.kinesis_retention_hours} - 24) h / "
                f"{HOURS_PER_MONTH} h = {qty(in_gib * retained_share)} GiB-month x "
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
                    f"${money(sum(u for _, u, _ in other))}/month"
                )
            self.add(name, usd, arithmetic, "AWS")
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
        self.add(
            "Lambda requests",
            invocations * requests.usd / 1e6,
            f"{qty(invocations)} invocations x ${requests.usd}/M: {self.shards} shard(s) x "
            f"{qty(SECONDS_PER_MONTH)} s x P(a record in the second) {busy_share:.4f} "
            f"({qty(per_shard_second)} records per shard-second, Poisson; at most "
            f"{p.trigger_batch_size} records per invocation)",
            "AWS",
        )
        self.free(
            "Lambda requests: monthly free tier",
            "lambda_requests",
            invocations,
            requests.usd / 1e6,
            "AWS",
        )
        self.add(
            f"Lambda duration ({a.lambda_architecture})",
            gb_seconds * duration.usd,
            f"{qty(invocations)} x {ms} ms ({a.lambda_fixed_ms:g} ms fixed + "
            f"{qty(events_per_invocation)} events / ({qty(a.handler_events_per_second)} events/s "
            f"on a core x min(1, {a.lambda_memory_mb} / {FULL_VCPU_MB} MB))) x {gb:.3f} GB = "
            f"{qty(gb_seconds)} GB-s x ${duration.usd}",
            "AWS",
        )
        self.free(
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
        queues_hit = a.queues * any_of(epi, 1 / a.queues)
        per_send = epi / queues_hit  # events
        p_late = any_of(per_send, a.late_event_share)  # a late event among them
        p_rejected = any_of(per_send, a.rejected_share)
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
        self.add(
            "SQS SendMessageBatch (Lambda)",
            sends * price.usd / 1e6,
            f"{qty(self.invocations)} invocations x {qty(queues_hit)} queue(s) x {chunks} "
            f"request(s) of 64 KiB: {qty(messages)} message(s) ({qty(per_send)} events x "
            f"{qty(s.sqs_body_bytes_per_event)} B base64 gzip NDJSON + "
            f"{qty(s.sqs_attribute_bytes_per_message)} B of attributes a message"
            f"{'; oversize: the body is an S3 pointer' if self.oversize else ''}) = "
            f"{qty(send_bytes)} B x ${price.usd}/M",
            "AWS",
        )
        # A load takes what one send carried (an upper bound: a busy queue packs more into one
        # load): the loop's long poll returns it, SQS_BATCH messages a call, then one more
        # short poll finds the queue empty and ends the receive; one delete per SQS_BATCH.
        self.loads = self.batch_sends * calls
        # On BigQuery the loop spaces loads by the write streams they create (one per table:
        # events, the two delta tables, the ledger, and quarantine when a load has rejects),
        # so a busy queue makes fewer, bigger loads.
        self.streams_per_load = 4 + any_of(per_send, a.rejected_share)
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
        self.add(
            "SQS ReceiveMessage (loader loop)",
            (receives + empty) * price.usd / 1e6,
            f"{qty(self.loads)} loads x ({receive_chunks} request(s) of 64 KiB for {qty(per_load)} "
            f"message(s) + {closing} empty short poll) + {qty(empty)} empty {wait} s long polls "
            f"({a.queues} loop(s), a = {qty(arrivals)} loads/s each: loads x e^-{wait}a / "
            f"(1 - e^-{wait}a)) = {qty(receives + empty)} x ${price.usd}/M"
            + (
                f"; loads spaced to {p.bigquery_streams_per_hour:,} BigQuery write streams an "
                f"hour ({qty(self.streams_per_load)} a load), so one load takes "
                f"{qty(packing)} sends"
                if packing > 1
                else ""
            ),
            "AWS",
        )
        deletes = self.loads * math.ceil(per_load / p.sqs_receive_max_messages)
        self.add(
            "SQS DeleteMessageBatch (loader loop)",
            deletes * price.usd / 1e6,
            f"{qty(self.loads)} loads x {math.ceil(per_load / p.sqs_receive_max_messages)} x "
            f"${price.usd}/M",
            "AWS",
        )
        total = sends + receives + empty + deletes + self._health(price.usd)
        self.free(
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
            self.add(*item, "AWS")
        return requests

    def _s3(self) -> None:
        put, get = PRICES["s3_put"], PRICES["s3_get"]
        if not self.oversize:
            self.add(
                "S3 (oversize batches only)",
                0.0,
                f"no batch is over {qty(self.pipeline.sqs_message_max_bytes)} B: one invocation's "
                f"batch is {qty(self.send_bytes)} B; no staging objects any more",
                "AWS",
            )
            return
        objects = self.batch_sends
        self.add(
            "S3 (oversize batches only)",
            objects * (put.usd + get.usd) / 1e3,
            f"{qty(objects)} batches over {qty(self.pipeline.sqs_message_max_bytes)} B x (PUT "
            f"${put.usd} + GET ${get.usd}) / 1,000; DELETE free, storage seconds-long",
            "AWS",
        )

    def _transfer(self, warehouse: str) -> None:
        price = PRICES["aws_data_transfer_out"]
        if not self.assume.loader_host_in_aws:
            gib = self.fetches * self.fetched_bytes / GIB
            what = (
                f"{qty(self.fetches)} sends x {qty(self.fetched_bytes)} B (SQS messages"
                f"{' and S3 batches' if self.oversize else ''} to a loader outside AWS)"
            )
        elif warehouse == "bigquery":
            gib = self.events * self.sizes.write_api_row_bytes / GIB
            what = (
                f"{qty(self.events)} rows x {qty(self.sizes.write_api_row_bytes)} B (a loader in "
                "AWS writes to BigQuery)"
            )
        else:
            gib = 0.0
            what = "loader and DuckDB in the region: nothing leaves AWS"
        self.add(
            "AWS data transfer out",
            gib * price.usd,
            f"{what} = {qty(gib)} GiB x ${price.usd} (unverified price)",
            "AWS",
        )
        self.free(
            "AWS data transfer out: monthly free tier",
            "aws_data_transfer_out_gib",
            gib,
            price.usd,
            "AWS",
        )

    def _loader_store(self) -> None:
        days = self.pipeline.key_retention_days
        keys = self.events / DAYS_PER_MONTH * days * self.sizes.store_keys_per_event
        disk = keys * LOADER_STORE_BYTES_PER_KEY / 1e9
        self.add(
            "Loader store (RocksDB on the loader host)",
            0.0,
            f"{qty(self.events / DAYS_PER_MONTH)} events a day x {days} days of load time x "
            f"{self.sizes.store_keys_per_event:.2f} keys an event (messageId and first-seen "
            f"users, as the loader plans the sample) x {LOADER_STORE_BYTES_PER_KEY} B = "
            f"{qty(disk)} GB of the host's disk: in hosts_monthly_usd; no requests billed",
            "host",
        )
        self.derived["loader_store_gb"] = round6(disk)
