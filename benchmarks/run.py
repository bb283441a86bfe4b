"""`make bench`: every benchmark side by side with its ceiling and peer; writes RESULTS.md + plots.

Run: .venv/bin/python -m benchmarks.run [--events 200000] [--rate 1000] [--seconds 120]
     [--max-rates 2500,5000,7500] [--skip-e2e] ...   (make bench BENCH_ARGS="...")
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from benchmarks.cost import measure_cost
from benchmarks.e2e_bench import describe, run_e2e
from benchmarks.handler_bench import measure_handler
from benchmarks.loader_bench import load_input, measure_loaders
from benchmarks.report import BenchRun, write
from benchmarks.workload import realistic_workload


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="workload events")
    parser.add_argument("--rounds", type=int, default=3, help="best of N (interleaved)")
    parser.add_argument("--batch-events", type=int, default=1_250, help="events per SQS batch")
    parser.add_argument("--run-events", type=int, default=25_000, help="events per load run")
    parser.add_argument("--dlt-events", type=int, default=25_000, help="events dlt loads")
    parser.add_argument("--loader-rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1_000.0, help="e2e events/s")
    parser.add_argument("--seconds", type=float, default=120.0, help="e2e duration per rate")
    parser.add_argument(
        "--max-rates",
        default="2500,5000,7500,10000,15000,20000",
        help="higher rates tried after --rate, in order, until one is not sustained",
    )
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the e2e stack, e.g. ANALYTICS_SENSOR_INTERVAL_SECONDS=1",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    arguments = parse_arguments(argv)
    command = "make bench" + (f' BENCH_ARGS="{shlex.join(argv)}"' if argv else "")
    if argv is None and sys.argv[1:]:
        command = f'make bench BENCH_ARGS="{shlex.join(sys.argv[1:])}"'
    workload = realistic_workload(arguments.events)
    run = BenchRun(
        command=command,
        workload=f"{workload.events:,} events in {len(workload.blobs):,} gzip blobs of "
        f"{min(workload.event_counts)}-{max(workload.event_counts)} events (median "
        f"{sorted(workload.event_counts)[len(workload.event_counts) // 2]}), "
        f"{sum(map(len, workload.blobs)) / workload.events:.0f} bytes/event compressed",
        load_before=os.getloadavg(),
    )
    print(run.workload, flush=True)
    run.handler = measure_handler(workload, arguments.rounds)
    print(f"handler {run.handler}", flush=True)
    data = load_input(workload, arguments.batch_events, arguments.run_events)
    run.loader = measure_loaders(data, arguments.dlt_events, arguments.loader_rounds)
    print(f"loader {run.loader}", flush=True)
    run.cost = measure_cost(workload, run.handler.handler_events_per_second, arguments.batch_events)
    if not arguments.skip_e2e:
        overrides = dict(item.split("=", 1) for item in arguments.set)
        rates = [arguments.rate] + [float(r) for r in arguments.max_rates.split(",") if r]
        for rate in rates:
            result = run_e2e(rate, arguments.seconds, overrides=overrides)
            print(describe(result), flush=True)
            run.e2e.append(result)
            if rate != arguments.rate and not result.bounded:
                break
    path = write(run, arguments.out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
