"""The Dagster UI as an operator uses it, in a real browser (Debian's chromium, headless, driven
by Playwright) against a real `dagster dev` started by `analytics-pipeline dev`, with traffic
over three days and a poison batch (an oversize batch whose S3 body is missing).

One stack for the whole module (starting `dev` is most of the cost); the tests run in file
order and each leaves a screenshot in `tmp/artifacts/console/`. What is read from the page is
what an operator sees; GraphQL and SQS are only asked to wait for the pipeline and to check the
outcome of a click.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from analytics_pipeline import aws
from analytics_pipeline.definitions import build_definitions
from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline_testkit.browser import chromium
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import graphql, start_dev, wait_for
from analytics_pipeline_testkit.traffic import (
    OversizeBatch,
    blob,
    send_batch_without_body,
    track_event,
)

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "tmp" / "artifacts" / "console"
VIEWPORT = (1500, 950)
DAYS = 3  # today and the two days before: the backfill's range
UI_TIMEOUT_MS = 60_000  # a loaded 2-core box renders slowly


@dataclass
class Console:
    url: str
    settings: Settings
    dev: ChildProcess
    browser: Any  # a Playwright browser context
    days: list[str]  # oldest first
    valid: set[str]
    poison: OversizeBatch

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.dev.alive(), self.dev.tail()
        return graphql(self.url, query, variables)

    def open(self, path: str) -> Any:
        page = self.browser.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(self.url + path)
        return page


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def put_days_of_traffic(settings: Settings, days: list[str]) -> set[str]:
    """Ten good events and one without an event name per day, as gzip blobs on the stream."""
    kinesis = aws.client("kinesis", settings)
    valid: set[str] = set()
    records = []
    now = datetime.now(UTC)
    for age in range(len(days)):
        at = now - timedelta(days=age)
        events = [track_event(f"ui-{uuid.uuid4().hex[:12]}", at=at) for _ in range(10)]
        valid |= {event["messageId"] for event in events}
        bad = track_event(f"ui-bad-{uuid.uuid4().hex[:8]}")
        del bad["event"]
        records.append({"Data": blob([*events, bad], gzipped=True), "PartitionKey": str(age)})
    response = kinesis.put_records(StreamName=settings.stream_name, Records=records)
    assert response["FailedRecordCount"] == 0
    return valid


@pytest.fixture(scope="module")
def console(aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    base = tmp_path_factory.mktemp("console")
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=age)).isoformat() for age in reversed(range(DAYS))]
    env = unique_settings_env(
        aws_endpoint,
        base,
        ANALYTICS_PARTITION_START=days[0],
        ANALYTICS_HEALTH_INTERVAL_SECONDS="5",
        ANALYTICS_QUEUE_MAX_RECEIVES="2",  # the poison batch is dead-lettered within ~30 s
        ANALYTICS_SQS_VISIBILITY_SECONDS="10",
    )
    settings = Settings.from_env(env)
    dev, port = start_dev(env, base / "dev.log")
    try:
        valid = put_days_of_traffic(settings, days)
        poison = send_batch_without_body(settings)
        with chromium(VIEWPORT) as browser:
            yield Console(f"http://127.0.0.1:{port}", settings, dev, browser, days, valid, poison)
    finally:
        dev.stop()


def materialized_days(console: Console, asset: str) -> dict[str, list[str]]:
    """partition -> run ids of its materializations."""
    nodes = console.graphql(
        """query($key: AssetKeyInput!) { assetNodes(assetKeys: [$key]) {
             assetMaterializations(limit: 200) { partition runId } } }""",
        {"key": {"path": [asset]}},
    )["assetNodes"]
    found: dict[str, list[str]] = {}
    for materialization in nodes[0]["assetMaterializations"] if nodes else []:
        found.setdefault(materialization["partition"], []).append(materialization["runId"])
    return found


def loaded_counts(settings: Settings) -> dict[str, int] | None:
    """messageId -> rows in `events` (None while the load loop holds the DuckDB file)."""
    try:
        result = DuckDBWarehouse(settings.duckdb_path, open_timeout_seconds=2).query(
            "SELECT message_id, count(*) FROM analytics.events GROUP BY 1"
        )
    except Exception:
        return None
    return dict(result.rows)


def test_the_lineage_shows_every_asset_and_edge(console: Console) -> None:
    graph = build_definitions(console.settings).resolve_asset_graph()
    assets = {key.to_user_string() for key in graph.get_all_asset_keys()}
    edges = {
        (parent.to_user_string(), key.to_user_string())
        for key in graph.get_all_asset_keys()
        for parent in graph.get(key).parent_keys
    }
    page = console.open("/asset-groups")
    page.locator("foreignObject").get_by_text("ingest", exact=True).first.wait_for()
    page.get_by_role("button", name="Reload definitions").hover()  # any dialog dismissed first
    page.mouse.click(VIEWPORT[0] * 0.75, VIEWPORT[1] * 0.3, button="right")
    page.get_by_role("menuitem", name="Expand all groups").click()
    for asset in assets:
        page.locator("foreignObject").get_by_text(asset, exact=True).first.wait_for()
    page.wait_for_timeout(1000)  # the layout settles
    shot(page, "lineage")
    drawn = page.evaluate(EDGES_JS, sorted(assets))
    assert {(parent, child) for parent, child in drawn} == edges, drawn


def check_statuses(page: Any) -> dict[str, str]:
    """name -> status as the Checks tab lists them ("name", "name", "Succeeded" lines)."""
    lines = [line.strip() for line in page.inner_text("body").splitlines() if line.strip()]
    return {
        lines[i]: lines[i + 2]
        for i in range(len(lines) - 2)
        if lines[i] == lines[i + 1] and lines[i + 2] in CHECK_STATES
    }


CHECK_STATES = {"Succeeded", "Failed", "Not Evaluated", "Warning", "In progress", "Skipped"}
LOAD_METADATA = (
    "rows_loaded",
    "duplicates_skipped",
    "rejected",
    "bytes",
    "seconds_from_sent_at_p50",
    "seconds_from_sent_at_p95",
)


def test_the_events_page_shows_a_load_with_its_metadata_and_passing_checks(
    console: Console,
) -> None:
    wait_for(
        lambda: set(console.days) <= set(materialized_days(console, "events")),
        timeout=180,
        interval=2,
        what="a load of each day's events",
    )
    page = console.open("/assets/events")
    page.get_by_text("Latest materialization").first.wait_for()
    for label in LOAD_METADATA:
        page.get_by_text(label, exact=True).first.wait_for()
    shot(page, "events")
    page.goto(console.url + "/assets/events?view=checks")
    page.get_by_text("counts_reconcile").first.wait_for()

    # counts_reconcile fails while the poison batch cannot load: the DLQ test sees it pass again.
    wait_for(
        lambda: check_statuses(page).get("events_fresh") == "Succeeded",
        timeout=60,
        interval=2,
        what="events_fresh passing",
    )
    shot(page, "events-checks")


def test_the_queue_health_is_plotted(console: Console) -> None:
    def observations() -> int:
        nodes = console.graphql(
            """{ assetNodes(assetKeys: [{path: ["sqs_batch_queue"]}]) {
                 assetObservations(limit: 5) { timestamp } } }"""
        )["assetNodes"]
        return len(nodes[0]["assetObservations"]) >= 2

    wait_for(observations, timeout=60, interval=2, what="two readings of the queue's health")
    page = console.open("/assets/sqs_batch_queue")
    page.get_by_role("button", name="Plots").click()
    for label in ("visible", "in_flight", "waiting", "dead_letters", "seconds_since_last_load"):
        page.get_by_text(label, exact=True).first.wait_for()
    page.locator("canvas").first.wait_for()
    assert page.locator("canvas").count() >= 5  # one chart per number
    page.get_by_text("dead_letters", exact=True).first.scroll_into_view_if_needed()
    shot(page, "queue-health")
    page.goto(console.url + "/assets/kinesis_stream")
    page.get_by_text("iterator_age_seconds", exact=True).first.wait_for()


def test_a_three_day_backfill_launched_by_clicks_succeeds(console: Console) -> None:
    page = console.open("/assets/daily_event_counts")
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.get_by_role("dialog")
    selection = dialog.get_by_placeholder("No matching partitions")
    selection.fill(f"[{console.days[0]}...{console.days[-1]}]")
    selection.press("Enter")
    dialog.get_by_text(f"{DAYS} partitions", exact=True).wait_for()
    dialog.get_by_role("button", name="Launch backfill").click()
    page.get_by_text("Created backfill").first.wait_for()
    page.get_by_role("link", name="View").first.click()
    page.get_by_text("Partition selection").first.wait_for()
    backfill_id = page.url.rstrip("/").split("/")[-1]

    def finished() -> str | None:
        backfills = console.graphql(
            """{ partitionBackfillsOrError(limit: 10) { ... on PartitionBackfills {
                 results { id status partitionNames } } } }"""
        )["partitionBackfillsOrError"]["results"]
        mine = next(b for b in backfills if b["id"] == backfill_id)
        assert mine["partitionNames"] == console.days, mine
        return mine["status"] if mine["status"] not in ("REQUESTED", "CANCELING") else None

    status = wait_for(finished, timeout=180, interval=2, what=f"backfill {backfill_id} done")
    assert status == "COMPLETED_SUCCESS", status
    page.reload()
    page.get_by_text("Partition selection").first.wait_for()
    shot(page, "backfill")
    page.get_by_text("100% completed").first.wait_for()
    runs = materialized_days(console, "daily_event_counts")
    backfill_runs = {
        run["runId"]
        for run in console.graphql(
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                 ... on PartitionBackfill { runs(limit: 10) { runId status } } } }""",
            {"id": backfill_id},
        )["partitionBackfillOrError"]["runs"]
    }
    assert all(set(runs.get(day, [])) & backfill_runs for day in console.days), runs


