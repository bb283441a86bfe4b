"""The `analytics-pipeline` command's query and status, against a real DuckDB file and emulator."""

import json

from click.testing import CliRunner

from analytics_pipeline.cli import main
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline_testkit.loading import load_once
from analytics_pipeline_testkit.rows import event, staged


def _load_three_events(settings: Settings) -> None:
    warehouse = DuckDBWarehouse(settings.duckdb_path)
    warehouse.ensure_schema()
    rows = [event("m-1"), event("m-2", name="Feed Scrolled"), event("m-3")]
    load_once(warehouse, [staged(rows)], settings.loader_store_dir)


def test_query_prints_a_table_and_json(pipeline_settings: Settings) -> None:
    _load_three_events(pipeline_settings)
    sql = "SELECT event, count(*) AS n FROM analytics.events GROUP BY 1 ORDER BY 1"

    table = CliRunner().invoke(main, ["query", sql])
    as_json = CliRunner().invoke(main, ["query", "--format", "json", sql])

    assert table.exit_code == 0, table.output
    assert "Feed Scrolled" in table.output and "Video Recorded" in table.output
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == [
        {"event": "Feed Scrolled", "n": 1},
        {"event": "Video Recorded", "n": 2},
    ]


def test_status_shows_queues_tables_and_loads(pipeline_settings: Settings) -> None:
    _load_three_events(pipeline_settings)

    result = CliRunner().invoke(main, ["status"])

    assert result.exit_code == 0, result.output
    assert pipeline_settings.queue_name in result.output
    assert pipeline_settings.dlq_name in result.output
    events_line = next(line for line in result.output.splitlines() if line.startswith("events "))
    assert events_line.split()[-1] == "3"
    assert "Last loads" in result.output


def test_status_answers_when_aws_is_unreachable(tmp_path, pipeline_env) -> None:
    pipeline_env(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens on the discard port
            "ANALYTICS_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
        }
    )
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert "unavailable" in result.output


def test_the_cli_warehouse_waits_as_long_as_the_setting_says(tmp_path) -> None:
    from analytics_pipeline.warehouse import open_warehouse

    settings = Settings.from_env(
        {
            "ANALYTICS_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
            "ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS": "7.5",
        }
    )
    warehouse = open_warehouse(settings)
    assert isinstance(warehouse, DuckDBWarehouse)
    assert warehouse.open_timeout_seconds == 7.5
