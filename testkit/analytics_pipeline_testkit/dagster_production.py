"""Dagster as deploy/dagster/ configures it, on this machine: the production instance config
(PostgreSQL storage, S3 compute logs, run retries and monitoring) and the production workspace
(the code location served by `dagster api grpc`), with `dagster dev` as webserver + daemon.

Every process runs in its own session and is stopped by its process group.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.local.stack import REPO_ROOT, child_env, dagster_dev_command
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.postgres import PostgresServer
from analytics_pipeline_testkit.processes import graphql, server_answers, wait_for

INSTANCE_CONFIG = REPO_ROOT / "deploy" / "dagster" / "dagster.yaml"
WORKSPACE = REPO_ROOT / "deploy" / "dagster" / "workspace.yaml"
CODE_LOCATION = "analytics_pipeline"
RUN_COORDINATOR_PLACEHOLDER = "RUN_COORDINATOR_PLACEHOLDER"


def instance_config(run_coordinator: str | None = None) -> str:
    """deploy/dagster/dagster.yaml, optionally with another run_coordinator block (benchmarks)."""
    text = INSTANCE_CONFIG.read_text()
    if run_coordinator is None:
        return text
    start = text.index("run_coordinator:")
    end = text.index("\n\n", start)
    return text[:start] + run_coordinator.strip() + text[end:]


class ProductionDagster:
    """Code server + `dagster dev -w deploy/dagster/workspace.yaml` on PostgreSQL."""

    def __init__(
        self,
        settings: Settings,
        postgres: PostgresServer,
        port: int,
        code_port: int,
        run_coordinator: str | None = None,
        database: str | None = None,
    ) -> None:
        settings.dagster_home.mkdir(parents=True, exist_ok=True)
        (settings.dagster_home / "dagster.yaml").write_text(instance_config(run_coordinator))
        self.env = {
            **child_env(settings),
            **(postgres.env(database) if database else postgres.env()),
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(code_port),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            # The compute log manager's boto3 takes the standard chain: AWS_ENDPOINT_URL is the
            # emulator (child_env), these are its dummy keys.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        self.url = f"http://127.0.0.1:{port}"
        dagster = str(Path(sys.executable).with_name("dagster"))
        # Create the schema once, before three processes race to create it on an empty
        # database (seen: a duplicate pg_type error). Production does the same (README).
        subprocess.run(
            [dagster, "instance", "migrate"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        self.code_server = ChildProcess(
            "code server",
            [
                *(dagster, "api", "grpc", "-m", "analytics_pipeline.definitions"),
                *("-h", "127.0.0.1", "-p", str(code_port), "--location-name", CODE_LOCATION),
            ],
            settings.state_dir / "code-server.log",
            self.env,
        ).start()
        command = dagster_dev_command(port)
        command[command.index("--workspace") + 1] = str(WORKSPACE)
        self.dev = ChildProcess(
            "dagster dev", command, settings.state_dir / "dagster.log", self.env
        ).start()

    def wait_ready(self, timeout: float = 180.0) -> None:
        def answering() -> bool:
            for process in (self.code_server, self.dev):
                if not process.alive():
                    raise AssertionError(f"{process.log_path.name} exited:\n{process.tail()}")
            if not server_answers(self.url):
                return False
            locations = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name "
                "locationOrLoadError { __typename } } } } }"
            )["workspaceOrError"]["locationEntries"]
            return any(
                entry["name"] == CODE_LOCATION
                and entry["locationOrLoadError"]
                and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                for entry in locations
            )

        wait_for(answering, timeout, interval=0.5, what="webserver and code location")

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return graphql(self.url, query, variables)

    def tail(self, lines: int = 60) -> str:
        return f"{self.code_server.tail(lines)}\n----\n{self.dev.tail(lines)}"

    def stop(self) -> None:
        self.dev.stop()
        self.code_server.stop()
