"""`analytics-pipeline dev`: the whole local pipeline as a few supervised processes.

emulator (reused when one already answers, so AWS state can outlive a pipeline restart) ->
Kinesis trigger poller -> HTTP collector -> `dagster dev` (webserver, daemon, code server, run
workers) -> optionally the traffic simulator. Every child runs in its own session so that
stopping its process group stops its whole tree; a child that dies unexpectedly is restarted,
except `dagster dev` whose exit ends the stack.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from analytics_pipeline.local.processes import ChildProcess, stop_on_signals
from analytics_pipeline.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Child(ChildProcess):
    """A supervised child: restarted when it dies, unless `restart` is off."""

    restart: bool = True
    restarts: int = 0


def prepare_dagster_home(settings: Settings) -> Path:
    """Write the repository's dagster.yaml into DAGSTER_HOME (kept in step on every start)."""
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    source = REPO_ROOT / "dagster.yaml"
    target = settings.dagster_home / "dagster.yaml"
    if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)
    return settings.dagster_home


def child_env(settings: Settings) -> dict[str, str]:
    """The environment every child sees: the same resolved settings as this process."""
    return {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}


def dagster_dev_command(port: int) -> list[str]:
    dagster = Path(sys.executable).with_name("dagster")
    return [
        str(dagster),
        "dev",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workspace",
        str(REPO_ROOT / "workspace.yaml"),
    ]


def run_dev(settings: Settings, *, port: int, simulate_rate: float | None, say=print) -> int:
    """Start everything, supervise until Ctrl-C / SIGTERM, then stop all it started."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    prepare_dagster_home(settings)
    with stop_on_signals() as stop:
        return _supervise(settings, port, simulate_rate, say, stop)


def _supervise(
    settings: Settings,
    port: int,
    simulate_rate: float | None,
    say: Callable[[str], object],
    stop: threading.Event,
) -> int:
    from analytics_pipeline.local.bigquery_emulator import ensure_bigquery_emulator
    from analytics_pipeline.local.bootstrap import ensure_resources
    from analytics_pipeline.local.emulator import ensure_emulator

    emulator = ensure_emulator(settings)
    say(
        f"AWS emulator: {settings.aws_endpoint_url} "
        f"({'started, pid ' + str(emulator.pid) if emulator else 'reused'})"
    )
    bigquery_emulator = ensure_bigquery_emulator(settings)
    if settings.warehouse == "bigquery" and settings.bigquery_emulator_rest:
        say(
            f"BigQuery emulator: {settings.bigquery_emulator_rest} "
            f"({'started, pid ' + str(bigquery_emulator.pid) if bigquery_emulator else 'reused'})"
        )
    ensure_resources(settings)
    say(
        f"stream {settings.stream_name}, queue {settings.queue_name} "
        f"(+ {settings.dlq_name}), bucket {settings.bucket}: ready"
    )

    env = child_env(settings)
    python = sys.executable
    children = [
        Child(
            "trigger",
            [python, "-m", "analytics_pipeline.cli", "trigger"],
            settings.state_dir / "trigger.log",
            env,
        ),
        Child(
            "collector",
            [python, "-m", "analytics_pipeline.cli", "collector"],
            settings.state_dir / "collector.log",
            env,
        ),
        Child(
            "dagster",
            dagster_dev_command(port),
            settings.state_dir / "dagster.log",
            env,
            restart=False,
        ),
    ]
    if simulate_rate is not None:
        children.append(
            Child(
                "simulator",
                [
                    python,
                    "-m",
                    "analytics_pipeline.cli",
                    "simulate",
                    "--forever",
                    "--rate",
                    str(simulate_rate),
                ],
                settings.state_dir / "simulator.log",
                env,
            )
        )
    for child in children:
        child.start()
        say(f"{child.name}: pid {child.pid}, log {child.log_path}")
    say(
        f"Collector (Segment HTTP API): http://{settings.collector_host}:"
        f"{settings.collector_port}/v1"
    )
    say(f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops everything this command started)")

    exit_code = 0
    try:
        while not stop.wait(0.5):
            for child in children:
                code = child.exit_code()
                if code is None:
                    continue
                if not child.restart:
                    say(f"{child.name} exited with {code}; stopping (see {child.log_path})")
                    exit_code = code or 1
                    stop.set()
                    break
                child.restarts += 1
                say(f"{child.name} exited with {code}; restarting (restart {child.restarts})")
                if not stop.wait(min(30.0, 2.0**child.restarts)):
                    child.start()
    finally:
        say("stopping...")
        for child in reversed(children):
            child.stop()
        if emulator is not None:
            emulator.stop()
        if bigquery_emulator is not None:
            bigquery_emulator.stop()
        say("stopped")
    return exit_code
