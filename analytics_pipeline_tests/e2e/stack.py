"""Real local processes for end-to-end tests: the trigger poller and `dagster dev`.

Each runs in its own session and is stopped by process group, never by name.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analytics_pipeline.local.processes import stop_process_group
from analytics_pipeline.local.stack import (
    child_env,
    dagster_dev_command,
    prepare_dagster_home,
)
from analytics_pipeline.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], Any], timeout: float, interval: float = 1.0, what: str = ""
) -> Any:
    """Poll until `condition()` is truthy; return its value or fail with the last one seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


class Process:
    """A child in its own session, logging to a file the test can show on failure."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            command,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        stop_process_group(self.popen)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_trigger(settings: Settings) -> Process:
    return Process(
        [sys.executable, "-m", "analytics_pipeline.cli", "trigger"],
        child_env(settings),
        settings.state_dir / "trigger.log",
    )


class DagsterDev(Process):
    def __init__(self, settings: Settings, port: int) -> None:
        prepare_dagster_home(settings)
        env = child_env(settings)
        env["DAGSTER_DISABLE_TELEMETRY"] = "1"
        super().__init__(dagster_dev_command(port), env, settings.state_dir / "dagster.log")
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        def answering() -> bool:
            if not self.alive():
                raise AssertionError(f"dagster dev exited:\n{self.tail()}")
            return server_answers(self.url)

        wait_for(answering, timeout, interval=0.5, what="dagster dev /server_info")

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return graphql(self.url, query, variables)


def server_answers(url: str) -> bool:
    """True when the Dagster webserver at `url` answers /server_info."""
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """One query against the Dagster webserver at `url`; GraphQL errors fail the test."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise AssertionError(payload["errors"])
    return payload["data"]
