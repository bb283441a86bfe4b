"""The ingest Lambda: Kinesis records -> validated, deduped, day-grouped batches on SQS.

Modules: `handler` (entry point `analytics_pipeline.ingest.handler.handler`), `packing` (pure:
dedupe, day grouping, encoding, inline-or-S3 choice), `sinks` (the SQS and S3 writes).

Production event source mapping (Kinesis -> this function). Lambda's defaults retry a failing
record until it expires from the stream and block the shard meanwhile, so set all of these:

- `FunctionResponseTypes=["ReportBatchItemFailures"]`: the handler returns the lowest sequence
  number whose batch could not be sent; Lambda retries from there instead of the whole batch.
- `BisectBatchOnFunctionError=true`: if the function itself errors, halve the batch to isolate
  the record that triggers it.
- `MaximumRetryAttempts=10` (not -1/infinite): bad data never errors (it is quarantined), so only
  an AWS outage exhausts this; ten attempts with Lambda's backoff ride out a short one.
- `MaximumRecordAgeInSeconds=21600` (6 h), well below the stream's retention (24 h, the free
  default): the on-failure destination receives only shard and sequence ranges, not the data, so
  a replay must read the records from the stream before they expire; that leaves at least 18 h
  after the alarm. A week of retention gives a week to react for $0.02 per shard-hour (~$14.60
  per shard-month, doubling a small deployment's bill): raise it when nobody watches weekends.
- `DestinationConfig.OnFailure`: an SQS queue (e.g. `analytics-ingest-failures`) with an alarm on
  its depth; each message names the shard and sequence range to replay.
- `BatchSize=1000`, `MaximumBatchingWindowInSeconds=1`: large batches give large SQS messages
  (few and large is what SQS and the loader want) at about a second of added latency. The
  invoke payload is capped at 6 MB with the records base64-encoded inside, so keep
  BatchSize x typical blob size x 1.34 below that.
- `ParallelizationFactor=1` to start (raise up to 10 when `IteratorAge` grows; ordering per
  partition key is kept), `StartingPosition=TRIM_HORIZON`.
- Function: timeout 60 s, memory 1024 MB (CPU scales with memory; gzip and JSON are CPU-bound),
  environment as in `Settings` with `AWS_ENDPOINT_URL=""` (empty: real AWS), IAM for
  kinesis:GetRecords/GetShardIterator/DescribeStream*/ListShards, sqs:SendMessage and
  sqs:GetQueueUrl on the batch queue, s3:PutObject on the bucket's `oversize/` prefix.

Locally `analytics_pipeline.local.trigger` plays the mapping with the same semantics.
"""
