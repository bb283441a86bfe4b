"""BigQuery as the warehouse: configuration, schema, Storage Write streams, the warehouse."""

from analytics_pipeline.warehouse.bigquery.config import (
    EMULATOR_PROJECT,
    BigQueryConfig,
    bigquery_clients,
)
from analytics_pipeline.warehouse.bigquery.warehouse import BigQueryWarehouse

__all__ = ["EMULATOR_PROJECT", "BigQueryConfig", "BigQueryWarehouse", "bigquery_clients"]
