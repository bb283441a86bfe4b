"""Configuration lives in one place and the README documents all of it."""

from pathlib import Path

from analytics_pipeline.settings import ENV_BY_FIELD, SETTING_FIELDS, SETTINGS_DOC, Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_read_from_a_documented_variable() -> None:
    assert set(ENV_BY_FIELD) == set(SETTING_FIELDS)
    assert set(ENV_BY_FIELD.values()) == set(SETTINGS_DOC)


def test_defaults_apply_when_the_environment_is_empty() -> None:
    settings = Settings.from_env({})
    assert settings.aws_endpoint_url == "http://127.0.0.1:4566"
    assert settings.stream_name == "analytics-events"
    assert settings.queue_name == "analytics-event-batches"
    assert settings.dlq_name == "analytics-event-batches-dlq"
    assert settings.warehouse == "duckdb"


def test_an_empty_endpoint_means_real_aws() -> None:
    assert Settings.from_env({"AWS_ENDPOINT_URL": ""}).aws_endpoint_url is None


def test_to_env_round_trips() -> None:
    settings = Settings.from_env(
        {"ANALYTICS_STREAM_NAME": "s", "ANALYTICS_DEDUPE_WINDOW_DAYS": "3"}
    )
    assert Settings.from_env(settings.to_env()) == settings


def test_readme_documents_every_variable_with_its_default() -> None:
    readme = README.read_text()
    for variable, (default, _) in SETTINGS_DOC.items():
        row = next(
            (line for line in readme.splitlines() if line.startswith(f"| `{variable}` |")), None
        )
        assert row is not None, f"{variable} missing from the README's configuration table"
        assert (f"`{default}`" if default else "(unset)") in row, row
