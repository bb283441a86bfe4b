"""One pipeline per state folder and per queue: the lock files `dev` holds while it runs.

`dev` takes an exclusive `flock` on `<ANALYTICS_STATE_DIR>/dev.lock` (one trigger per checkpoint
file, one Dagster per instance folder) and on a file named after its AWS endpoint, region and
queue in the system temp folder (a `dev` from another state folder on the same queue would be a
second consumer just the same, loading into whatever warehouse it points at). An flock belongs
to the open file, so the kernel drops it when the last process holding that file exits, however
it dies: a stale lock needs no clean-up. The lifeline inherits both files, so the locks go only
once the old pipeline's last process is gone. The files are never deleted (a re-created file
would be a second, independent lock).

While it runs, `dev` keeps its record in both files: its pid, the pids of its processes, the
queue, the warehouse and the UI port. A refused `dev`, `status` and `stop` read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import psutil

from analytics_pipeline.local.processes import stop_groups
from analytics_pipeline.settings import Settings

STATE_LOCK_NAME = "dev.lock"
# A lock whose dev is gone is still held while its lifeline stops the old processes (a few
# seconds); a new dev waits that long for it rather than refusing.
STALE_LOCK_WAIT_SECONDS = 30.0


class ProcessRecord(msgspec.Struct, frozen=True):
    """A process by pid and start time: a later process that reuses the pid is not it."""

    name: str
    pid: int
    started: float  # psutil's create_time, seconds since the epoch

    @classmethod
    def of(cls, name: str, pid: int) -> ProcessRecord:
        try:
            started = psutil.Process(pid).create_time()
        except psutil.Error:
            started = 0.0
        return cls(name, pid, started)

    def running(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return (
                process.status() != psutil.STATUS_ZOMBIE
                and abs(process.create_time() - self.started) < 0.05
            )
        except psutil.Error:
            return False

    def stop_group(self, grace: float) -> bool:
        """Stop its process group (it leads one: see `ChildProcess`) if it is still this process;
        False when it was not running."""
        if not self.running():
            return False
        stop_groups([self.pid], grace)
        return True


class PipelineRecord(msgspec.Struct, frozen=True):
    """What a running `dev` writes into its lock files."""

    dev: ProcessRecord
    started_at: str
    state_dir: str
    queue: str
    aws_endpoint: str
    warehouse: str
    ui_port: int
    processes: tuple[ProcessRecord, ...] = ()
    stopped_at: str | None = None  # set by an orderly stop; a record without it was cut short

    def process(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)


class PipelineRunning(RuntimeError):
    """Another `dev` holds a lock this one needs; the message says which and how to stop it."""


def describe_warehouse(settings: Settings) -> str:
    if settings.warehouse == "bigquery":
        project = settings.bigquery_project or "(the credentials' project)"
        return f"bigquery {project}.{settings.bigquery_dataset}"
    return f"duckdb {settings.duckdb_path}"


def describe_endpoint(settings: Settings) -> str:
    return settings.aws_endpoint_url or f"AWS {settings.aws_region}"


def state_lock_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_LOCK_NAME


def queue_lock_path(settings: Settings) -> Path:
    """The lock of the queue, wherever `dev` runs from: named after endpoint, region and queue
    (`localhost` and `127.0.0.1` are one endpoint)."""
    endpoint = "aws"
    if settings.aws_endpoint_url:
        parts = urlsplit(settings.aws_endpoint_url.lower())
        host = "127.0.0.1" if parts.hostname in ("localhost", "::1") else parts.hostname
        endpoint = f"{parts.scheme}://{host}:{parts.port}"
    key = f"{endpoint}|{settings.aws_region}|{settings.queue_name}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"analytics-pipeline-queue-{digest}.lock"


def read_record(path: Path) -> PipelineRecord | None:
    """The record in a lock file; None when there is none (or it is being rewritten)."""
    for _ in range(5):
        try:
            return msgspec.json.decode(path.read_bytes(), type=PipelineRecord)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError):
            time.sleep(0.02)
    return None


def _refusal(record: PipelineRecord | None, path: Path, same_folder: bool) -> str:
    if record is None:
        return (
            f"another `analytics-pipeline dev` is starting (it holds {path}); try again in a "
            "few seconds, or see `analytics-pipeline status`"
        )
    pid = record.dev.pid
    what = (
        f"started {record.started_at}, queue {record.queue} at {record.aws_endpoint}, "
        f"warehouse {record.warehouse}, UI port {record.ui_port}"
    )
    if not record.dev.running():
        lifeline = record.process("lifeline")
        holder = f"`kill {lifeline.pid}` (its lifeline)" if lifeline else "ending its processes"
        return (
            f"the previous `analytics-pipeline dev` (pid {pid}, {what}) is gone, but its "
            f"processes still hold the lock after {STALE_LOCK_WAIT_SECONDS:.0f} s; "
            f"see `analytics-pipeline status`, then try {holder}"
        )
    if same_folder:
        return (
            f"`analytics-pipeline dev` already runs on this state folder ({record.state_dir}): "
            f"pid {pid}, {what}. A second one would consume the same queue. Stop it with "
            f"`analytics-pipeline stop` or `kill {pid}`."
        )
    return (
        f"queue {record.queue} at {record.aws_endpoint} already has a pipeline: "
        f"`analytics-pipeline dev` pid {pid} from state folder {record.state_dir} ({what}). "
        f"Stop it with `ANALYTICS_STATE_DIR={record.state_dir} analytics-pipeline stop` or "
        f"`kill {pid}`, or give this pipeline a queue of its own (ANALYTICS_QUEUE_NAME)."
    )


class PipelineLock:
    """Both locks of one running `dev`; `fds` go to the lifeline so that it holds them too."""

    def __init__(self, paths: tuple[Path, ...], fds: tuple[int, ...]) -> None:
        self.paths = paths
        self.fds = fds
        self.record: PipelineRecord | None = None  # the last one written

    @classmethod
    def acquire(
        cls,
        settings: Settings,
        say: Callable[[str], object] = print,
        stale_wait_seconds: float = STALE_LOCK_WAIT_SECONDS,
    ) -> PipelineLock:
        """Both locks, or PipelineRunning (nothing changed: the queue lock is tried first, so a
        refusal from another folder does not even create this state folder)."""
        fds: list[int] = []
        paths = (queue_lock_path(settings), state_lock_path(settings))
        try:
            for path in paths:
                if path.name == STATE_LOCK_NAME:
                    settings.state_dir.mkdir(parents=True, exist_ok=True)
                fds.append(_take(path, settings, say, stale_wait_seconds))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(paths, tuple(fds))

    def write(self, record: PipelineRecord) -> None:
        """Rewrite the record in place (the locked file must stay the same file)."""
        self.record = record
        data = msgspec.json.encode(record)
        for fd in self.fds:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))

    def close(self) -> None:
        """Release both locks (the record stays: `status` shows what ran last)."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = ()


