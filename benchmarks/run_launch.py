"""Run launch latency of each candidate run coordinator, with the production instance config.

Dagster as deploy/dagster/ runs it (PostgreSQL storage, code location behind `dagster api
grpc`, DefaultRunLauncher), against the AWS emulator; for each coordinator, launches the load
loop job for one second (empty queue: it loads nothing) one run at a time through GraphQL, and
reads the run's creation, start and end times from Dagster's own run records. The loop sensor is
stopped first (and its loop run ended), so that the measured runs never wait for the store. The
candidates run side by side and take turns, so the load of a shared box falls on all of them.

Since the loop design a launch happens once per ANALYTICS_LOOP_SECONDS (and when a loop run
dies), not once per batch: this latency is the gap between two loop runs, during which batches
wait in SQS. Run from the repository root:

    .venv/bin/python -m benchmarks.run_launch [--runs 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from analytics_pipeline.defs.ingest.loop import LOOP_JOB_NAME
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.emulator import start_emulator
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.dagster_production import CODE_LOCATION, ProductionDagster
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.postgres import start_postgres
from analytics_pipeline_testkit.processes import free_port, wait_for

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
REPOSITORY = {"repositoryLocationName": CODE_LOCATION, "repositoryName": "__repository__"}
SENSOR_STATE = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  ... on Sensor { sensorState { id selectorId status } } } }"""
STOP_SENSOR = """mutation($origin: String, $selector: String) {
  stopSensor(jobOriginId: $origin, jobSelectorId: $selector) { __typename } }"""
ACTIVE_LOOP_RUNS = """query($filter: RunsFilter) { runsOrError(filter: $filter) {
  ... on Runs { results { runId } } } }"""
TERMINATE = """mutation($id: String!) { terminateRun(runId: $id) { __typename } }"""


def stop_the_loop(dagster: ProductionDagster) -> None:
    """Stop the loop sensor and end the loop run it may have started (it holds the store)."""
    selector = {**REPOSITORY, "sensorName": "sqs_batches_sensor"}
    state = dagster.graphql(SENSOR_STATE, {"selector": selector})["sensorOrError"]["sensorState"]
    dagster.graphql(STOP_SENSOR, {"origin": state["id"], "selector": state["selectorId"]})
    active = {
        "pipelineName": LOOP_JOB_NAME,
        "statuses": ["QUEUED", "STARTING", "STARTED", "CANCELING"],
    }

    def loop_runs() -> list[dict]:
        return dagster.graphql(ACTIVE_LOOP_RUNS, {"filter": active})["runsOrError"]["results"]

    for run in loop_runs():
        dagster.graphql(TERMINATE, {"id": run["runId"]})
    wait_for(lambda: not loop_runs(), timeout=120, interval=0.5, what="no loop run left")


def launch_and_time(dagster: ProductionDagster) -> tuple[float, float]:
    params = {
        "selector": {**REPOSITORY, "jobName": LOOP_JOB_NAME},
        "runConfigData": {"ops": {"events_loop": {"config": {"seconds": 1}}}},
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
                stop_the_loop(dagster)
                launch_and_time(dagster)  # the first run also warms the code server
            # Round robin, one run at a time: the shared box's load falls on every candidate.
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in stacks}
            for _ in range(args.runs):
                for name, dagster in stacks.items():
                    samples[name].append(launch_and_time(dagster))
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
