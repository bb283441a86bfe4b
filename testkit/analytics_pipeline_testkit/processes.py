"""Real local processes for tests and benchmarks: ports, waiting, the Dagster harness, and
finding and killing processes by ancestry and by socket (psutil), never by name.

A fault test must kill exactly the process it means: the one that sent a call the fault proxy is
holding (found from the TCP connection's client port), or every process under the dev
supervisor (found from parent ids). Killing a whole tree at once freezes it first with SIGSTOP,
so that nothing forks or restarts a child between the snapshot and the SIGKILL.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.local.stack import child_env, dagster_dev_command, prepare_dagster_home
from analytics_pipeline.settings import Settings


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def wait_showing_logs(
    processes: tuple[ChildProcess, ...],
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 2.0,
) -> Any:
    """`wait_for`, printing the end of each process's log when it times out (for the report)."""
    try:
        return wait_for(condition, timeout, interval=interval, what=what)
    except AssertionError:
        print(*(process.tail(80) for process in processes), sep="\n----\n")
        raise


# -- the stack's processes ------------------------------------------------------------------


def start_trigger(settings: Settings) -> ChildProcess:
    return ChildProcess(
        "trigger",
        [sys.executable, "-m", "analytics_pipeline.cli", "trigger"],
        settings.state_dir / "trigger.log",
        child_env(settings),
    ).start()


class DagsterDev(ChildProcess):
    """`dagster dev` on 127.0.0.1:`port` with the settings' DAGSTER_HOME, driven over HTTP."""

    def __init__(self, settings: Settings, port: int) -> None:
        prepare_dagster_home(settings)
        env = child_env(settings)
        env["DAGSTER_DISABLE_TELEMETRY"] = "1"
        super().__init__(
            "dagster dev", dagster_dev_command(port), settings.state_dir / "dagster.log", env
        )
        self.url = f"http://127.0.0.1:{port}"
        self.start()

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.wait_until(lambda: server_answers(self.url), timeout, "/server_info", interval=0.5)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return graphql(self.url, query, variables)


@contextlib.contextmanager
def running_stack(settings: Settings) -> Iterator[tuple[ChildProcess, DagsterDev]]:
    """The trigger poller and `dagster dev` (ready to answer) for `settings`; both stopped after."""
    trigger = start_trigger(settings)
    dagster = DagsterDev(settings, free_port())
    try:
        dagster.wait_ready()
        yield trigger, dagster
    finally:
        dagster.stop()
        trigger.stop()


def start_dev(
    env: dict[str, str], log_path: Path, timeout: float = 180
) -> tuple[ChildProcess, int]:
    """`analytics-pipeline dev` (as a user starts it) on a free UI port, once the UI answers;
    the caller stops it (`.stop()` ends its process group: everything dev started)."""
    port = free_port()
    dev = ChildProcess(
        "dev",
        [sys.executable, "-m", "analytics_pipeline.cli", "dev", "--port", str(port)],
        log_path,
        {**child_env(Settings.from_env(env)), "DAGSTER_DISABLE_TELEMETRY": "1"},
    ).start()
    dev.wait_until(lambda: server_answers(f"http://127.0.0.1:{port}"), timeout, "its UI", 1.0)
    return dev, port


class CollectorServer(ChildProcess):
    """`analytics-pipeline collector` (uvicorn on 127.0.0.1, the settings' collector port)."""

    def __init__(self, settings: Settings, log_path: Path, workers: int = 1) -> None:
        command = [sys.executable, "-m", "analytics_pipeline.cli", "collector"]
        super().__init__("collector", [*command, "--workers", str(workers)], log_path)
        self.env = child_env(settings)
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.collector_port}"
        self.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        def answering() -> bool:
            try:
                return get_json(f"{self.url}/health", timeout=1)[0] == 200
            except OSError:
                return False

        self.wait_until(answering, timeout, "/health", interval=0.1)

    def health(self) -> dict[str, Any]:
        status, body = get_json(f"{self.url}/health")
        assert status == 200, body
        return body


def get_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """(status, decoded JSON body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


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


# -- process trees and sockets --------------------------------------------------------------


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(root: int) -> list[int]:
    """Every live process below `root` (children, grandchildren, ...)."""
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child.pid for child in children if is_alive(child.pid)]


def command_line(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def pid_of_client(client_port: int, server_port: int, candidates: list[int]) -> int | None:
    """The process among `candidates` that holds the client end of a TCP connection."""
    for pid in candidates:
        with contextlib.suppress(psutil.Error):
            for connection in psutil.Process(pid).net_connections(kind="tcp"):
                remote = connection.raddr
                if connection.laddr.port == client_port and remote and remote.port == server_port:
                    return pid
    return None


def kill_tree_at_once(root: int) -> list[int]:
    """SIGKILL `root` and all its descendants together; returns the pids killed."""
    frozen: set[int] = set()
    while True:  # freeze until no new process appears under the frozen tree
        tree = {root, *descendants(root)}
        new = tree - frozen
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return sorted(frozen)


def wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    """Pids still alive after `timeout` (empty when all are gone)."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if is_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if is_alive(pid)]
    return alive


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by `pid` or its descendants."""
    found = set()
    for member in (pid, *descendants(pid)):
        with contextlib.suppress(psutil.Error):
            for connection in psutil.Process(member).net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    found.add((connection.laddr.ip, connection.laddr.port))
    return found


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback
