"""RESULTS.md and the end-to-end plots from one benchmark run's figures."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from analytics_pipeline.cost.report import markdown_volumes
from benchmarks.cost import CostFigures
from benchmarks.e2e_bench import E2EResult, group_runs
from benchmarks.handler_bench import HandlerFigures
from benchmarks.loader_bench import LoaderFigures

TARGETS = {
    "handler": 0.4,
    "loader_ceiling": 0.5,
    "loader_dlt": 5.0,
    "sustained": 10_000.0,
    "bill_at_1m": 15.0,
    "per_million_at_1b": 0.05,
}
# send -> queryable at LATENCY_TARGET_RATE events/s (issue 13): warehouse -> (p50, p95) seconds.
LATENCY_TARGETS = {"duckdb": (2.5, 5.0), "bigquery": (4.0, 8.0)}
LATENCY_TARGET_RATE = 1_000.0
WAREHOUSE_NAMES = {"duckdb": "DuckDB", "bigquery": "BigQuery emulator"}
PACKAGES = ("msgspec", "duckdb", "dlt", "dagster", "moto", "boto3", "matplotlib", "pyarrow")
SPEED_WORK = Path(__file__).with_name("speed_work.md")


@dataclass
class BenchRun:
    command: str
    workload: str
    handler: HandlerFigures | None = None
    loader: LoaderFigures | None = None
    cost: CostFigures | None = None
    e2e: list[E2EResult] = field(default_factory=list)  # in the order they ran
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    before_command: str = ""  # how the older design's stack was set up, when it ran too


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
    if result.warehouse in LATENCY_TARGETS:
        top.axhline(
            LATENCY_TARGETS[result.warehouse][1], color="grey", ls="--", lw=0.8, label="p95 target"
        )
    top.set_ylabel("seconds")
    top.set_title(
        f"{WAREHOUSE_NAMES.get(result.warehouse, result.warehouse)}, {result.design}: "
        f"{result.rate:,.0f} events/s for {result.seconds:.0f} s: latency p50 "
        f"{result.latency(0.5):.2f} s, p95 {result.latency(0.95):.2f} s"
    )
    top.legend(loc="upper left", markerscale=4)
    times = [s.seconds for s in result.samples]
    bottom.plot(times, [s.backlog for s in result.samples], label="events sent, not yet queryable")
    bottom.set_ylabel("events")
    bottom.set_xlabel("seconds since the clients started")
    twin = bottom.twinx()
    twin.plot(
        times,
        [s.sqs_depth for s in result.samples],
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
    return f"e2e_{result.design}_{result.warehouse}_{int(result.rate)}.png"


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
        lines += e2e_section(run)
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
        table = run.loader.per_load
        fastest = run.loader.dlt_fastest(table)
        ceiling = run.loader.ratio(table, "read_json")
        peer = run.loader.ratio(table, fastest)
        rows.append(
            f"| loader / DuckDB `read_json`, loads of up to {run.loader.events_per_load:,} "
            f"events | {ceiling:.2f} | >= 0.5 | {met(ceiling, TARGETS['loader_ceiling'])} |"
        )
        rows.append(
            f"| loader / dlt fastest (`{fastest}`), same loads | {peer:.1f} | >= 5 | "
            f"{met(peer, TARGETS['loader_dlt'])} |"
        )
    groups = group_runs(run.e2e)
    for group in groups:
        if group.design != "loop" or group.rate != LATENCY_TARGET_RATE:
            continue
        p50_target, p95_target = LATENCY_TARGETS[group.warehouse]
        rows.append(
            f"| send -> queryable at {group.rate:,.0f} events/s, "
            f"{WAREHOUSE_NAMES[group.warehouse]}, p50 / p95 (median of {len(group.runs)}) | "
            f"{group.p50:.2f} s / {group.p95:.2f} s | <= {p50_target:g} s / <= {p95_target:g} s | "
            f"{met(group.p50, p50_target, False)} / {met(group.p95, p95_target, False)} |"
        )
    for group in groups:
        if group.design == "loop" or group.rate != LATENCY_TARGET_RATE:
            continue
        rows.append(
            f"| the same on the {group.design} design ({WAREHOUSE_NAMES[group.warehouse]}, "
            f"median of {len(group.runs)}, measured in this run) | "
            f"{group.p50:.2f} s / {group.p95:.2f} s | - | - |"
        )
    for warehouse in dict.fromkeys(r.warehouse for r in run.e2e if r.design == "loop"):
        best = highest_sustained(run.e2e, warehouse)
        rows.append(
            f"| highest rate sustained with a bounded backlog, {WAREHOUSE_NAMES[warehouse]} "
            f"(of those tried) | {best:,.0f} events/s | >= 10,000 | "
            f"{met(best, TARGETS['sustained'])} |"
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


def highest_sustained(results: list[E2EResult], warehouse: str) -> float:
    """The highest rate whose every run on this warehouse kept a bounded backlog."""
    sustained = [
        group.rate
        for group in group_runs(results)
        if group.design == "loop" and group.warehouse == warehouse and group.bounded
    ]
    return max(sustained, default=0.0)


def loader_section(f: LoaderFigures) -> list[str]:
    lines = [
        "## 2. Loader throughput",
        "",
        f"SQS batch bodies from the handler (about {f.events:,} events; dlt loads the first "
        f"{f.dlt_events:,}) in loads of up to {f.events_per_load:,} events ({f.loads} loads): "
        "what the load loop takes at once when that much waits in SQS (it loads what it "
        "receives as soon as it arrives, up to ANALYTICS_LOAD_MAX_MESSAGES messages). Each "
        "loader writes a fresh DuckDB file; events/s, best of the rounds.",
        "",
        "| loader | per load | ours / it | one call, all events | ours / it |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "ours": "ours: `Loader.load_batches` (store plan, one transaction, store record)",
        "read_json": "ceiling: DuckDB `read_json` of the same NDJSON, no dedupe",
        "dlt_default": "dlt `pipeline.run`, default (insert_values)",
        "dlt_parquet": 'dlt `pipeline.run`, `loader_file_format="parquet"`',
    }
    for name, label in labels.items():
        per_load, single = f.per_load.get(name), f.single_call.get(name)
        if per_load is None or single is None:
            continue
        lines.append(
            f"| {label} | {per_load:,.0f} | {f.ratio(f.per_load, name):.2f} | {single:,.0f} | "
            f"{f.ratio(f.single_call, name):.2f} |"
        )
    lines += [
        "",
        "dlt receives the events as dicts (nested properties and context, as a user's JSON "
        "would arrive) and normalises them into columns and child tables, which is its job; "
        "ours additionally gunzips, looks every batch id, messageId and first-seen aggregate "
        "key up in the loader's RocksDB store, writes the aggregate deltas and the ledger rows "
        "in the same transaction, and records the load in the store (an fsynced intent before "
        "the commit, the keys after).",
        "",
    ]
    return lines


def e2e_section(run: BenchRun) -> list[str]:
    results = run.e2e
    groups = group_runs(results)
    poll = results[0].poll_seconds
    lines = [
        "## 3. End to end on the local stack",
        "",
        "`analytics-pipeline dev` as a user starts it (patched moto emulator, trigger process "
        "with the real handler, HTTP collector, `dagster dev` with the repository's dagster.yaml "
        "whose sensor keeps one `events_loop_job` run loading; on BigQuery the bqemulator "
        "`dev` starts), every setting at its default but ports and folders, and simulated "
        "clients (100 devices, exact clocks, SDK flush every 1 s) started once the loop run "
        "holds the loader store; a fresh stack per run. Latency per event is `the return of "
        f"the first warehouse poll that has the row - sentAt` (the driver polls every {poll:g} "
        "s, so it over-states by up to that plus the poll's own duration); the legs split it "
        "by the row's `received_at` (Kinesis arrival) and `loaded_at` (stamped when the load "
        "is planned). Bounded: clients kept >= 95 % of the rate and rows became queryable at "
        ">= 90 % of it (the `sustained` column); in the second half the "
        "backlog (sent, not yet queryable) stayed under 20 s of traffic and neither it nor the "
        "SQS queue depth kept growing (lowest of the last quarter above the highest of the "
        "quarter before); everything was loaded after the clients stopped. Figures are "
        "medians over the repeats; the box's load is the 1-minute load average (the stack "
        "itself adds 1-2) and `other work` the cores busy meanwhile that none of the "
        "benchmark's processes account for (/proc/stat), i.e. the other developers' tests.",
        "",
        "| warehouse | design | rate (events/s) | runs | p50 | p95 | max | legs p50: put / "
        "to load / commit + poll | sustained (events/s) | bounded | drain | loads: every / "
        "events / loop's s | load avg before / during | other work (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|---:|---|---|---|",
    ]
    for group in groups:
        lines.append(
            f"| {WAREHOUSE_NAMES.get(group.warehouse, group.warehouse)} | {group.design} | "
            f"{group.rate:,.0f} | {len(group.runs)} | {group.p50:.2f} s | {group.p95:.2f} s | "
            f"{group.median(lambda r: r.max_latency):.1f} s | "
            f"{group.median(lambda r: r.stage_median('to_kinesis')):.2f} / "
            f"{group.median(lambda r: r.stage_median('to_load')):.2f} / "
            f"{group.median(lambda r: r.stage_median('to_queryable')):.2f} s | "
            f"{group.median(lambda r: r.sustained_rate):,.0f} | "
            f"{_yes_no(r.bounded for r in group.runs)} | "
            f"{group.median(lambda r: r.drain_seconds):.0f} s | "
            f"{_seconds(group.median(lambda r: r.load_gap_seconds()))} / "
            f"{group.median(lambda r: r.events_per_load()):,.0f} / "
            f"{_seconds(group.median(lambda r: r.median_load_seconds()))} | "
            f"{group.median(lambda r: r.load_before):.1f} / "
            f"{group.median(lambda r: r.load_during):.1f} | "
            f"{group.median(lambda r: r.others_cores):.2f} |"
        )
    lines += [
        "",
        "Every run, in the order they ran (p50 / p95, and the box's load with each):",
        "",
        "| # | warehouse | design | rate | sent | p50 | p95 | bounded | load avg before / "
        "during | other work | start-up | Dagster runs | plot |",
        "|---:|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---|",
    ]
    shown = {id(group.representative) for group in groups}
    for index, r in enumerate(results, 1):
        plot = f"[plot]({plot_name(r)})" if id(r) in shown else ""
        lines.append(
            f"| {index} | {WAREHOUSE_NAMES.get(r.warehouse, r.warehouse)} | {r.design} | "
            f"{r.rate:,.0f} | {r.sent:,} | {r.latency(0.5):.2f} s | {r.latency(0.95):.2f} s | "
            f"{'yes' if r.bounded else '**no**'} | {r.load_before:.1f} / {r.load_during:.1f} | "
            f"{r.others_cores or 0:.2f} | {_seconds(r.startup_seconds)} | {len(r.runs)} | "
            f"{plot} |"
        )
    components = list(dict.fromkeys(name for r in results for name in r.peak_rss_mb))
    lines += [
        "",
        "Peak RSS (all processes of the component at once / its largest process) and CPU "
        "(cores busy on average over the run and drain; 2 cores in all) of the run whose p50 "
        "is the median of its repeats; `run worker` is the Dagster run process (the loop), "
        "`dagster` the rest of `dagster dev` (webserver, daemon, code server):",
        "",
        "| warehouse | design | rate | " + " | ".join(components) + " | bench driver |",
        "|---|---|---:|" + "---|" * (len(components) + 1),
    ]
    for group in groups:
        r = group.representative
        shares = r.cpu_share()
        cells = [
            f"{r.peak_rss_mb.get(name, 0):,.0f} / {r.peak_process_rss_mb.get(name, 0):,.0f} MB, "
            f"{shares.get(name, 0):.2f} cores"
            for name in components
        ]
        lines.append(
            f"| {WAREHOUSE_NAMES.get(r.warehouse, r.warehouse)} | {r.design} | {r.rate:,.0f} | "
            + " | ".join(cells)
            + f" | {shares.get('bench driver', 0):.2f} cores |"
        )
    if run.before_command:
        lines += ["", run.before_command]
    for r in results:
        if r.failure:
            lines += [
                "",
                f"Run at {r.rate:,.0f} events/s ({r.warehouse}, {r.design}): "
                f"{r.failure.splitlines()[0]}",
            ]
    first = groups[0].representative
    lines += ["", f"![{first.warehouse} at {first.rate:,.0f} events/s]({plot_name(first)})", ""]
    return lines


def _yes_no(values: Any) -> str:
    answers = [bool(v) for v in values]
    return "yes" if all(answers) else ("**no**" if not any(answers) else "**not every run**")


def _seconds(value: float | None) -> str:
    return "?" if value is None or value != value else f"{value:.1f} s"


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
    for group in group_runs(run.e2e):
        if group.representative.latencies:
            plot_e2e(group.representative, out_dir / plot_name(group.representative))
    path = out_dir / "RESULTS.md"
    path.write_text(render(run, out_dir))
    return path
