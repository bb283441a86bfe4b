"""Resources, and the one function that picks them per environment (`ANALYTICS_WAREHOUSE`)."""

from __future__ import annotations

from typing import Any

import boto3
import dagster as dg
from botocore.config import Config
from dagster_aws.utils import ResourceWithBoto3Configuration

from analytics_pipeline.aws import local_credentials
from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import Warehouse


class BatchQueueResource(ResourceWithBoto3Configuration):
    """The SQS queue of batches and the S3 bucket holding staged and oversize bodies."""

    queue_name: str
    bucket: str

    def _session_client(self, service: str) -> Any:
        session = boto3.session.Session(profile_name=self.profile_name)
        credentials: dict[str, Any] = {}
        if self.aws_access_key_id:
            credentials = {
                "aws_access_key_id": self.aws_access_key_id,
                "aws_secret_access_key": self.aws_secret_access_key,
                "aws_session_token": self.aws_session_token,
            }
        return session.client(
            service,
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            config=Config(retries={"max_attempts": self.max_attempts, "mode": "standard"}),
            **credentials,
        )

    def get_queue(self) -> BatchQueue:
        return BatchQueue.connect(
            self._session_client("sqs"), self._session_client("s3"), self.queue_name, self.bucket
        )


class WarehouseResource(dg.ConfigurableResource):
    """Base of the warehouse resources; assets only see `get_warehouse()`."""

    def get_warehouse(self) -> Warehouse:
        raise NotImplementedError


class DuckDBWarehouseResource(WarehouseResource):
    path: str
    open_timeout_seconds: float = 120.0

    def get_warehouse(self) -> Warehouse:
        from pathlib import Path

        from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(Path(self.path), open_timeout_seconds=self.open_timeout_seconds)


def batch_queue_resource(settings: Settings) -> BatchQueueResource:
    return BatchQueueResource(
        queue_name=settings.queue_name,
        bucket=settings.bucket,
        region_name=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        **local_credentials(settings.aws_endpoint_url),
    )


def warehouse_resource(settings: Settings) -> WarehouseResource:
    if settings.warehouse == "duckdb":
        return DuckDBWarehouseResource(
            path=str(settings.duckdb_path),
            open_timeout_seconds=settings.warehouse_lock_wait_seconds,
        )
    if settings.warehouse == "bigquery":
        # Imported here: dagster_gcp takes ~0.9 s to import, paid by every run worker's launch
        # when the code location imports it unconditionally.
        from dagster_gcp import BigQueryResource

        from analytics_pipeline.defs.bigquery_resource import BigQueryWarehouseResource

        return BigQueryWarehouseResource(
            bigquery=BigQueryResource(
                project=settings.bigquery_project or None,
                location=settings.bigquery_location,
            ),
            dataset=settings.bigquery_dataset,
            emulator_rest=settings.bigquery_emulator_rest,
            emulator_grpc=settings.bigquery_emulator_grpc,
            partition_expiration_days=settings.bigquery_partition_expiration_days,
            require_partition_filter=settings.bigquery_require_partition_filter,
        )
    raise ValueError(
        f"ANALYTICS_WAREHOUSE={settings.warehouse!r} is not supported (use duckdb or bigquery)"
    )


def resources_for(settings: Settings) -> dict[str, Any]:
    """Same keys in every environment; only the implementations change."""
    return {
        "batch_queue": batch_queue_resource(settings),
        "warehouse": warehouse_resource(settings),
    }
