"""`analytics-pipeline dev`: the whole local pipeline as a few supervised processes.

emulator (reused when one already answers; one started here outlives `dev`, so AWS state
survives a pipeline restart) -> Kinesis trigger poller -> HTTP collector -> `dagster dev`
(webserver, daemon, code server, run workers) -> optionally the traffic simulator. Every child
runs in its own session so that stopping its process group stops its whole tree; a child that dies
unexpectedly is restarted, except `dagster dev` whose exit ends the stack.

Nothing outlives `dev` but the AWS emulator: each child gets SIGTERM when `dev` dies, and the
lifeline stops their process groups (grandchildren included) within seconds of it, SIGKILL of
`dev` included. `dev` first takes the locks of its state folder and its queue
(`pipeline_lock.py`) and checks its ports, so a second pipeline on the same queue is refused
before it starts anything.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from msgspec.structs import replace

from analytics_pipeline.local.emulator import recorded_emulator
from analytics_pipeline.local.lifeline import Lifeline
from analytics_pipeline.local.pipeline_lock import (
    PipelineLock,
    PipelineRecord,
    ProcessRecord,
    new_record,
    now_text,
)
from analytics_pipeline.local.ports import refuse_taken
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


def check_ports(settings: Settings, ui_port: int) -> None:
    """PortTaken for any port the stack would listen on that something else holds, before
    anything starts."""
    from analytics_pipeline.local.bigquery_emulator import check_emulator_ports
    from analytics_pipeline.local.emulator import check_endpoint_port

    refuse_taken(
        "127.0.0.1",
        ui_port,
        "the Dagster UI's",
        "choose another with `analytics-pipeline dev --port N`",
    )
    refuse_taken(
        settings.collector_host,
        settings.collector_port,
        "the HTTP collector's",
        "choose another with ANALYTICS_COLLECTOR_PORT",
    )
    check_endpoint_port(settings)
    check_emulator_ports(settings)


def run_dev(settings: Settings, *, port: int, simulate_rate: float | None, say=print) -> int:
    """Start everything, supervise until Ctrl-C / SIGTERM, then stop all it started (the AWS
    emulator aside). Raises PipelineRunning or PortTaken, having started nothing."""
    lock = PipelineLock.acquire(settings, say)
    record = new_record(settings, port)
    try:
        lock.write(record)
        check_ports(settings, port)
        settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        prepare_dagster_home(settings)
        with stop_on_signals() as stop:
            return _supervise(settings, port, simulate_rate, say, stop, lock, record)
    finally:
        lock.write(replace(lock.record or record, stopped_at=now_text()))
        lock.close()


def _supervise(
    settings: Settings,
    port: int,
    simulate_rate: float | None,
    say: Callable[[str], object],
    stop: threading.Event,
    lock: PipelineLock,
    record: PipelineRecord,
) -> int:
    from analytics_pipeline.local.bigquery_emulator import ensure_bigquery_emulator
    from analytics_pipeline.local.bootstrap import ensure_resources
    from analytics_pipeline.local.emulator import ensure_emulator

    # Every child is started from this (the main) thread: PR_SET_PDEATHSIG, which makes each
    # die with this process, fires when the thread that started it ends (see processes.py).
    lifeline = Lifeline(settings.state_dir / "lifeline.log", inherited_fds=lock.fds).start()
    running: dict[str, int] = {"lifeline": lifeline.process.pid}

    def publish() -> None:
        lock.write(
            replace(
                record,
                processes=tuple(ProcessRecord.of(name, pid) for name, pid in running.items()),
            )
        )

    publish()
    children: list[Child] = []
    bigquery_emulator = None
    exit_code = 0
    try:
        emulator = ensure_emulator(settings)
        if emulator is not None:
            running["AWS emulator"] = emulator.pid
        say(
            f"AWS emulator: {settings.aws_endpoint_url} "
            f"({'started, pid ' + str(emulator.pid) if emulator else 'reused'})"
        )
        bigquery_emulator = ensure_bigquery_emulator(settings)
        if bigquery_emulator is not None:
            lifeline.watch(bigquery_emulator.pid)
            running["BigQuery emulator"] = bigquery_emulator.pid
        if settings.warehouse == "bigquery" and settings.bigquery_emulator_rest:
            how = f"started, pid {bigquery_emulator.pid}" if bigquery_emulator else "reused"
            say(f"BigQuery emulator: {settings.bigquery_emulator_rest} ({how})")
        ensure_resources(settings)
        say(
            f"stream {settings.stream_name}, queue {settings.queue_name} "
            f"(+ {settings.dlq_name}), bucket {settings.bucket}: ready"
        )

        children = _children(settings, port, simulate_rate)
        for child in children:
            child.start()
            lifeline.watch(child.pid)
            running[child.name] = child.pid
            say(f"{child.name}: pid {child.pid}, log {child.log_path}")
        publish()
        say(
            f"Collector (Segment HTTP API): http://{settings.collector_host}:"
            f"{settings.collector_port}/v1"
        )
        say(
            f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C or `analytics-pipeline stop` stops "
            "every process this command started but the AWS emulator)"
        )

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
                    lifeline.forget(child.pid)
                    child.start()
                    lifeline.watch(child.pid)
                    running[child.name] = child.pid
                    publish()
    finally:
        say("stopping...")
        for child in reversed(children):
            child.stop()
        if bigquery_emulator is not None:
            bigquery_emulator.stop()
        lifeline.close()
        emulator_record = recorded_emulator(settings)
        if emulator_record is not None and emulator_record.process.running():
            say(
                f"stopped; the AWS emulator (pid {emulator_record.process.pid}) keeps running so "
                "that the stream and queues survive a restart (`analytics-pipeline stop "
                "--emulator` stops it)"
            )
        else:
            say("stopped")
    return exit_code


def _children(settings: Settings, port: int, simulate_rate: float | None) -> list[Child]:
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
    return children
