"""The processes the local stack starts, and how they stop: one wrapper, one signal helper.

Every child runs in a session of its own (its pid is its process group id), so stopping its
group stops its whole tree (`dagster dev`'s webserver, daemon, code servers and run workers).
A child also dies with its parent unless told otherwise: on Linux it gets SIGTERM when the
parent dies, however it dies (`PR_SET_PDEATHSIG`); the grandchildren that this cannot reach
are stopped by the lifeline (`local/lifeline.py`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


def stop_process_group(process: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # The group may still hold grandchildren after the leader exited (dagster's run workers).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def stop_groups(groups: Sequence[int], grace: float) -> None:
    """SIGTERM process groups that are not our children, SIGKILL what is left after `grace`
    seconds (their leaders were reparented, so there is no Popen to wait on)."""

    def alive(group: int) -> bool:
        try:
            os.killpg(group, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(group) for group in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _child_setup(die_with_parent: bool) -> Callable[[], None]:
    """A `preexec_fn`: default SIGINT/SIGTERM handling, and (Linux) SIGTERM when the parent dies.

    A background job inherits SIGINT ignored, and `dagster dev` maps SIGTERM to whatever SIGINT
    does, so without the reset it would ignore both. PR_SET_PDEATHSIG fires when the *thread*
    that forked the child ends, not the process: it is asked for only from the main thread (the
    supervisor starts every child from its main thread). libc is resolved here, before the
    fork, so the child only makes a few system calls before exec.
    """
    parent = os.getpid()
    on_main_thread = threading.current_thread() is threading.main_thread()
    prctl = None
    if die_with_parent and on_main_thread and sys.platform == "linux":
        prctl = ctypes.CDLL(None, use_errno=True).prctl

    def in_child() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the prctl: nobody would tell us
                os._exit(1)

    return in_child


@dataclass
class ChildProcess:
    """A child in its own session, its output appended to `log_path`; stopped by group.

    It dies with its parent (see `_child_setup`) unless `dies_with_parent` is off, for a
    process meant to outlive its starter (the AWS emulator of `dev`, the lifeline).
    """

    name: str
    command: list[str]
    log_path: Path
    env: dict[str, str] | None = None  # None: this process's environment
    cwd: Path | None = None
    grace_seconds: float = 15.0
    dies_with_parent: bool = True
    pass_fds: tuple[int, ...] = ()  # file descriptors the child inherits (lock files, pipes)
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> ChildProcess:
        """Start (or start again, appending to the same log)."""
        if self._log is not None:
            self._log.close()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the child
        self.popen = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=self.pass_fds,
            preexec_fn=_child_setup(self.dies_with_parent),
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> int | None:
        """None while running (or never started)."""
        return None if self.popen is None else self.popen.poll()

    def stop(self) -> None:
        stop_process_group(self.popen, self.grace_seconds)
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 40) -> str:
        """The end of the log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(
        self, ready: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
    ) -> None:
        """Wait until `ready()` is truthy; stop the child and fail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with code {self.exit_code()} before {what}; "
                    f"see {self.log_path}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name}: no {what} after {timeout:.0f} s; see {self.log_path}"
                )
            time.sleep(interval)


@contextlib.contextmanager
def stop_on_signals(
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    stop: threading.Event | None = None,
) -> Iterator[threading.Event]:
    """`stop` (or a new event) set by any of `signals` while the block runs; the previous
    handlers come back after. Only the main thread may install handlers: elsewhere the event
    is only set by its owner."""
    stop = stop or threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in signals}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
