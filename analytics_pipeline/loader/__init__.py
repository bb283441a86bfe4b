"""Loading batches from SQS into a warehouse, exactly once: the queue, the loader's store, the
plan of a load, the load itself and the long-lived loop that runs it."""

from analytics_pipeline.loader.batch_queue import BatchQueue, ReceivedMessage
from analytics_pipeline.loader.load import Loader, LoadOutcome
from analytics_pipeline.loader.store import LoaderStore

__all__ = ["BatchQueue", "LoadOutcome", "Loader", "LoaderStore", "ReceivedMessage"]