def test_the_dlq_replay_job_launched_from_the_launchpad_empties_the_dlq(
    console: Console,
) -> None:
    dead_letters = BatchQueue.for_settings(console.settings, dead_letters=True)
    wait_for(
        lambda: sum(dead_letters.depth().values()) == 1,
        timeout=180,
        interval=2,
        what="the poison batch in the dead-letter queue",
    )
    page = console.open("/assets/sqs_batch_queue?view=checks")

    def failing() -> bool:
        page.reload()
        page.get_by_text("dead_letter_queue_empty").first.wait_for()
        return check_statuses(page).get("dead_letter_queue_empty") == "Failed"

    wait_for(failing, timeout=60, interval=3, what="dead_letter_queue_empty failing")
    shot(page, "dlq-check-failing")
    console.poison.restore_body(console.settings)  # the operator fixes the cause
    page.goto(console.url + "/locations/analytics_pipeline/jobs/dlq_replay_job/playground")
    page.get_by_text("kind: all").first.wait_for()  # the defaults: nothing to type
    shot(page, "dlq-replay-launchpad")
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url("**/runs/*")
    run_id = page.url.rstrip("/").split("/")[-1]

    def run_status() -> str | None:
        run = console.graphql(
            """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }""",
            {"id": run_id},
        )["runOrError"]
        return run["status"] if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    assert wait_for(run_status, timeout=120, interval=2, what="the replay run") == "SUCCESS"
    page.get_by_text("Success", exact=False).first.wait_for()
    shot(page, "dlq-replay-run")
    assert sum(dead_letters.depth().values()) == 0
    expected = console.valid | set(console.poison.message_ids)

    def all_loaded() -> dict[str, int] | None:
        counts = loaded_counts(console.settings)
        return counts if counts is not None and expected <= counts.keys() else None

    counts = wait_for(all_loaded, timeout=120, interval=2, what="the replayed batch loaded")
    assert {message_id: counts[message_id] for message_id in expected} == dict.fromkeys(expected, 1)


