"""Retry policy shared by every asset that writes the warehouse."""

import dagster as dg

# A busy or briefly unreachable warehouse is the usual failure: back off, with jitter so that
# concurrent runs do not retry in step.
WAREHOUSE_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
