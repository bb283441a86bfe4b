"""Where the BigQuery warehouse lives and how its two clients (jobs, Storage Write) connect."""

from __future__ import annotations

from dataclasses import dataclass

from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

from analytics_pipeline.settings import Settings

EMULATOR_PROJECT = "local-project"  # bqemulator's default project (local/bigquery_emulator.py)


@dataclass(frozen=True)
class BigQueryConfig:
    project: str
    dataset: str = "analytics"
    location: str = "US"
    emulator_rest: str | None = None  # e.g. http://127.0.0.1:9050 (bqemulator); never in prod
    emulator_grpc: str | None = None  # e.g. 127.0.0.1:9060
    partition_expiration_days: int | None = None
    require_partition_filter: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> BigQueryConfig:
        """The one place the settings become a BigQuery configuration (emulator project too)."""
        emulator_rest = settings.bigquery_emulator_rest or None
        return cls(
            project=settings.bigquery_project or (EMULATOR_PROJECT if emulator_rest else ""),
            dataset=settings.bigquery_dataset,
            location=settings.bigquery_location,
            emulator_rest=emulator_rest,
            emulator_grpc=settings.bigquery_emulator_grpc or None,
            partition_expiration_days=settings.bigquery_partition_expiration_days,
            require_partition_filter=settings.bigquery_require_partition_filter,
        )

    @property
    def uses_emulator(self) -> bool:
        return self.emulator_rest is not None


def bigquery_clients(
    config: BigQueryConfig, client: bigquery.Client | None = None
) -> tuple[bigquery.Client, BigQueryWriteClient]:
    """The query client and the Storage Write client, sharing one set of credentials.

    With an emulator endpoint: anonymous credentials, REST at `emulator_rest`, gRPC in plain
    text at `emulator_grpc`. Otherwise the given client or application default credentials.
    """
    if config.uses_emulator:
        import grpc
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
            BigQueryWriteGrpcTransport,
        )

        query_client = bigquery.Client(
            project=config.project,
            location=config.location,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=config.emulator_rest),
        )
        if not config.emulator_grpc:
            raise ValueError("an emulator needs both its REST and its gRPC endpoint")
        channel = grpc.insecure_channel(config.emulator_grpc)
        return query_client, BigQueryWriteClient(
            transport=BigQueryWriteGrpcTransport(channel=channel)
        )
    query_client = client or bigquery.Client(
        project=config.project or None, location=config.location
    )
    return query_client, BigQueryWriteClient(credentials=query_client._credentials)
