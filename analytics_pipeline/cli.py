"""The `analytics-pipeline` command: run the local stack, send traffic, query, check status."""

from __future__ import annotations

import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import click
import msgspec

from analytics_pipeline.settings import Settings

format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table for people, JSON for programs.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Self-hosted analytics events: clients -> Kinesis -> Lambda -> SQS -> Dagster -> warehouse.

    Configuration comes from environment variables (see the README's configuration table).
    """


@main.command()
@click.option("--simulate", is_flag=True, help="Also run a steady stream of simulated clients.")
@click.option(
    "--rate", type=float, default=200.0, show_default=True, help="Simulated events per second."
)
@click.option(
    "--port", type=int, default=3000, show_default=True, help="Dagster UI port on 127.0.0.1."
)
def dev(simulate: bool, rate: float, port: int) -> None:
    """Start the whole local pipeline; Ctrl-C, SIGTERM or `stop` stops every process it started
    but the AWS emulator (kept so that the stream and queues survive a restart).

    One `dev` per state folder and per queue: a second one is refused.
    """
    from analytics_pipeline.local.pipeline_lock import PipelineRunning
    from analytics_pipeline.local.ports import PortTaken
    from analytics_pipeline.local.stack import run_dev

    settings = Settings.from_env()
    try:
        code = run_dev(
            settings, port=port, simulate_rate=rate if simulate else None, say=click.echo
        )
    except (PipelineRunning, PortTaken) as error:
        raise click.ClickException(str(error)) from None
    sys.exit(code)


@main.command()
@click.option(
    "--emulator", is_flag=True, help="Also stop the AWS emulator a `dev` started and left running."
)
def stop(emulator: bool) -> None:
    """Stop the `dev` of this state folder (ANALYTICS_STATE_DIR) and every process it started."""
    from analytics_pipeline.local.control import stop_pipeline

    if not stop_pipeline(Settings.from_env(), emulator=emulator, say=click.echo):
        sys.exit(1)


@main.command()
@click.option("--clients", type=int, default=10, show_default=True, help="Simulated devices.")
@click.option("--events", type=int, default=1000, show_default=True, help="Events in total.")
@click.option(
    "--rate", type=float, default=None, help="Events per second (default: as fast as possible)."
)
@click.option(
    "--invalid-ratio", type=float, default=0.0, show_default=True, help="Share of invalid events."
)
@click.option(
    "--forever", is_flag=True, help="Send at --rate until stopped (used by `dev --simulate`)."
)
def simulate(
    clients: int, events: int, rate: float | None, invalid_ratio: float, forever: bool
) -> None:
    """Simulated mobile clients sending events through the SDK to Kinesis."""
    from analytics_pipeline.local import simulator

    settings = Settings.from_env()
    if forever:
        simulator.run_forever(settings, rate=rate or 200.0)
        return
    report = simulator.simulate(
        settings,
        clients=clients,
        events=events,
        rate=rate,
        progress=True,
        invalid_ratio=invalid_ratio,
    )
    click.echo(report.summary())


@main.command()
def trigger() -> None:
    """Play the Lambda's Kinesis trigger against the local emulator (started by `dev`)."""
    from analytics_pipeline.local.trigger import run_trigger

    run_trigger(Settings.from_env())


@main.command()
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Worker processes (a core each)."
)
def collector(workers: int) -> None:
    """Serve the Segment-compatible HTTP API on ANALYTICS_COLLECTOR_HOST:PORT, into Kinesis."""
    from analytics_pipeline.collector.app import serve

    serve(Settings.from_env(), workers=workers)


@main.command()
@format_option
@click.argument("sql")
def query(output_format: str, sql: str) -> None:
    """Run SQL on the configured warehouse (tables live in the `analytics` schema)."""
    from analytics_pipeline.warehouse import open_warehouse

    result = open_warehouse(Settings.from_env()).query(sql)
    if output_format == "json":
        records = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        click.echo(msgspec.json.encode(records, enc_hook=_json_default).decode())
    else:
        click.echo(_table(result.columns, result.rows))


@main.command()
def status() -> None:
    """Pipeline processes, queue depths (main and dead-letter), rows per table, latest loads."""
    from analytics_pipeline.loader import BatchQueue
    from analytics_pipeline.local.control import process_rows
    from analytics_pipeline.warehouse import open_warehouse

    settings = Settings.from_env()
    click.echo(f"Pipeline processes ({settings.state_dir})")
    processes = process_rows(settings)
    if processes:
        click.echo(_table(["process", "pid", "state"], processes) + "\n")
    else:
        click.echo("no `analytics-pipeline dev` has run with this state folder\n")
    rows = []
    for name, dead_letters in ((settings.queue_name, False), (settings.dlq_name, True)):
        try:
            depth = BatchQueue.for_settings(settings, dead_letters=dead_letters).depth()
            rows.append((name, depth["visible"], depth["in_flight"]))
        except Exception as error:  # status must answer even when AWS does not
            rows.append((name, f"unavailable: {error.__class__.__name__}", ""))
    click.echo("Queues")
    click.echo(_table(["queue", "waiting", "in flight"], rows))
    try:
        warehouse = open_warehouse(settings)
        counts = warehouse.table_row_counts()
        click.echo("\nTables")
        click.echo(_table(["table", "rows"], sorted(counts.items())))
        loads = warehouse.last_loads(5)
        click.echo("\nLast loads")
        click.echo(_table(loads.columns, loads.rows))
    except Exception as error:
        click.echo(f"\nwarehouse unavailable: {error}")


