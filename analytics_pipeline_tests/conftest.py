"""Shared fixtures: one real AWS emulator per test session, fresh AWS resources per test.

Tests that claim to be end-to-end talk to the emulator over HTTP like production code talks to
AWS. Each test gets its own stream, queues and bucket (unique names), so tests never see each
other's data even though they share one emulator process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from analytics_pipeline.local.bootstrap import Resources, ensure_resources
from analytics_pipeline.local.emulator import start_emulator
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.environments import BigQueryEndpoint, unique_settings_env
from analytics_pipeline_testkit.processes import free_port


@pytest.fixture(scope="session")
def aws_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of our emulator module, started on a free port and stopped by its PID."""
    log_path = tmp_path_factory.mktemp("emulator") / "emulator.log"
    emulator = start_emulator(free_port(), log_path)
    try:
        yield emulator.endpoint_url
    finally:
        emulator.stop()


@pytest.fixture
def pipeline_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[Mapping[str, str]], None]:
    """Put a settings environment into os.environ for this test (code calling from_env() sees it).

    Every setting not named is removed, so a developer's shell cannot leak into a test.
    """

    def apply(env: Mapping[str, str]) -> None:
        from analytics_pipeline.settings import SETTINGS_DOC

        for name in SETTINGS_DOC:
            if name not in env and name in os.environ:
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return apply


@pytest.fixture
def new_pipeline(
    aws_endpoint: str,
    tmp_path: Path,
    pipeline_env: Callable[[Mapping[str, str]], None],
) -> Callable[..., Settings]:
    """Settings for a fresh pipeline (its own stream, queues, bucket) with its resources created;
    keyword arguments override settings (`ANALYTICS_QUEUE_MAX_RECEIVES="3"`).

    The same values are in os.environ, so `Settings.from_env()` inside the code under test (the
    Lambda handler) agrees with the test.
    """

    def create(**overrides: str) -> Settings:
        env = unique_settings_env(aws_endpoint, tmp_path, **overrides)
        pipeline_env(env)
        settings = Settings.from_env(env)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        ensure_resources(settings)
        return settings

    return create


@pytest.fixture
def pipeline_settings(new_pipeline: Callable[..., Settings]) -> Settings:
    """A fresh pipeline with the default settings (see `new_pipeline`)."""
    return new_pipeline()


@pytest.fixture
def pipeline_resources(pipeline_settings: Settings) -> Resources:
    """Queue URLs and stream ARN of `pipeline_settings` (ensure_resources is idempotent)."""
    return ensure_resources(pipeline_settings)


@pytest.fixture(scope="session")
def bigquery_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEndpoint]:
    """One bqemulator per session on free ports (installed on first use), stopped by its PID.

    Tests share it and keep apart by using a dataset each.
    """
    from analytics_pipeline.local.bigquery_emulator import install, start_bigquery_emulator

    install()
    project = "test-project"
    emulator = start_bigquery_emulator(
        free_port(),
        free_port(),
        tmp_path_factory.mktemp("bigquery-emulator") / "emulator.log",
        project=project,
    )
    try:
        yield BigQueryEndpoint(emulator.rest_endpoint, emulator.grpc_endpoint, project)
    finally:
        emulator.stop()
