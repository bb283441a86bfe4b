"""BigQuery as the warehouse: configuration, schema, Storage Write streams, the load script."""

from analytics_pipeline.warehouse.bigquery.config import (
    EMULATOR_PROJECT,
    BigQueryConfig,
    bigquery_clients,
)
from analytics_pipeline.warehouse.bigquery.schema import FENCE_TABLE
from analytics_pipeline.warehouse.bigquery.warehouse import STAGING_PREFIX, BigQueryWarehouse

__all__ = [
    "EMULATOR_PROJECT",
    "FENCE_TABLE",
    "STAGING_PREFIX",
    "BigQueryConfig",
    "BigQueryWarehouse",
    "bigquery_clients",
]
