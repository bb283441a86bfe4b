"""The local AWS emulator: moto's server, run as our own module to fix its Kinesis slow paths.

moto 5.2.5 finds a shard's newest sequence number by building a list of every key, once per put
record, and GetRecords walks the shard from its first record on every call: a long-running local
stream slows down with its length (puts fall from ~5.8k/s to ~500/s within 100k records). The
patches below replace those walks with O(1) dictionary lookups and serialise sequence-number
assignment, which moto leaves unsafe under its threaded server (two concurrent puts to one shard
could draw the same number and overwrite each other). Behaviour is otherwise unchanged.

moto also runs a Kinesis event source mapping by invoking its Lambda in Docker on every put
record (there is no Docker here: each put logs "error running docker" and pays for the attempt).
The mapping is kept, so `ListEventSourceMappings` answers with its settings, but it never
invokes: the local trigger (`local/trigger.py`) plays it, with those settings.

Run it with `python -m analytics_pipeline.local.emulator --port 4566`; `ensure_emulator` starts it
in the background (or reuses one that already answers, so its state survives a pipeline restart).
The one `dev` starts outlives `dev` on purpose, however `dev` ends: the stream and the queues
hold events not yet loaded, and the next `dev` picks them up. `dev` records it in the state
folder (`emulator.json`) so that `analytics-pipeline stop --emulator` can stop it.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from botocore.config import Config

from analytics_pipeline import aws
from analytics_pipeline.aws import is_local_endpoint
from analytics_pipeline.local.pipeline_lock import ProcessRecord
from analytics_pipeline.local.ports import PortTaken, listener_of, port_in_use
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.settings import Settings

_STARTUP_TIMEOUT_SECONDS = 20.0
_STOP_GRACE_SECONDS = 5.0
RECORD_NAME = "emulator.json"


def patch_moto_kinesis() -> None:
    """Make Kinesis puts and reads O(1) per record in moto's in-memory shards (idempotent)."""
    from moto.kinesis import models

    shard_class: Any = models.Shard
    if getattr(shard_class, "_analytics_pipeline_patched", False):
        return
    sequence_lock = threading.Lock()

    def get_max_sequence_number(self: Any) -> int:
        return next(reversed(self.records)) if self.records else 0

    def get_min_sequence_number(self: Any) -> int:
        return next(iter(self.records)) if self.records else 0

    def put_record(self: Any, partition_key: str, data: str, explicit_hash_key: str) -> str:
        with sequence_lock:
            sequence_number = get_max_sequence_number(self) + 1
            self.records[sequence_number] = models.Record(
                partition_key, data, sequence_number, explicit_hash_key
            )
        return str(sequence_number)

    def get_records(self: Any, last_sequence_id: str, limit: int | None) -> tuple[list, int, int]:
        # Sequence numbers are assigned max + 1 and never removed, so they can be addressed
        # directly instead of walking the shard from its first record.
        last_sequence = int(last_sequence_id)
        results: list[Any] = []
        if not self.records:
            return results, last_sequence, 0
        newest_sequence = next(reversed(self.records))
        sequence = max(last_sequence + 1, next(iter(self.records)))
        while sequence <= newest_sequence and (not limit or len(results) < limit):
            record = self.records.get(sequence)
            if record is not None:
                results.append(record)
                last_sequence = sequence
            sequence += 1
        behind_seconds = 0.0
        if results:
            behind_seconds = self.records[newest_sequence].created_at - results[-1].created_at
        return results, last_sequence, int(behind_seconds * 1000)

    shard_class.get_max_sequence_number = get_max_sequence_number
    shard_class.get_min_sequence_number = get_min_sequence_number
    shard_class.put_record = put_record
    shard_class.get_records = get_records
    shard_class._analytics_pipeline_patched = True


