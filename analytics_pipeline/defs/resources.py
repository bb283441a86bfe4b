"""The resources, and the one function that builds them from the settings.

Assets only see `BatchQueueResource.get_queue()` and `WarehouseResource.get_warehouse()`. The
warehouse resource carries the pipeline's settings as environment variables (what the Dagster
UI shows is what the CLI would read) and opens the warehouse through `open_warehouse`, the one
place that chooses and configures it; credentials come the standard way (AWS: environment,
profile or role; Google: application default credentials), never from a config field.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import boto3
import dagster as dg
from botocore.config import Config
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field

from analytics_pipeline.aws import local_credentials
from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import Warehouse, open_warehouse


class BatchQueueResource(ResourceWithBoto3Configuration):
    """The SQS queue of batches, its dead-letter queue, the S3 bucket holding oversize bodies,
    and CloudWatch (the queues' and the Lambda's metrics)."""

    queue_name: str
    dead_letter_queue_name: str
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

    def get_dead_letters(self) -> BatchQueue:
        return BatchQueue.connect(
            self._session_client("sqs"),
            self._session_client("s3"),
            self.dead_letter_queue_name,
            self.bucket,
        )

    def get_cloudwatch(self) -> Any:
        return self._session_client("cloudwatch")


class WarehouseResource(dg.ConfigurableResource):
    """The configured warehouse (DuckDB or BigQuery), opened per use."""

    settings: dict[str, str] = Field(
        description="The pipeline's settings as environment variables (ANALYTICS_WAREHOUSE, "
        "ANALYTICS_DUCKDB_PATH, ANALYTICS_BIGQUERY_*, ...); unset ones take their defaults."
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> WarehouseResource:
        return cls(settings=settings.to_env(secrets=False))  # the UI shows resource config

    def get_warehouse(self, lock_wait_seconds: float | None = None) -> Warehouse:
        """`lock_wait_seconds`: wait at most this long for DuckDB's file lock (a sensor must end
        within 60 s) instead of ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS."""
        settings = Settings.from_env(self.settings)
        if lock_wait_seconds is not None:
            settings = replace(settings, warehouse_lock_wait_seconds=lock_wait_seconds)
        return open_warehouse(settings)


def batch_queue_resource(settings: Settings) -> BatchQueueResource:
    return BatchQueueResource(
        queue_name=settings.queue_name,
        dead_letter_queue_name=settings.dlq_name,
        bucket=settings.bucket,
        region_name=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        **local_credentials(settings.aws_endpoint_url),
    )


def resources_for(settings: Settings) -> dict[str, Any]:
    """Same keys in every environment; only the settings change."""
    return {
        "batch_queue": batch_queue_resource(settings),
        "warehouse": WarehouseResource.from_settings(settings),
    }