@main.command()
@click.option("--events-per-month", type=click.IntRange(min=1), required=True)
@format_option
@click.option(
    "--warehouse",
    type=click.Choice(["duckdb", "bigquery"]),
    default=None,
    help="Default: ANALYTICS_WAREHOUSE.",
)
@click.option("--assume", multiple=True, metavar="NAME=VALUE", help="Change an assumption.")
def cost(
    events_per_month: int, output_format: str, warehouse: str | None, assume: tuple[str, ...]
) -> None:
    """The monthly AWS + BigQuery bill for this many events, every billed item itemised."""
    from analytics_pipeline.cost import estimate_for_settings
    from analytics_pipeline.cost.report import text_report

    try:
        estimate = estimate_for_settings(Settings.from_env(), events_per_month, warehouse, assume)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--assume") from error
    if output_format == "json":
        click.echo(msgspec.json.encode(estimate.as_json()).decode())
    else:
        click.echo(text_report(estimate))


@main.group()
def dlq() -> None:
    """The dead-letter queue: batches that failed to load ANALYTICS_QUEUE_MAX_RECEIVES times."""


@dlq.command("list")
@format_option
def dlq_list(output_format: str) -> None:
    """Each dead-lettered message: batch id, kind, day, rows, receives and the last load error."""
    from analytics_pipeline.loader.replay import dead_letters_for

    rows = [letter.as_row() for letter in dead_letters_for(Settings.from_env())]
    if output_format == "json":
        click.echo(msgspec.json.encode(rows).decode())
    elif not rows:
        click.echo("the dead-letter queue is empty")
    else:
        click.echo(_table(list(rows[0]), [list(row.values()) for row in rows]))


@dlq.command("replay")
@click.option(
    "--batch-id", "batch_ids", multiple=True, help="Replay only these batches (default: all)."
)
def dlq_replay(batch_ids: tuple[str, ...]) -> None:
    """Send dead-lettered batches back to the main queue (after fixing the cause).

    Batches already in the warehouse ledger are only removed; the rest load exactly once.
    """
    from analytics_pipeline.loader.replay import replay_dead_letters_for

    report = replay_dead_letters_for(Settings.from_env(), batch_ids)
    click.echo(
        f"sent back to the queue: {len(report.sent)}; already loaded (removed): "
        f"{len(report.already_loaded)}; left in the dead-letter queue: {report.left}"
    )
    for name in report.sent:
        click.echo(f"  sent {name}")


@dlq.command("redrive")
@click.option(
    "--max-per-second",
    type=click.IntRange(1, 500),
    default=None,
    help="On AWS: messages SQS moves a second (default: SQS's own pace, up to 500).",
)
def dlq_redrive(max_per_second: int | None) -> None:
    """Move the whole dead-letter queue back to the main queue (after fixing the cause).

    On AWS, SQS's own move task (StartMessageMoveTask) does it server side, for a large queue;
    against a local emulator, which lacks it, `dlq replay` does the same.
    """
    from analytics_pipeline.loader.replay import redrive_dead_letters_for

    report = redrive_dead_letters_for(Settings.from_env(), max_per_second)
    click.echo(
        f"redrive by {report.how}: {report.moved} moved"
        + (f" of {report.to_move}, task {report.status}" if report.status else "")
        + (f" ({report.failure_reason})" if report.failure_reason else "")
    )


@main.group()
def loader() -> None:
    """The loader's store (the key index, the batch ledger and intents, outside the warehouse)."""


@loader.command("rebuild")
def loader_rebuild() -> None:
    """Rebuild a lost store from the warehouse (stop the load loop first: it holds the store).

    Reads back what was loaded within the retention (ANALYTICS_LATE_ARRIVAL_DAYS + 1 days);
    on BigQuery that is one scan of those partitions' keys, billed once.
    """
    from analytics_pipeline.loader.rebuild import rebuild_store

    counts = rebuild_store(Settings.from_env())
    click.echo(
        f"store rebuilt: {counts['event']} events, {counts['quarantine']} quarantine rows, "
        f"{counts['batch']} batches"
    )


@main.group()
def quarantine() -> None:
    """The quarantine table: rejected events and blobs, with a reason code."""


@quarantine.command("replay")
@click.option("--reason", required=True, help="Reason code to replay, e.g. timestamp_too_old.")
@click.option("--limit", type=int, default=None, help="At most this many rows (oldest first).")
def quarantine_replay(reason: str, limit: int | None) -> None:
    """Parse quarantined payloads again with the current contract and settings.

    Newly accepted events go through the queue and load exactly once; their rows are marked
    replayed, so running the command again does nothing for them.
    """
    from analytics_pipeline.contract.reasons import Reason
    from analytics_pipeline.loader.replay import replay_quarantine_for

    if reason not in {code.value for code in Reason}:
        raise click.BadParameter(f"unknown reason code {reason!r}", param_hint="--reason")
    report = replay_quarantine_for(Settings.from_env(), reason, limit)
    click.echo(
        f"rows: {report.rows}; replayed: {report.replayed} ({report.events_sent} events, "
        f"{report.rejections_sent} new rejections, {report.batches} batches sent); "
        f"still rejected: {sum(report.still_rejected.values())} "
        f"{dict(report.still_rejected) or ''}; not replayable (payload cut): "
        f"{report.not_replayable}"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _table(columns: list[str], rows: list[tuple[Any, ...]] | list[Any]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=columns, tablefmt="simple")


if __name__ == "__main__":
    main()
