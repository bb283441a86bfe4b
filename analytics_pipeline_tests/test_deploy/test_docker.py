"""The Dockerfile: hadolint clean, and each image serving what the rest of the deployment expects.

No Docker engine here, so the images are not built in the tests; what the Dagster image runs is
the `dagster api grpc` command that test_dagster_postgres.py starts against the same workspace,
and the collector image's command is the one the collector tests start.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from cfnlint.decode import cfn_yaml

from analytics_pipeline.settings import SETTINGS_DOC

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")


def _hadolint(source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "-"], input=source, capture_output=True, text=True
    )


def _stages() -> dict[str, str]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    parts = re.split(r"^FROM \S+ AS (\w+)\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _cmd(stage: str) -> list[str]:
    return json.loads(re.search(r"^CMD (\[.*\])$", stage, re.MULTILINE).group(1))


def _installed_extras(stage: str) -> str:
    return re.search(r'pip install .* -c constraints\.txt "\.\[([\w,]+)\]"', stage).group(1)


def test_hadolint_passes_on_the_dockerfile_and_fails_a_careless_one() -> None:
    result = _hadolint(DOCKERFILE.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    careless = _hadolint("FROM python:latest\nRUN pip install dagster\n")
    assert careless.returncode != 0 and "DL3007" in careless.stdout


def test_the_default_image_serves_the_code_location_the_workspace_loads() -> None:
    stages = _stages()
    assert list(stages) == ["base", "collector", "dagster"]  # the last one is the default
    dagster = stages["dagster"]
    assert _installed_extras(dagster) == "dagster,bigquery"
    command = _cmd(dagster)
    workspace = yaml.safe_load((REPO / "deploy" / "dagster" / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    dagster_tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    assert command[:3] == ["dagster", "api", "grpc"]
    assert command[command.index("-m") + 1] == dagster_tool["module_name"]
    location = entry["grpc_server"]["location_name"]
    assert command[command.index("--location-name") + 1] == location
    assert location == dagster_tool["code_location_name"]
    assert command[command.index("-p") + 1] == "4000" and "EXPOSE 4000" in dagster
    assert "COPY --chown=10001:10001 deploy/dagster/dagster.yaml" in dagster


def test_the_loader_store_is_a_volume_at_the_path_the_stack_names() -> None:
    """The settings' default (under ANALYTICS_STATE_DIR, relative to the working directory) is
    inside the container's own layer, lost with it."""
    dagster = _stages()["dagster"]
    template = cfn_yaml.load(str(REPO / "deploy" / "cloudformation" / "pipeline.yaml"))
    path = template["Parameters"]["LoaderStateDir"]["Default"]
    assert f"ANALYTICS_LOADER_STATE_DIR={path}" in dagster
    assert f'VOLUME ["{path}"]' in dagster
    assert SETTINGS_DOC["ANALYTICS_LOADER_STATE_DIR"][0] != path


def test_the_collector_image_carries_the_collector_only() -> None:
    collector = _stages()["collector"]
    assert _installed_extras(collector) == "collector"
    assert _cmd(collector)[:2] == ["analytics-pipeline", "collector"]
    port = SETTINGS_DOC["ANALYTICS_COLLECTOR_PORT"][0]
    assert f"EXPOSE {port}" in collector
    # Loopback (the settings' default) would take no traffic from the load balancer.
    assert "ANALYTICS_COLLECTOR_HOST=0.0.0.0" in collector


def test_everything_the_images_copy_exists_and_is_sent_to_the_build() -> None:
    text = DOCKERFILE.read_text()
    allowed = [
        line[1:].rstrip("/")
        for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (REPO / path).exists(), path
            assert any(path == entry or path.startswith(entry + "/") for entry in allowed), path
