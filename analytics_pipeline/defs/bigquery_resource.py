"""The BigQuery warehouse resource, in its own module so DuckDB deployments never import it."""

from dagster_gcp import BigQueryResource

from analytics_pipeline.defs.resources import WarehouseResource
from analytics_pipeline.warehouse.base import Warehouse


class BigQueryWarehouseResource(WarehouseResource):
    """BigQuery through dagster-gcp's `BigQueryResource`, which owns project, location and
    credentials: application default credentials, or its `gcp_credentials` (a base64 service
    account key, e.g. `dg.EnvVar(...)`) - never a key file in the repository.

    `emulator_rest`/`emulator_grpc` are for a local emulator only (anonymous credentials).
    """

    bigquery: BigQueryResource
    dataset: str = "analytics"
    emulator_rest: str = ""
    emulator_grpc: str = ""
    partition_expiration_days: int | None = None
    require_partition_filter: bool = False

    def get_warehouse(self) -> Warehouse:
        from analytics_pipeline.warehouse.bigquery import (
            EMULATOR_PROJECT,
            BigQueryConfig,
            BigQueryWarehouse,
        )

        config = BigQueryConfig(
            project=self.bigquery.project or (EMULATOR_PROJECT if self.emulator_rest else ""),
            dataset=self.dataset,
            location=self.bigquery.location or "US",
            emulator_rest=self.emulator_rest or None,
            emulator_grpc=self.emulator_grpc or None,
            partition_expiration_days=self.partition_expiration_days,
            require_partition_filter=self.require_partition_filter,
        )
        if config.uses_emulator:
            return BigQueryWarehouse(config)
        with self.bigquery.get_client() as client:  # credentials are resolved here
            return BigQueryWarehouse(config, client=client)
