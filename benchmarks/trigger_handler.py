"""How fast the local ingest path drains a stream: our Kinesis trigger driving the real Lambda.

The local pipeline has no AWS Lambda; `KinesisTrigger` polls the stream and calls the real
handler in process, which parses blobs, drops duplicates and sends pre-aggregated batches to SQS
(large ones via S3). This measures that whole path against the patched emulator, so a developer
knows how long a backlog takes to clear locally and whether the handler or the emulator is the
bottleneck. Traffic is the e2e tests' mix (plain and gzip blobs, one invalid event in every third
blob, one garbage blob), put first, then drained by `run_until_idle`; the queue is read back so
the count of events that arrived is checked, not assumed.

Run: .venv/bin/python -m benchmarks.trigger_handler [--blobs 20000] [--events-per-blob 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.emulator import start_emulator
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import free_port
from analytics_pipeline_testkit.traffic import drain_queue, put_mixed_traffic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=20_000, help="client blobs put on the stream")
    parser.add_argument("--events-per-blob", type=int, default=20)
    parser.add_argument("--shards", type=int, default=2, help="stream shards (tests use 2)")
    parser.add_argument("--timeout", type=float, default=1_800.0, help="seconds to drain")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="trigger-bench-") as name:
        folder = Path(name)
        emulator = start_emulator(free_port(), folder / "emulator.log")
        try:
            env = unique_settings_env(
                emulator.endpoint_url, folder, ANALYTICS_STREAM_SHARDS=str(arguments.shards)
            )
            os.environ.update(env)  # anything calling Settings.from_env() sees the same pipeline
            settings = Settings.from_env(env)
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            ensure_resources(settings)

            started = time.perf_counter()
            traffic = put_mixed_traffic(
                settings, blobs=arguments.blobs, events_per_blob=arguments.events_per_blob
            )
            put_seconds = time.perf_counter() - started
            print(
                f"put {traffic.records:,} blobs ({len(traffic.valid):,} valid events) on "
                f"{arguments.shards} shards in {put_seconds:.1f} s",
                flush=True,
            )

            trigger = KinesisTrigger(settings)
            started = time.perf_counter()
            trigger.run_until_idle(timeout=arguments.timeout)
            seconds = time.perf_counter() - started
            received = drain_queue(settings)
        finally:
            emulator.stop()

    print(
        f"trigger + handler: {seconds:.1f} s = {traffic.records / seconds:,.0f} blobs/s, "
        f"{len(traffic.valid) / seconds:,.0f} events/s"
    )
    print(
        f"SQS: {len(received.headers):,} batch messages, {len(received.events):,} events, "
        f"{len(received.quarantine):,} quarantine rows"
    )
    expected_quarantine = len(traffic.invalid) + traffic.garbage_blobs
    if len(received.events) != len(traffic.valid):
        raise SystemExit(f"expected {len(traffic.valid):,} events on the queue")
    if len(received.quarantine) != expected_quarantine:
        raise SystemExit(f"expected {expected_quarantine:,} quarantine rows on the queue")


if __name__ == "__main__":
    main()