def _take(path: Path, settings: Settings, say: Callable[[str], object], wait: float) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    waiting_said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = read_record(path)
            if record is None or record.dev.running() or time.monotonic() > deadline:
                os.close(fd)
                same_folder = record is None or record.state_dir == str(settings.state_dir)
                raise PipelineRunning(_refusal(record, path, same_folder)) from None
            if not waiting_said:
                say(
                    f"the previous dev (pid {record.dev.pid}) is gone; waiting for its "
                    f"processes to stop (lock {path})"
                )
                waiting_said = True
            time.sleep(0.2)
            continue
        previous = read_record(path)
        # Said once: for the state folder's lock, or for the queue's when it came from elsewhere.
        mine = path.name == STATE_LOCK_NAME
        if (
            previous is not None
            and previous.stopped_at is None
            and (mine or previous.state_dir != str(settings.state_dir))
        ):
            say(
                f"taking over the lock {path} of dev pid {previous.dev.pid}, which ended without "
                "stopping"
            )
        return fd


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_record(settings: Settings, ui_port: int) -> PipelineRecord:
    return PipelineRecord(
        dev=ProcessRecord.of("dev", os.getpid()),
        started_at=now_text(),
        state_dir=str(settings.state_dir),
        queue=settings.queue_name,
        aws_endpoint=describe_endpoint(settings),
        warehouse=describe_warehouse(settings),
        ui_port=ui_port,
    )
