"""Configuration is declared once and the README documents all of it."""

import os
from dataclasses import fields
from pathlib import Path

from analytics_pipeline.settings import (
    SETTINGS_DOC,
    Settings,
    configuration_table,
    setting_specs,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_field_is_read_from_its_own_documented_variable() -> None:
    specs = setting_specs()
    assert [spec.name for spec in specs] == [f.name for f in fields(Settings)]
    assert len({spec.variable for spec in specs}) == len(specs)
    assert all(spec.doc.strip() for spec in specs)


def test_defaults_apply_when_the_environment_is_empty() -> None:
    settings = Settings.from_env({})
    assert settings.aws_endpoint_url == "http://127.0.0.1:4566"
    assert settings.stream_name == "analytics-events"
    assert settings.queue_name == "analytics-event-batches"
    assert settings.dlq_name == "analytics-event-batches-dlq"
    assert settings.warehouse == "duckdb"


def test_values_are_parsed_by_the_field_type() -> None:
    settings = Settings.from_env(
        {
            "ANALYTICS_STREAM_SHARDS": "4",
            "ANALYTICS_WAREHOUSE_LOCK_WAIT_SECONDS": "2.5",
            "ANALYTICS_BIGQUERY_REQUIRE_PARTITION_FILTER": "True",
            "ANALYTICS_BIGQUERY_PARTITION_EXPIRATION_DAYS": "90",
            "ANALYTICS_DUCKDB_PATH": "relative/warehouse.duckdb",
        }
    )
    assert settings.stream_shards == 4
    assert settings.warehouse_lock_wait_seconds == 2.5
    assert settings.bigquery_require_partition_filter is True
    assert settings.bigquery_partition_expiration_days == 90
    assert settings.duckdb_path.is_absolute()
    assert settings.duckdb_path.parts[-2:] == ("relative", "warehouse.duckdb")
    assert Settings.from_env({}).bigquery_partition_expiration_days is None
    assert Settings.from_env({}).bigquery_require_partition_filter is False


def test_an_empty_endpoint_means_real_aws() -> None:
    assert Settings.from_env({"AWS_ENDPOINT_URL": ""}).aws_endpoint_url is None


def test_to_env_round_trips() -> None:
    settings = Settings.from_env(
        {
            "ANALYTICS_STREAM_NAME": "s",
            "ANALYTICS_LOAD_MAX_MESSAGES": "3",
            "AWS_ENDPOINT_URL": "",
            "ANALYTICS_BIGQUERY_REQUIRE_PARTITION_FILTER": "true",
        }
    )
    assert Settings.from_env(settings.to_env()) == settings


def test_readme_configuration_table_is_generated_from_the_settings() -> None:
    """The README's table is `configuration_table()`; UPDATE_SNAPSHOTS=1 rewrites it."""
    readme = README.read_text()
    header = "| variable | default | meaning |"
    start = readme.index(header)
    end = readme.index("\n\n", start)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        readme = readme[:start] + configuration_table() + readme[end:]
        README.write_text(readme)
        end = readme.index("\n\n", start)
    assert readme[start:end] == configuration_table()
    for variable, (default, _) in SETTINGS_DOC.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{variable}` |"))
        assert (f"`{default}`" if default else "(unset)") in row, row


def test_secret_settings_stay_out_of_what_the_ui_shows() -> None:
    settings = Settings.from_env({"ANALYTICS_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook"})
    assert settings.to_env()["ANALYTICS_ALERT_WEBHOOK_URL"] == "http://127.0.0.1:9/hook"
    assert "ANALYTICS_ALERT_WEBHOOK_URL" not in settings.to_env(secrets=False)


def test_the_loader_store_belongs_to_one_queue_and_one_warehouse(tmp_path: Path) -> None:
    base = {"ANALYTICS_LOADER_STATE_DIR": str(tmp_path)}

    def store(**env: str) -> Path:
        return Settings.from_env({**base, **env}).loader_store_dir

    one = store(ANALYTICS_DUCKDB_PATH=str(tmp_path / "a.duckdb"))
    assert one == store(ANALYTICS_DUCKDB_PATH=str(tmp_path / "a.duckdb"))
    assert one.parent == tmp_path / "analytics-event-batches"
    others = {
        store(ANALYTICS_DUCKDB_PATH=str(tmp_path / "b.duckdb")),
        store(ANALYTICS_WAREHOUSE="bigquery", ANALYTICS_BIGQUERY_DATASET="x"),
        store(ANALYTICS_WAREHOUSE="bigquery", ANALYTICS_BIGQUERY_DATASET="y"),
        store(ANALYTICS_DUCKDB_PATH=str(tmp_path / "a.duckdb"), ANALYTICS_QUEUE_NAME="other"),
    }
    assert one not in others and len(others) == 4


def test_the_loader_store_lives_in_the_state_folder_unless_told(tmp_path: Path) -> None:
    settings = Settings.from_env({"ANALYTICS_STATE_DIR": str(tmp_path)})

    assert settings.loader_store_dir.is_relative_to(tmp_path / "loader")
