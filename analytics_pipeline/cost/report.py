"""The estimate for people: the CLI's table, and the markdown table of several volumes that the
README and `benchmarks/RESULTS.md` show next to hosted products' list prices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from analytics_pipeline.cost.prices import COMPARISONS
from analytics_pipeline.cost.terms import Estimate


def text_report(estimate: Estimate) -> str:
    per_million = 1e6 / estimate.events_per_month
    rows: list[Any] = [
        (item.item, _usd(item.monthly_usd), _usd(item.monthly_usd * per_million))
        for item in estimate.items
    ]
    for vendor in ("AWS", "BigQuery"):
        if any(item.vendor == vendor for item in estimate.items):
            usd = estimate.vendor_usd(vendor)
            rows.append((f"= {vendor}", _usd(usd), _usd(usd * per_million)))
    rows.append(
        ("= total (AWS + BigQuery)", _usd(estimate.monthly_usd), _usd(estimate.per_million_usd))
    )
    hosts = estimate.hosts_monthly_usd
    rows.append(("hosts (not in the total)", _usd(hosts), _usd(hosts * per_million)))
    a = estimate.assumptions
    lines = [
        f"{estimate.events_per_month:,} events a month, warehouse {estimate.warehouse}: "
        f"${estimate.monthly_usd:,.2f} a month, ${estimate.per_million_usd:.4f} per million "
        f"events (list prices, free tiers {'applied' if a['free_tiers'] else 'not applied'})",
        "",
        tabulate(
            rows,
            headers=["item", "$ / month", "$ / million events"],
            tablefmt="simple",
            disable_numparse=True,
            colalign=("left", "right", "right"),
        ),
        "",
        "Arithmetic:",
        *(f"- {item.item}: {item.arithmetic}" for item in estimate.items),
        "",
        "Assumptions (change with --assume NAME=VALUE):",
        *(f"- {name} = {a[name]}: {doc}" for name, doc in a["explained"].items()),
        "",
        "Measured bytes: " + ", ".join(f"{k} {v:g}" for k, v in a["measured_bytes"].items()),
        "Not counted: " + "; ".join(a["not_counted"]),
        "Unverified prices (see --format json for sources): " + ", ".join(a["unverified_prices"]),
    ]
    return "\n".join(lines)


def markdown_volumes(estimates: Sequence[Estimate]) -> list[str]:
    """One row per volume: the bill, per million, its biggest items, the hosted comparisons."""
    names = list(COMPARISONS)
    lines = [
        "| events / month | AWS + BigQuery $ / month | $ per million | biggest items ($ / month) | "
        + " | ".join(f"{name} at ${COMPARISONS[name].usd:g}/M" for name in names)
        + " |",
        "|---:|---:|---:|---|" + "---:|" * len(names),
    ]
    for estimate in estimates:
        biggest = ", ".join(
            f"{name} {usd:,.2f}" for name, usd in estimate.biggest(3) if usd >= 0.005
        )
        hosted = " | ".join(
            _usd_text(COMPARISONS[name].usd * estimate.events_per_month / 1e6) for name in names
        )
        lines.append(
            f"| {_volume(estimate.events_per_month)} | {estimate.monthly_usd:,.2f} | "
            f"{estimate.per_million_usd:.4f} | {biggest} | {hosted} |"
        )
    return lines


def _usd(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.6f}"


def _usd_text(value: float) -> str:
    return f"${value:,.0f}" if value >= 100 else f"${value:,.2f}"


def _volume(events: int) -> str:
    for size, suffix in ((10**9, " B"), (10**6, " M")):
        if events >= size and events % size == 0:
            return f"{events // size:,}{suffix}"
    return f"{events:,}"
