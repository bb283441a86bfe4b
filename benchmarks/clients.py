"""Simulated clients for the end-to-end benchmark: `simulator.run_forever` for a fixed time.

Run as its own process (`python -m benchmarks.clients`), like `make dev` runs the simulator.
Device clocks are exact (no skew), so the `sent_at` stored with each row is the moment the
client really sent it, and latency can be read from the warehouse. Every `--status-every`
seconds one JSON line with the client's counters is appended to `--status-file`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from analytics_pipeline.client import ClientStats
from analytics_pipeline.local.simulator import SimulationReport, run_forever
from analytics_pipeline.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--clients", type=int, default=100, help="simulated devices")
    parser.add_argument("--status-file", type=Path, required=True)
    parser.add_argument("--status-every", type=float, default=0.5)
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=1.0,
        help="SDK flush timer: sends are spread over time (latency counts from sentAt anyway)",
    )
    arguments = parser.parse_args()

    stop = threading.Event()
    threading.Timer(arguments.seconds, stop.set).start()
    with open(arguments.status_file, "a") as status:

        def write(report: SimulationReport, stats: ClientStats) -> None:
            line = {"time": time.time(), "generated": report.generated, "sent": stats.sent}
            line |= {"failed": stats.failed, "dropped": stats.dropped, "done": False}
            status.write(json.dumps(line) + "\n")
            status.flush()

        report = run_forever(
            Settings.from_env(),
            arguments.rate,
            clients=arguments.clients,
            stop=stop,
            max_clock_skew=0.0,
            status_every_seconds=arguments.status_every,
            on_status=write,
            flush_interval=arguments.flush_interval,
            say=lambda _line: None,
        )
        assert report.stats is not None
        write(report, report.stats)
        final = {"time": time.time(), "generated": report.generated, "sent": report.stats.sent}
        final |= {"failed": report.stats.failed, "dropped": report.stats.dropped, "done": True}
        status.write(json.dumps(final) + "\n")


if __name__ == "__main__":
    main()
