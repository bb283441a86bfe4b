"""RESULTS.md and the end-to-end plots from one benchmark run's figures."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from analytics_pipeline.cost.report import markdown_volumes
from benchmarks.cost import CostFigures
from benchmarks.e2e_bench import E2EResult
from benchmarks.handler_bench import HandlerFigures
from benchmarks.loader_bench import LoaderFigures

TARGETS = {
    "handler": 0.4,
    "loader_ceiling": 0.5,
    "loader_dlt": 5.0,
    "p50": 6.0,
    "p95": 10.0,
    "sustained": 5_000.0,
    "bill_at_1m": 15.0,
    "per_million_at_1b": 0.05,
}
PACKAGES = ("msgspec", "duckdb", "dlt", "dagster", "moto", "boto3", "matplotlib", "pyarrow")
SPEED_WORK = Path(__file__).with_name("speed_work.md")


@dataclass
class BenchRun:
    command: str
    workload: str
    handler: HandlerFigures | None = None
    loader: LoaderFigures | None = None
    cost: CostFigures | None = None
    e2e: list[E2EResult] = field(default_factory=list)  # the default rate first
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        memory_kb = 0
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory_kb / 1024**2:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {sys.version.split()[0]}"
    )


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def met(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "yes" if ok else "**no**"


def plot_e2e(result: E2EResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    sent_times = [sent for sent, _ in result.latencies]
    latencies = [latency for _, latency in result.latencies]
    step = max(1, len(latencies) // 5_000)
    top.scatter(
        sent_times[::step], latencies[::step], s=2, alpha=0.3, label="row: queryable - sentAt"
    )
    ages = [(s.seconds, s.iterator_age_seconds) for s in result.samples if s.iterator_age_seconds]
    if ages:
        top.plot(*zip(*ages, strict=True), color="tab:red", lw=1, label="Kinesis iterator age")
    top.axhline(TARGETS["p95"], color="grey", ls="--", lw=0.8, label="p95 target")
    top.set_ylabel("seconds")
    top.set_title(
        f"{result.rate:,.0f} events/s for {result.seconds:.0f} s: latency p50 "
        f"{result.latency(0.5):.1f} s, p95 {result.latency(0.95):.1f} s"
    )
    top.legend(loc="upper left", markerscale=4)
    times = [s.seconds for s in result.samples]
    bottom.plot(times, [s.backlog for s in result.samples], label="events sent, not yet queryable")
    bottom.set_ylabel("events")
    bottom.set_xlabel("seconds since the clients started")
    twin = bottom.twinx()
    twin.plot(
        times,
        [s.sqs_visible + s.sqs_in_flight for s in result.samples],
        color="tab:green",
        label="SQS messages (visible + in flight)",
    )
    twin.set_ylabel("SQS messages")
    lines = bottom.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    labels = bottom.get_legend_handles_labels()[1] + twin.get_legend_handles_labels()[1]
    bottom.legend(lines, labels, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_name(result: E2EResult) -> str:
    return f"e2e_{int(result.rate)}.png"


def render(run: BenchRun, out_dir: Path) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{run.command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Do not edit: "
        "`make bench` rewrites it (the speed-work notes at the end come from "
        "`benchmarks/speed_work.md`).",
        "",
        f"- Machine: {machine()}; load average before the run "
        f"{' / '.join(f'{x:.2f}' for x in run.load_before)} (a shared box: compare rows of one "
        "run, not runs with each other).",
        f"- Versions: {versions()}.",
        f"- Workload: {run.workload}.",
        "",
    ]
    lines += summary(run)
    if run.handler:
        h = run.handler
        lines += [
            "## 1. Handler throughput, one core",
            "",
            f"{h.events:,} events in {h.blobs:,} gzip blobs, {h.invocations} invocations of up to "
            "1,000 records (the trigger's batch size). Best of interleaved rounds.",
            "",
            "| path | events/s |",
            "|---|---:|",
            f"| decode-only ceiling: gunzip + `msgspec.json.decode` | "
            f"{h.decode_events_per_second:,.0f} |",
            f"| Lambda handler (`process_event`, in-process SQS/S3) | "
            f"{h.handler_events_per_second:,.0f} |",
            f"| ratio | {h.ratio:.2f} |",
            "",
        ]
    if run.loader:
        lines += loader_section(run.loader)
    if run.e2e:
        lines += e2e_section(run.e2e)
    if run.cost:
        lines += cost_section(run.cost)
    if SPEED_WORK.exists():
        lines += ["", SPEED_WORK.read_text().strip(), ""]
    return "\n".join(lines) + "\n"


def summary(run: BenchRun) -> list[str]:
    rows = ["## Summary", "", "| figure | measured | target | met |", "|---|---:|---:|---|"]
    if run.handler:
        rows.append(
            f"| handler / decode-only ceiling | {run.handler.ratio:.2f} | >= 0.4 | "
            f"{met(run.handler.ratio, TARGETS['handler'])} |"
        )
    if run.loader:
        table = run.loader.per_run
        fastest = run.loader.dlt_fastest(table)
        ceiling = run.loader.ratio(table, "read_json")
        peer = run.loader.ratio(table, fastest)
        rows.append(
            f"| loader / DuckDB `read_json`, {run.loader.events_per_run:,}-event runs | "
            f"{ceiling:.2f} | >= 0.5 | {met(ceiling, TARGETS['loader_ceiling'])} |"
        )
        rows.append(
            f"| loader / dlt fastest (`{fastest}`), same runs | {peer:.1f} | >= 5 | "
            f"{met(peer, TARGETS['loader_dlt'])} |"
        )
    if run.e2e:
        first = run.e2e[0]
        rows.append(
            f"| end-to-end latency at {first.rate:,.0f} events/s, p50 / p95 | "
            f"{first.latency(0.5):.1f} s / {first.latency(0.95):.1f} s | <= 6 s / <= 10 s | "
            f"{met(first.latency(0.5), TARGETS['p50'], False)} / "
            f"{met(first.latency(0.95), TARGETS['p95'], False)} |"
        )
        bounded = [r for r in run.e2e if r.bounded]
        best = max((r.rate for r in bounded), default=0.0)
        rows.append(
            f"| highest rate sustained with bounded queue depth (of those tried) | "
            f"{best:,.0f} events/s | >= 5,000 | {met(best, TARGETS['sustained'])} |"
        )
    if run.cost:
        by_volume = {e.events_per_month: e for e in run.cost.estimates}
        small, billion = by_volume.get(1_000_000), by_volume.get(1_000_000_000)
        if small:
            rows.append(
                f"| AWS + BigQuery bill at 1 M events/month | ${small.monthly_usd:.2f} | <= $15 | "
                f"{met(small.monthly_usd, TARGETS['bill_at_1m'], False)} |"
            )
        if billion:
            rows.append(
                f"| all-in $ per million events at 1 B events/month on BigQuery (first month's "
                f"storage included) | ${billion.per_million_usd:.4f} | <= $0.05 | "
                f"{met(billion.per_million_usd, TARGETS['per_million_at_1b'], False)} |"
            )
    return [*rows, ""]


def loader_section(f: LoaderFigures) -> list[str]:
    lines = [
        "## 2. Loader throughput",
        "",
        f"SQS batch bodies from the handler (about {f.events:,} events; dlt loads the first "
        f"{f.dlt_events:,}) in runs of up to {f.events_per_run:,} events: what one Dagster run "
        f"carries at {f.events_per_run / 5:,.0f} events/s with a sensor tick every 5 s. Each "
        "loader writes a fresh DuckDB file; events/s, best of the rounds.",
        "",
        "| loader | per run | ours / it | one call, all events | ours / it |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "ours": "ours: `load_refs` (ledger + messageId dedupe, one transaction)",
        "read_json": "ceiling: DuckDB `read_json` of the same NDJSON, no dedupe",
        "dlt_default": "dlt `pipeline.run`, default (insert_values)",
        "dlt_parquet": 'dlt `pipeline.run`, `loader_file_format="parquet"`',
    }
    for name, label in labels.items():
        per_run, single = f.per_run.get(name), f.single_call.get(name)
        if per_run is None or single is None:
            continue
        lines.append(
            f"| {label} | {per_run:,.0f} | {f.ratio(f.per_run, name):.2f} | {single:,.0f} | "
            f"{f.ratio(f.single_call, name):.2f} |"
        )
    lines += [
        "",
        "dlt receives the events as dicts (nested properties and context, as a user's JSON "
        "would arrive) and normalises them into columns and child tables, which is its job; "
        "ours additionally gunzips, checks the batch ledger and dedupes every messageId.",
        "",
    ]
    return lines


def e2e_section(results: list[E2EResult]) -> list[str]:
    lines = [
        "## 3. End to end on the local stack",
        "",
        "Patched moto emulator, trigger process (the real handler), `dagster dev` with the "
        "repository's dagster.yaml, simulated clients (100 devices, exact clocks); free ports, "
        "own state in a temporary folder. Latency is `first warehouse poll that returns the "
        "row - sentAt` (polled every second, so up to a second pessimistic); `loaded_at - sentAt` "
        "is the lower bound. Bounded: clients kept >= 95 % of the rate, the backlog (sent, not "
        "yet queryable) stayed under 20 s of traffic in the second half and did not keep "
        "growing, and everything was loaded after the clients stopped.",
        "",
        "| rate (events/s) | sent | p50 | p95 | max | `loaded_at`-sentAt p50 | sustained "
        "(events/s) | bounded | drain | Dagster runs (median launch / execute s) | sensor tick "
        "every / takes | plot |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|---|",
    ]
    for r in results:
        phases = r.run_phase_seconds()
        phase_text = (
            f"{len(r.runs)} ({phases['launch']:.1f} / {phases['execute']:.1f})"
            if phases
            else str(len(r.runs))
        )
        lower = statistics.median(r.loaded_minus_sent) if r.loaded_minus_sent else float("nan")
        drain = f"{r.drain_seconds:.0f} s" if r.drain_seconds is not None else "not drained"
        lines.append(
            f"| {r.rate:,.0f} | {r.sent:,} | {r.latency(0.5):.1f} s | {r.latency(0.95):.1f} s | "
            f"{r.max_latency:.1f} s | {lower:.1f} s | {r.sustained_rate:,.0f} | "
            f"{'yes' if r.bounded else '**no**'} | {drain} | {phase_text} | "
            f"{_seconds(r.tick_spacing_seconds())} / {_seconds(r.tick_duration_seconds())} | "
            f"[{plot_name(r)}]({plot_name(r)}) |"
        )
    lines += [
        "",
        "Peak RSS (all processes of the component at once / its largest process) and CPU "
        "(cores busy on average over the run and drain; 2 cores in all):",
        "",
        "| rate | " + " | ".join(results[0].peak_rss_mb) + " |",
        "|---:|" + "---|" * len(results[0].peak_rss_mb),
    ]
    for r in results:
        cells = [
            f"{r.peak_rss_mb[name]:,.0f} / {r.peak_process_rss_mb.get(name, 0):,.0f} MB, "
            f"{r.cpu_share().get(name, 0):.2f} cores"
            for name in r.peak_rss_mb
        ]
        lines.append(f"| {r.rate:,.0f} | " + " | ".join(cells) + " |")
    failures = [r for r in results if r.failure]
    for r in failures:
        lines += ["", f"Run at {r.rate:,.0f} events/s: {r.failure.splitlines()[0]}"]
    lines += ["", f"![end to end at {results[0].rate:,.0f} events/s]({plot_name(results[0])})", ""]
    return lines


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def cost_section(c: CostFigures) -> list[str]:
    lines = ["## 4. Bytes per event and cost", "", "| hop | bytes per event |", "|---|---:|"]
    lines += [f"| {name} | {value:,.0f} |" for name, value in c.bytes_per_event.items()]
    lines += [
        "",
        "The monthly bill on BigQuery, from the cost model with this run's handler speed (list "
        "prices, free tiers as items of their own, hosts not included; the model measures its "
        "own sample's bytes). Each row is `" + c.command("N") + "`:",
        "",
        *markdown_volumes(c.estimates),
    ]
    billion = next((e for e in c.estimates if e.events_per_month == 1_000_000_000), None)
    if billion:
        assumed = billion.assumptions
        lines += [
            "",
            f"Every item at 1 B events a month (`{c.command(billion.events_per_month)}`; "
            "`--format json` has the assumptions and the price sources):",
            "",
            "| item | $ / month | arithmetic |",
            "|---|---:|---|",
            *(
                f"| {item.item} | {item.monthly_usd:,.4f} | {item.arithmetic} |"
                for item in billion.items
            ),
            f"| **AWS + BigQuery** | **{billion.monthly_usd:,.2f}** | "
            f"${billion.per_million_usd:.4f} per million events |",
            f"| hosts (not in the bill) | {billion.hosts_monthly_usd:,.2f} | "
            f"{assumed['hosts']} x ${assumed['host_hourly_usd']}/h x 730 h |",
        ]
    return [*lines, ""]


def write(run: BenchRun, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for result in run.e2e:
        if result.latencies:
            plot_e2e(result, out_dir / plot_name(result))
    path = out_dir / "RESULTS.md"
    path.write_text(render(run, out_dir))
    return path
