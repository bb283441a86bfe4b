"""`make bench`: every benchmark side by side with its ceiling and peer; writes RESULTS.md + plots.

Run: .venv/bin/python -m benchmarks.run [--events 200000] [--rates 1000,5000,10000]
     [--repeats 3] [--warehouses duckdb,bigquery] [--higher-rates 15000,20000] [--seconds 120]
     [--before-root ../bench-before] [--skip-e2e] ...   (make bench BENCH_ARGS="...")
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from benchmarks.cost import measure_cost
from benchmarks.e2e_bench import E2EResult, describe, run_e2e
from benchmarks.handler_bench import measure_handler
from benchmarks.loader_bench import load_input, measure_loaders
from benchmarks.report import BenchRun, write
from benchmarks.workload import realistic_workload


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="workload events")
    parser.add_argument("--rounds", type=int, default=3, help="best of N (interleaved)")
    parser.add_argument("--batch-events", type=int, default=1_250, help="events per SQS batch")
    parser.add_argument("--load-events", type=int, default=10_000, help="events per load")
    parser.add_argument("--dlt-events", type=int, default=25_000, help="events dlt loads")
    parser.add_argument("--loader-rounds", type=int, default=2)
    parser.add_argument(
        "--rates", default="1000,5000,10000", help="e2e events/s, each run --repeats times"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per rate and warehouse")
    parser.add_argument("--warehouses", default="duckdb,bigquery", help="e2e warehouses")
    parser.add_argument(
        "--higher-rates",
        default="15000,20000",
        help="tried once each after --rates, in order, until one is not sustained",
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="e2e duration per run")
    parser.add_argument("--poll-seconds", type=float, default=0.5, help="warehouse poll interval")
    parser.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="before each e2e run wait (up to --calm-wait s) for a lower 1-minute load average",
    )
    parser.add_argument("--calm-wait", type=float, default=300.0)
    parser.add_argument(
        "--before-root",
        type=Path,
        default=None,
        help="a checkout of the older design (its own .venv): measured beside each repeat",
    )
    parser.add_argument("--before-rates", default="1000", help="rates the older design runs at")
    parser.add_argument("--before-warehouses", default="duckdb", help="its warehouses")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the e2e stack, e.g. ANALYTICS_TRIGGER_POLL_SECONDS=0.1",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    return parser.parse_args(argv)


def _rates(text: str) -> list[float]:
    return [float(rate) for rate in text.split(",") if rate]


def _names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def wait_for_calm(max_load: float | None, timeout: float) -> None:
    """Let the box settle (the other developers' tests come and go) before a latency run."""
    if max_load is None:
        return
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(10)


def run_e2e_plan(arguments: argparse.Namespace) -> list[E2EResult]:
    """Each repeat runs every rate on every warehouse (and the older design where asked)
    back to back, so slow periods of the box spread over all of them; then the higher rates,
    per warehouse, until one is not sustained."""
    overrides = dict(item.split("=", 1) for item in arguments.set)
    warehouses = _names(arguments.warehouses)
    results: list[E2EResult] = []

    def one(rate: float, warehouse: str, before: bool = False) -> E2EResult:
        wait_for_calm(arguments.max_load, arguments.calm_wait)
        result = run_e2e(
            rate,
            arguments.seconds,
            warehouse=warehouse,
            overrides=overrides,
            stack_root=arguments.before_root if before else None,
            design="before" if before else "loop",
            poll_seconds=arguments.poll_seconds,
        )
        print(describe(result), flush=True)
        results.append(result)
        return result

    for _ in range(arguments.repeats):
        for rate in _rates(arguments.rates):
            for warehouse in warehouses:
                one(rate, warehouse)
                if (
                    arguments.before_root
                    and rate in _rates(arguments.before_rates)
                    and warehouse in _names(arguments.before_warehouses)
                ):
                    one(rate, warehouse, before=True)
    for warehouse in warehouses:
        if not all(r.bounded for r in results if r.warehouse == warehouse and r.design == "loop"):
            continue  # a lower rate was not sustained already
        for rate in _rates(arguments.higher_rates):
            if not one(rate, warehouse).bounded:
                break
    return results


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
    data = load_input(workload, arguments.batch_events, arguments.load_events)
    run.loader = measure_loaders(data, arguments.dlt_events, arguments.loader_rounds)
    print(f"loader {run.loader}", flush=True)
    run.cost = measure_cost(workload, run.handler.handler_events_per_second, arguments.batch_events)
    if not arguments.skip_e2e:
        if arguments.before_root:
            run.before_command = before_note(arguments.before_root)
        run.e2e = run_e2e_plan(arguments)
    path = write(run, arguments.out)
    print(f"wrote {path}")
    return path


def before_note(root: Path) -> str:
    """Which checkout the `before` rows ran, and how it was set up."""
    import subprocess

    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"`before` rows: the same driver (`benchmarks.e2e_bench.run_e2e(stack_root=...)`) "
        f"running `analytics-pipeline dev` of the checkout at {root} (commit {commit or '?'}: "
        "a sensor tick stages SQS bodies in S3 and starts one Dagster run per micro-batch), "
        "with that checkout's own `.venv` (`make .venv/.installed .venv-bqemulator/.installed` "
        "there) and its own defaults; the clients start after its sensor's first tick."
    )


if __name__ == "__main__":
    main()
