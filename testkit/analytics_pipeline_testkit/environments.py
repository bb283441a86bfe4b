"""Settings for a pipeline of its own: unique AWS names and state under one folder."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from analytics_pipeline_testkit.processes import free_port


def unique_settings_env(endpoint: str, base_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for a pipeline of its own: unique AWS names, state under `base_dir`."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "ANALYTICS_STREAM_NAME": name,
        "ANALYTICS_STREAM_SHARDS": "2",
        "ANALYTICS_QUEUE_NAME": name,
        "ANALYTICS_BUCKET": name,
        "ANALYTICS_STATE_DIR": str(base_dir / "state"),
        "ANALYTICS_DUCKDB_PATH": str(base_dir / "warehouse.duckdb"),
        "DAGSTER_HOME": str(base_dir / "dagster_home"),
        "ANALYTICS_TRIGGER_POLL_SECONDS": "0.05",
        "ANALYTICS_COLLECTOR_PORT": str(free_port()),  # `dev` starts a collector too
    }
    env.update(overrides)
    return env


@dataclass(frozen=True)
class BigQueryEndpoint:
    """A running BigQuery emulator: REST for jobs and tables, gRPC for the Storage Write API."""

    rest: str
    grpc: str
    project: str

    def settings_env(self, dataset: str) -> dict[str, str]:
        return {
            "ANALYTICS_WAREHOUSE": "bigquery",
            "ANALYTICS_BIGQUERY_PROJECT": self.project,
            "ANALYTICS_BIGQUERY_DATASET": dataset,
            "ANALYTICS_BIGQUERY_EMULATOR_REST": self.rest,
            "ANALYTICS_BIGQUERY_EMULATOR_GRPC": self.grpc,
        }
