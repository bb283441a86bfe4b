"""Why a batch failed to load, kept where `analytics-pipeline dlq list` can read it.

SQS message attributes are immutable and the dead-letter queue keeps only the message, so the
last error of each failed batch is written as a small JSON object in the batch bucket under
`load-failures/<batch id>.json` (an SQS message that is not a batch at all is keyed by its SQS
message id). Each failure overwrites the previous one: the record says what went wrong last and
at which receive. S3 rather than the warehouse because the warehouse may be what is failing, and
because it works the same for every warehouse. Expire the prefix with a lifecycle rule (14 days)
like `staging/`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
from botocore.exceptions import ClientError

from analytics_pipeline.loader.batch_queue import ReceivedMessage

log = logging.getLogger(__name__)

FAILURES_AREA = "load-failures"
MAX_ERROR_CHARS = 2_000


class LoadFailure(msgspec.Struct, kw_only=True):
    batch_id: str | None  # None: the message is not a batch this pipeline wrote
    sqs_message_id: str
    kind: str | None = None
    day: str | None = None
    row_count: int | None = None
    receive_count: int
    stage: str  # "load": reading the body or the warehouse load failed
    error: str
    failed_at: str


def failure_key(batch_id: str | None, sqs_message_id: str) -> str:
    return f"{FAILURES_AREA}/{batch_id or 'sqs-' + sqs_message_id}.json"


def record_failure(
    s3: Any, bucket: str, origin: ReceivedMessage, stage: str, error: BaseException | str
) -> LoadFailure:
    """Write the failure record of a received message; never raises (a failure to record must
    not hide the failure)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    message_id, header = origin.message_id, origin.header
    batch: dict[str, Any] = {"batch_id": None}
    if header is not None:
        batch = {"batch_id": header.batch_id, "kind": header.kind.value, "day": header.day}
        batch["row_count"] = header.row_count
    failure = LoadFailure(
        **batch,
        sqs_message_id=message_id,
        receive_count=origin.receive_count,
        stage=stage,
        error=text[:MAX_ERROR_CHARS],
        failed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    batch_id = failure.batch_id
    try:
        s3.put_object(
            Bucket=bucket,
            Key=failure_key(batch_id, message_id),
            Body=msgspec.json.encode(failure),
            ContentType="application/json",
        )
    except Exception as put_error:
        log.warning("could not record the failure of %s: %s", batch_id or message_id, put_error)
    return failure


def read_failure(
    s3: Any, bucket: str, batch_id: str | None, sqs_message_id: str
) -> LoadFailure | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=failure_key(batch_id, sqs_message_id))["Body"]
    except ClientError:
        return None
    try:
        return msgspec.json.decode(body.read(), type=LoadFailure)
    except msgspec.DecodeError:
        return None
