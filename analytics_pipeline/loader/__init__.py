"""Loading batches from SQS into a warehouse, exactly once; used by the Dagster runs and the CLI."""

from analytics_pipeline.loader.batch_queue import BatchQueue, BatchRef, ReceivedMessage
from analytics_pipeline.loader.load import drain_day, load_refs

__all__ = ["BatchQueue", "BatchRef", "ReceivedMessage", "drain_day", "load_refs"]