# Each edge is an SVG path from the right side of its parent's box to the left side of its
# child's (same coordinate space: both are children of the graph's transformed group).
EDGES_JS = """(assets) => {
  const boxes = {};
  for (const node of document.querySelectorAll('foreignObject')) {
    const names = [...node.querySelectorAll('div')].map(d => d.textContent.trim());
    const name = assets.find(a => names.includes(a));
    if (name && !(name in boxes)) {
      boxes[name] = {x: +node.getAttribute('x'), y: +node.getAttribute('y'),
                     w: +node.getAttribute('width'), h: +node.getAttribute('height')};
    }
  }
  const within = (p, b, side) => {
    const x = side === 'right' ? b.x + b.w : b.x;
    return Math.abs(p.x - x) < 60 && p.y > b.y - 10 && p.y < b.y + b.h + 10;
  };
  const edges = [];
  for (const path of document.querySelectorAll('svg path')) {
    if (path.closest('foreignObject')) continue;
    const length = path.getTotalLength();
    if (!length) continue;
    const start = path.getPointAtLength(0), end = path.getPointAtLength(length);
    const parent = Object.keys(boxes).find(a => within(start, boxes[a], 'right'));
    const child = Object.keys(boxes).find(a => within(end, boxes[a], 'left'));
    if (parent && child) edges.push([parent, child]);
  }
  return edges;
}"""
