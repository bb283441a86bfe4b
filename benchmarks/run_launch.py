"""Run launch latency of each candidate run coordinator, with the production instance config.

Dagster as deploy/dagster/ runs it (PostgreSQL storage, code location behind `dagster api
grpc`, DefaultRunLauncher), against the AWS emulator; for each coordinator, launches the load
job (empty queue: it drains nothing) one run at a time through GraphQL, and reads the run's
creation, start and end times from Dagster's own run records. The candidates run side by side
and take turns, so the load of a shared box falls on all of them. Run from the repository root:

    .venv/bin/python -m benchmarks.run_launch [--runs 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.emulator import start_emulator
from analytics_pipeline.settings import Settings
from analytics_pipeline_tests.conftest import free_port, unique_settings_env
from analytics_pipeline_tests.test_deploy.dagster_production import (
    CODE_LOCATION,
    ProductionDagster,
)
from analytics_pipeline_tests.test_deploy.postgres import start_postgres

COORDINATORS = {
    "DefaultRunCoordinator": """
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
""",
    "QueuedRunCoordinator (defaults: dequeue every 5 s)": """
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
""",
    "QueuedRunCoordinator (dequeue_interval_seconds 1, threads)": """
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
""",
}

LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } } } }
"""
RUN = """query($id: ID!) { runOrError(runId: $id) {
  ... on Run { status creationTime startTime endTime } } }"""


def launch_and_time(dagster: ProductionDagster, day: str) -> tuple[float, float]:
    params = {
        "selector": {
            "repositoryLocationName": CODE_LOCATION,
            "repositoryName": "__repository__",
            "jobName": "load_batches_job",
        },
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }
    answer = dagster.graphql(LAUNCH, {"params": params})["launchRun"]
    if answer["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(answer)
    run_id = answer["run"]["runId"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run = dagster.graphql(RUN, {"id": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            if run["status"] != "SUCCESS":
                raise RuntimeError(f"run {run_id} ended {run['status']}")
            return run["startTime"] - run["creationTime"], run["endTime"] - run["creationTime"]
        time.sleep(0.1)
    raise TimeoutError(run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    day = datetime.now(UTC).date().isoformat()
    with tempfile.TemporaryDirectory(prefix="launch-bench-") as folder:
        root = Path(folder)
        emulator = start_emulator(free_port(), root / "emulator.log")
        postgres = start_postgres(free_port())
        stacks: dict[str, ProductionDagster] = {}
        try:
            for number, (name, block) in enumerate(COORDINATORS.items()):
                # One instance (database) each: a queued coordinator's daemon would otherwise
                # dequeue the other instances' runs.
                database = f"launch_{number}"
                postgres.create_database(database)
                base = root / database
                settings = Settings.from_env(unique_settings_env(emulator.endpoint_url, base))
                settings.state_dir.mkdir(parents=True)
                ensure_resources(settings)
                stacks[name] = ProductionDagster(
                    settings, postgres, free_port(), free_port(), block, database
                )
            for dagster in stacks.values():
                dagster.wait_ready()
                launch_and_time(dagster, day)  # the first run also warms the code server
            # Round robin, one run at a time: the shared box's load falls on every candidate.
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in stacks}
            for _ in range(args.runs):
                for name, dagster in stacks.items():
                    samples[name].append(launch_and_time(dagster, day))
        finally:
            for dagster in stacks.values():
                dagster.stop()
            postgres.stop()
            emulator.stop()
    for name, values in samples.items():
        starts = sorted(s for s, _ in values)
        ends = sorted(e for _, e in values)
        print(
            f"{name}: created->started median {statistics.median(starts):.2f} s "
            f"(min {starts[0]:.2f}, max {starts[-1]:.2f}); created->ended median "
            f"{statistics.median(ends):.2f} s ({args.runs} runs)"
        )


if __name__ == "__main__":
    main()
