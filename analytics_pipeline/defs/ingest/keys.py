"""The asset keys and check names of the pipeline, in one place (every module of `defs` uses
them; keeping them apart from the definitions keeps the imports one way)."""

import dagster as dg

KINESIS_STREAM = dg.AssetKey("kinesis_stream")
SQS_BATCH_QUEUE = dg.AssetKey("sqs_batch_queue")
EVENTS = dg.AssetKey("events")
EVENTS_QUARANTINE = dg.AssetKey("events_quarantine")
DAILY_EVENT_COUNTS = dg.AssetKey("daily_event_counts")
DAILY_ACTIVE_USERS = dg.AssetKey("daily_active_users")

COUNTS_RECONCILE_CHECK = "counts_reconcile"
NO_DUPLICATES_CHECK = "no_duplicate_message_ids"
QUARANTINE_RATE_CHECK = "quarantine_rate"
FRESHNESS_CHECK = "events_fresh"
DEAD_LETTERS_CHECK = "dead_letter_queue_empty"