def patch_moto_event_source_mappings() -> None:
    """Keep Kinesis event source mappings as configuration only: never invoke (idempotent)."""
    from moto.awslambda.models import LambdaBackend

    backend_class: Any = LambdaBackend
    if getattr(backend_class, "_analytics_pipeline_patched", False):
        return

    def send_kinesis_message(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    backend_class.send_kinesis_message = send_kinesis_message
    backend_class._analytics_pipeline_patched = True


def endpoint_answers(endpoint_url: str, timeout: float = 0.5) -> bool:
    """True when an HTTP server answers at the endpoint (any status counts)."""
    parts = urlsplit(endpoint_url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        connection.close()


@dataclass
class EmulatorProcess(ChildProcess):
    """The AWS emulator as a child process, with the endpoint it serves."""

    endpoint_url: str = ""


def answers_as_aws(settings: Settings) -> bool:
    """True when the endpoint answers an SQS call (any emulator of ours or not, as long as it
    speaks AWS: botocore turns an HTML error page into a ClientError too, so only success
    counts)."""
    quick = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
    try:
        aws.client("sqs", settings, config=quick).list_queues(MaxResults=1)
    except Exception:  # whatever a non-AWS server makes botocore raise
        return False
    return True


def check_endpoint_port(settings: Settings) -> None:
    """PortTaken when the local endpoint's port is held by something that is not an AWS
    emulator (a free port is fine: `ensure_emulator` starts one there)."""
    endpoint_url = settings.aws_endpoint_url
    if not endpoint_url or not is_local_endpoint(endpoint_url):
        return
    parts = urlsplit(endpoint_url)
    if parts.port is None:
        raise ValueError(f"local AWS endpoint needs an explicit port: {endpoint_url}")
    host = parts.hostname or "127.0.0.1"
    if port_in_use(host, parts.port) and not answers_as_aws(settings):
        raise PortTaken(
            f"port {parts.port} on {host}, the AWS emulator's (AWS_ENDPOINT_URL={endpoint_url}), "
            f"is held by something that is not an AWS emulator{listener_of(parts.port)}; stop it "
            "or point AWS_ENDPOINT_URL at another port"
        )


def start_emulator(
    port: int, log_path: Path, host: str = "127.0.0.1", *, dies_with_parent: bool = True
) -> EmulatorProcess:
    """Start the emulator module in its own session and wait until it answers."""
    endpoint_url = f"http://{host}:{port}"
    emulator = EmulatorProcess(
        name="AWS emulator",
        command=[
            *(sys.executable, "-m", "analytics_pipeline.local.emulator"),
            *("--host", host, "--port", str(port)),
        ],
        log_path=log_path,
        grace_seconds=_STOP_GRACE_SECONDS,
        dies_with_parent=dies_with_parent,
        endpoint_url=endpoint_url,
    ).start()
    emulator.wait_until(
        lambda: endpoint_answers(endpoint_url, timeout=0.2),
        _STARTUP_TIMEOUT_SECONDS,
        f"answer at {endpoint_url}",
    )
    return emulator


def ensure_emulator(settings: Settings) -> EmulatorProcess | None:
    """Reuse an emulator already answering at the endpoint (None) or start one that outlives
    this process, recorded in the state folder (see the module docstring).

    Reusing keeps the stream and queue contents across a pipeline restart. Real AWS (no local
    endpoint) needs nothing and also gives None.
    """
    endpoint_url = settings.aws_endpoint_url
    if not endpoint_url or not is_local_endpoint(endpoint_url):
        return None
    if endpoint_answers(endpoint_url):
        return None
    parts = urlsplit(endpoint_url)
    if parts.port is None:
        raise ValueError(f"local AWS endpoint needs an explicit port: {endpoint_url}")
    emulator = start_emulator(
        parts.port,
        settings.state_dir / "emulator.log",
        host=parts.hostname or "127.0.0.1",
        dies_with_parent=False,
    )
    record = EmulatorRecord(ProcessRecord.of("AWS emulator", emulator.pid), endpoint_url)
    path = settings.state_dir / RECORD_NAME
    path.with_suffix(".tmp").write_bytes(msgspec.json.encode(record))
    os.replace(path.with_suffix(".tmp"), path)
    return emulator


class EmulatorRecord(msgspec.Struct, frozen=True):
    """The emulator a `dev` started and left running, kept in its state folder."""

    process: ProcessRecord
    endpoint_url: str


def recorded_emulator(settings: Settings) -> EmulatorRecord | None:
    try:
        return msgspec.json.decode(
            (settings.state_dir / RECORD_NAME).read_bytes(), type=EmulatorRecord
        )
    except (FileNotFoundError, msgspec.DecodeError):
        return None


def stop_recorded_emulator(settings: Settings) -> EmulatorRecord | None:
    """Stop the emulator a `dev` of this state folder started (if it still runs) and forget it;
    returns its record, None when there is none."""
    record = recorded_emulator(settings)
    if record is not None:
        record.process.stop_group(_STOP_GRACE_SECONDS)
        (settings.state_dir / RECORD_NAME).unlink(missing_ok=True)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto server with the pipeline's Kinesis fixes")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    args = parser.parse_args(argv)
    patch_moto_kinesis()
    patch_moto_event_source_mappings()
    from moto.server import main as moto_main

    moto_main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
