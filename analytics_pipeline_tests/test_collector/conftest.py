"""A fresh pipeline (stream, queues, bucket on the session's emulator) and the tests' keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_tests.test_collector.helpers import WRITE_KEYS_SETTING


@pytest.fixture
def collector_settings(
    aws_endpoint: str, tmp_path: Path, pipeline_env: Callable[[Mapping[str, str]], None]
) -> Settings:
    env = unique_settings_env(aws_endpoint, tmp_path, ANALYTICS_WRITE_KEYS=WRITE_KEYS_SETTING)
    pipeline_env(env)
    settings = Settings.from_env(env)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_resources(settings)
    return settings
