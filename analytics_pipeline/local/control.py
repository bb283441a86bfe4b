"""`analytics-pipeline stop` and the "Pipeline processes" part of `status`, from the record a
`dev` keeps in its state folder's lock file (`pipeline_lock.py`) and the emulator it left
running (`emulator.json`). Processes are told apart from later ones with the same pid by their
start time, never found by name."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from analytics_pipeline.local.emulator import recorded_emulator, stop_recorded_emulator
from analytics_pipeline.local.pipeline_lock import (
    PipelineRecord,
    ProcessRecord,
    read_record,
    state_lock_path,
)
from analytics_pipeline.settings import Settings

# `dev` stops its children one after the other, each with its own grace (15 s for Dagster).
DEV_STOP_TIMEOUT_SECONDS = 90.0
_LEFTOVER_GRACE_SECONDS = 5.0
_OUTLIVES_DEV = "AWS emulator"  # on purpose, see emulator.py


def pipeline_record(settings: Settings) -> PipelineRecord | None:
    return read_record(state_lock_path(settings))


def process_rows(settings: Settings) -> list[tuple[str, object, str]]:
    """(process, pid, state) of the last `dev` of this state folder and what it started."""
    record = pipeline_record(settings)
    rows: list[tuple[str, object, str]] = []
    if record is not None:
        if record.dev.running():
            state = f"running since {record.started_at}, UI http://127.0.0.1:{record.ui_port}"
        elif record.stopped_at:
            state = f"stopped at {record.stopped_at}"
        else:
            state = "gone (ended without stopping)"
        rows.append(("dev", record.dev.pid, state))
        rows += [(p.name, p.pid, _state(p)) for p in record.processes]
    emulator = recorded_emulator(settings)
    if emulator is not None and (record is None or record.process(_OUTLIVES_DEV) is None):
        rows.append((_OUTLIVES_DEV, emulator.process.pid, _state(emulator.process)))
    return rows


def _state(process: ProcessRecord) -> str:
    if not process.running():
        return "gone"
    if process.name == _OUTLIVES_DEV:
        return "running (outlives dev; `analytics-pipeline stop --emulator` stops it)"
    return "running"


def stop_pipeline(
    settings: Settings, *, emulator: bool, say: Callable[[str], object] = print
) -> bool:
    """Stop this state folder's `dev` (SIGTERM, as Ctrl-C would) and wait until everything it
    started is gone; with `emulator`, also the AWS emulator a `dev` left running. True when
    nothing it meant to stop is left."""
    record = pipeline_record(settings)
    if record is None or not (record.dev.running() or _left_running(record)):
        say(f"no `analytics-pipeline dev` runs on {settings.state_dir}")
    elif record.dev.running():
        say(f"stopping `analytics-pipeline dev` (pid {record.dev.pid})...")
        started = time.monotonic()
        os.kill(record.dev.pid, signal.SIGTERM)
        if not _wait_gone(record, DEV_STOP_TIMEOUT_SECONDS):
            say(f"dev {record.dev.pid} still runs after {DEV_STOP_TIMEOUT_SECONDS:.0f} s; SIGKILL")
            os.kill(record.dev.pid, signal.SIGKILL)  # its lifeline stops the rest
            _wait_gone(record, 30.0)
        say(f"stopped dev {record.dev.pid} in {time.monotonic() - started:.1f} s")
    else:
        names = ", ".join(f"{p.name} {p.pid}" for p in _left_running(record))
        say(f"dev {record.dev.pid} is gone; stopping what it left running: {names}")
        for process in _left_running(record):
            process.stop_group(_LEFTOVER_GRACE_SECONDS)
    left = _left_running(record) if record is not None else []
    for process in left:
        say(f"still running: {process.name} pid {process.pid}")
    if emulator:
        stopped = stop_recorded_emulator(settings)
        if stopped is None:
            say(
                f"no AWS emulator started by `dev` is recorded in {settings.state_dir}; one "
                f"answering at {settings.aws_endpoint_url} was started by someone else"
            )
        else:
            say(f"stopped the AWS emulator (pid {stopped.process.pid}, {stopped.endpoint_url})")
    return not left


def _left_running(record: PipelineRecord) -> list[ProcessRecord]:
    return [p for p in record.processes if p.name != _OUTLIVES_DEV and p.running()]


def _wait_gone(record: PipelineRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while record.dev.running() or _left_running(record):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
