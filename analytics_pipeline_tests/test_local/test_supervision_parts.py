"""The parts `dev` supervises with, without Dagster: the locks (one pipeline per state folder
and per queue, a stale lock taken over), the lifeline (a killed supervisor's process groups are
stopped, SIGKILL for what ignores SIGTERM), the port checks and `stop --emulator`."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from analytics_pipeline.cli import main
from analytics_pipeline.local.emulator import ensure_emulator, recorded_emulator
from analytics_pipeline.local.lifeline import ORPHAN_GRACE_SECONDS
from analytics_pipeline.local.pipeline_lock import PipelineLock, PipelineRunning, new_record
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import free_port, is_alive, wait_for, wait_gone


def _settings(base: Path, **overrides: str) -> Settings:
    env = unique_settings_env("http://127.0.0.1:4566", base, **overrides)
    return Settings.from_env(env)


def test_a_second_dev_on_the_state_folder_or_the_queue_is_refused_naming_the_pid(
    tmp_path: Path,
) -> None:
    first = _settings(tmp_path / "a")
    lock = PipelineLock.acquire(first)
    try:
        lock.write(new_record(first, 3000))
        same_folder = first
        other_folder_same_queue = Settings.from_env(
            {**first.to_env(), "ANALYTICS_STATE_DIR": str(tmp_path / "b" / "state")}
        )
        same_queue_by_another_name = Settings.from_env(
            {**other_folder_same_queue.to_env(), "AWS_ENDPOINT_URL": "http://localhost:4566"}
        )
        same_folder_other_queue = Settings.from_env({**first.to_env(), "ANALYTICS_QUEUE_NAME": "x"})

        for settings in (same_folder, same_folder_other_queue):
            with pytest.raises(PipelineRunning) as refused:
                PipelineLock.acquire(settings)
            assert f"pid {os.getpid()}" in str(refused.value)
            assert "`analytics-pipeline stop`" in str(refused.value)
        for settings in (other_folder_same_queue, same_queue_by_another_name):
            with pytest.raises(PipelineRunning) as refused:
                PipelineLock.acquire(settings)
            assert f"pid {os.getpid()}" in str(refused.value)
            assert f"ANALYTICS_STATE_DIR={first.state_dir} analytics-pipeline stop" in str(
                refused.value
            )
        assert not (tmp_path / "b").exists(), "a refused dev created its state folder"
    finally:
        lock.close()
    PipelineLock.acquire(other_folder_same_queue).close()  # released: the next one gets it


SUPERVISOR = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from analytics_pipeline.local.lifeline import Lifeline
    from analytics_pipeline.local.pipeline_lock import PipelineLock, new_record
    from analytics_pipeline.local.processes import ChildProcess
    from analytics_pipeline.settings import Settings

    settings = Settings.from_env()
    lock = PipelineLock.acquire(settings)
    lock.write(new_record(settings, 3000))
    lifeline = Lifeline(settings.state_dir / "lifeline.log", inherited_fds=lock.fds).start()
    # A child and its grandchild that ignore SIGTERM: only the lifeline's SIGKILL ends them.
    child = ChildProcess(
        "stubborn",
        ["sh", "-c", "trap '' TERM; sleep 600 & echo $!; wait"],
        settings.state_dir / "stubborn.log",
    ).start()
    lifeline.watch(child.pid)
    print(lifeline.process.pid, child.pid, flush=True)
    time.sleep(600)
    """
)


def test_a_killed_supervisors_groups_are_stopped_and_its_stale_lock_taken_over(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR],
        env={**os.environ, **settings.to_env()},
        stdout=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    try:
        lifeline, child = map(int, supervisor.stdout.readline().split())
        log = settings.state_dir / "stubborn.log"
        grandchild = int(wait_for(lambda: log.read_text().strip(), 10, 0.1, "the grandchild"))
        assert all(is_alive(pid) for pid in (lifeline, child, grandchild))

        os.killpg(supervisor.pid, signal.SIGKILL)  # the supervisor's own group: all but those
        killed_at = time.monotonic()
        supervisor.wait(timeout=10)  # dead (a signal is not delivered the instant it is sent)
        said: list[str] = []
        PipelineLock.acquire(settings, say=said.append).close()  # waits for the lifeline
        waited = time.monotonic() - killed_at
    finally:
        supervisor.kill()
        supervisor.wait()
    print(f"lock free {waited:.1f} s after the SIGKILL")
    assert not wait_gone([child, grandchild, lifeline], timeout=5)
    assert ORPHAN_GRACE_SECONDS - 1 < waited < ORPHAN_GRACE_SECONDS + 15
    assert any("waiting for its processes to stop" in line for line in said), said
    assert any("ended without stopping" in line for line in said), said
    assert "stopping process groups" in (settings.state_dir / "lifeline.log").read_text()


@pytest.fixture
def not_aws() -> Iterator[int]:
    """A web server that is not an AWS emulator (any other app on the port)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_dev_refuses_ports_taken_by_something_else_before_starting_anything(
    tmp_path: Path, aws_endpoint: str, pipeline_env, not_aws: int
) -> None:
    runner = CliRunner()
    with socket.socket() as ui:
        ui.bind(("127.0.0.1", 0))
        ui.listen()
        ui_port = ui.getsockname()[1]
        pipeline_env(unique_settings_env(aws_endpoint, tmp_path / "ui"))
        result = runner.invoke(main, ["dev", "--port", str(ui_port)])
    assert result.exit_code == 1, result.output
    assert f"port {ui_port} on 127.0.0.1, the Dagster UI's, is already in use" in result.output
    assert "`analytics-pipeline dev --port N`" in result.output

    endpoint = f"http://127.0.0.1:{not_aws}"
    pipeline_env(unique_settings_env(endpoint, tmp_path / "aws"))
    result = runner.invoke(main, ["dev", "--port", str(free_port())])
    assert result.exit_code == 1, result.output
    assert f"port {not_aws} on 127.0.0.1, the AWS emulator's (AWS_ENDPOINT_URL={endpoint})" in (
        result.output
    )
    assert "point AWS_ENDPOINT_URL at another port" in result.output

    for state in (tmp_path / "ui" / "state", tmp_path / "aws" / "state"):
        assert sorted(p.name for p in state.iterdir()) == ["dev.lock"]  # no child, no emulator


def test_stop_with_emulator_stops_the_emulator_dev_left_running(tmp_path: Path, pipeline_env):
    env = unique_settings_env(f"http://127.0.0.1:{free_port()}", tmp_path)
    pipeline_env(env)
    settings = Settings.from_env(env)
    emulator = ensure_emulator(settings)  # what `dev` does when none answers
    assert emulator is not None
    try:
        record = recorded_emulator(settings)
        assert record is not None and record.process.pid == emulator.pid
        status = CliRunner().invoke(main, ["status"])
        assert "AWS emulator" in status.output and "outlives dev" in status.output

        result = CliRunner().invoke(main, ["stop", "--emulator"])
        assert result.exit_code == 0, result.output
        assert "no `analytics-pipeline dev` runs" in result.output
        assert f"stopped the AWS emulator (pid {emulator.pid}" in result.output
        emulator.popen.wait(timeout=10)  # it is this test's child: reap it
        assert recorded_emulator(settings) is None
    finally:
        emulator.stop()
