"""Every price and billing rule the cost model uses, with where and when it was read.

List prices, on-demand, AWS us-east-1 and BigQuery's US multi-region. Sizes follow each vendor's
own units: AWS and BigQuery bill "GB" and "TB" as GiB and TiB (2^30, 2^40 bytes), Kinesis counts
1 KB as 1,024 bytes. A price marked `verified=False` could not be read on the vendor's page here;
the model lists such prices in its output's `assumptions` so nobody mistakes them for facts.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4
HOURS_PER_MONTH = 730  # AWS's billing month (8,760 h / 12); also used for BigQuery's GiB-month
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
DAYS_PER_MONTH = HOURS_PER_MONTH / 24

RESEARCH_READ = "2026-12-01"  # issue 13 research, section R4


@dataclass(frozen=True)
class Price:
    usd: float
    per: str  # what one `usd` buys, e.g. "shard-hour", "million requests", "GiB"
    source: str
    read: str  # the date the source was read
    verified: bool = True
    note: str = ""

    def as_json(self) -> dict[str, object]:
        facts: dict[str, object] = {"usd": self.usd, "per": self.per, "source": self.source}
        facts["read"] = self.read
        if not self.verified:
            facts["verified"] = False
        if self.note:
            facts["note"] = self.note
        return facts


_KINESIS = "https://aws.amazon.com/kinesis/data-streams/pricing/"
_KINESIS_ON_DEMAND_NOTE = (
    "not verified: the AWS page's stored text has the on-demand rules (per stream-hour, per GB "
    "in with records rounded up to 1 KB, per GB out) but not the figures, which are from memory "
    "(research R4); third-party restatements disagree (c3x.dev: $0.04/GB in; kindatechnical.com: "
    "$0.008/GB). Provisioned is cheaper at every volume the README shows either way."
)
_LAMBDA = "https://aws.amazon.com/lambda/pricing/"
_SQS = "https://aws.amazon.com/sqs/pricing/"
_S3 = "https://aws.amazon.com/s3/pricing/"
_BIGQUERY = "https://cloud.google.com/bigquery/pricing"
_TRANSFER = "https://aws.amazon.com/ec2/pricing/on-demand/#Data_Transfer"
_TRANSFER_NOTE = (
    "not read on the AWS page: restated by https://wring.co/blog/aws-data-transfer-pricing-guide "
    "and https://cloud-cost-557.pages.dev/blog/estimate-aws-data-transfer-bill/ (2026); SQS counts "
    "towards it (https://aws.amazon.com/about-aws/global-infrastructure/global-network/faqs)"
)

PRICES: dict[str, Price] = {
    "kinesis_shard_hour": Price(0.015, "shard-hour", _KINESIS, RESEARCH_READ),
    "kinesis_put_payload_units": Price(
        0.014, "million PUT payload units (25 KB of a record each)", _KINESIS, RESEARCH_READ
    ),
    "kinesis_on_demand_stream_hour": Price(
        0.04, "stream-hour", _KINESIS, RESEARCH_READ, False, _KINESIS_ON_DEMAND_NOTE
    ),
    "kinesis_on_demand_data_in": Price(
        0.08,
        "GiB written (each record rounded up to 1 KiB)",
        _KINESIS,
        RESEARCH_READ,
        False,
        _KINESIS_ON_DEMAND_NOTE,
    ),
    "kinesis_on_demand_data_out": Price(
        0.04, "GiB read", _KINESIS, RESEARCH_READ, False, _KINESIS_ON_DEMAND_NOTE
    ),
    "kinesis_extended_retention_shard_hour": Price(
        0.02,
        "shard-hour of retention beyond 24 h, up to 7 days (provisioned)",
        _KINESIS,
        RESEARCH_READ,
        False,
        "not verified: from memory, restated by https://c3x.dev/resources/aws/aws_kinesis_stream; "
        "the AWS page's stored text names the charge without the figure",
    ),
    "kinesis_on_demand_extended_retention": Price(
        0.10,
        "GiB-month retained beyond 24 h, up to 7 days (on-demand)",
        _KINESIS,
        RESEARCH_READ,
        False,
        "not verified: from memory",
    ),
    "lambda_requests": Price(0.20, "million requests", _LAMBDA, RESEARCH_READ),
    "lambda_gb_second_x86_64": Price(0.0000166667, "GB-second (x86_64)", _LAMBDA, RESEARCH_READ),
    "lambda_gb_second_arm64": Price(0.0000133334, "GB-second (arm64)", _LAMBDA, RESEARCH_READ),
    "sqs_requests": Price(
        0.40,
        "million requests (standard queue; each 64 KiB of a request's payload is one request; "
        "$0.30 only above 100 billion a month)",
        _SQS,
        RESEARCH_READ,
    ),
    "cloudwatch_metrics_requested": Price(
        0.01,
        "thousand metrics requested (GetMetricData)",
        "https://aws.amazon.com/cloudwatch/pricing/",
        RESEARCH_READ,
        False,
        "not verified: from memory (the health sensor's optional CloudWatch reading)",
    ),
    "s3_put": Price(0.005, "thousand PUT requests", _S3, RESEARCH_READ),
    "s3_get": Price(0.0004, "thousand GET requests (DELETE is free)", _S3, RESEARCH_READ),
    "aws_data_transfer_out": Price(
        0.09,
        "GiB out of AWS to the internet (first 10 TB a month)",
        _TRANSFER,
        RESEARCH_READ,
        False,
        _TRANSFER_NOTE,
    ),
    "bigquery_write_api": Price(
        0.025, "GiB ingested (Storage Write API)", _BIGQUERY, RESEARCH_READ
    ),
    "bigquery_active_storage": Price(
        0.02, "GiB-month of active logical storage", _BIGQUERY, RESEARCH_READ
    ),
    "bigquery_on_demand_query": Price(
        6.25,
        "TiB billed (on-demand; at least 10 MB per table referenced)",
        _BIGQUERY,
        RESEARCH_READ,
    ),
    "host_hour_m7g_large": Price(
        0.0816,
        "hour of an EC2 m7g.large (2 vCPU, 8 GiB, Linux)",
        "https://www.factualminds.com/blog/amazon-ec2-on-demand-pricing-instance-families-2026/",
        RESEARCH_READ,
        False,
        "a third-party restatement (June 2026), not read on the AWS page; any host you already "
        "run will do",
    ),
}

# Free tiers, per month and per account (AWS) or billing account (BigQuery).
FREE_TIERS: dict[str, Price] = {
    "lambda_requests": Price(1_000_000, "requests", _LAMBDA, RESEARCH_READ),
    "lambda_gb_seconds": Price(400_000, "GB-seconds", _LAMBDA, RESEARCH_READ),
    "sqs_requests": Price(1_000_000, "requests", _SQS, RESEARCH_READ),
    "aws_data_transfer_out_gib": Price(
        100, "GiB out", _TRANSFER, RESEARCH_READ, False, _TRANSFER_NOTE
    ),
    "bigquery_write_api_tib": Price(2, "TiB ingested", _BIGQUERY, RESEARCH_READ),
    "bigquery_storage_gib": Price(10, "GiB-month", _BIGQUERY, RESEARCH_READ),
    "bigquery_query_tib": Price(1, "TiB billed", _BIGQUERY, RESEARCH_READ),
}

# Billing rules and vendor limits (sizes in bytes).
SQS_BILLING_CHUNK_BYTES = 64 * KIB  # a request is billed once per 64 KiB of its payload
KINESIS_PUT_PAYLOAD_UNIT_BYTES = 25 * KIB
KINESIS_ON_DEMAND_RECORD_ROUNDING_BYTES = KIB
KINESIS_SHARD_WRITE_BYTES_PER_SECOND = MIB
KINESIS_SHARD_WRITE_RECORDS_PER_SECOND = 1000
LAMBDA_BILLING_MS = 1
BIGQUERY_MIN_BYTES_PER_TABLE = 10 * MIB  # per table referenced by a query, rounded up to MB

# Hosted products the pipeline replaces, $ per million events at list price (as issue 13 cites).
COMPARISONS: dict[str, Price] = {
    "Segment": Price(
        40.0,
        "million events (list)",
        "https://segment.com/pricing/",
        RESEARCH_READ,
        False,
        "as issue 13 cites it; not re-read",
    ),
    "GA 360": Price(
        12.5,
        "million events (list)",
        "https://marketingplatform.google.com/about/analytics-360/",
        RESEARCH_READ,
        False,
        "as issue 13 cites it; not re-read",
    ),
}
