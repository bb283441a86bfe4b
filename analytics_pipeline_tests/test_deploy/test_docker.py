"""The code location's Dockerfile: hadolint clean, and serving what the workspace expects.

No Docker engine here, so the image is not built in the tests; what the image runs is the
`dagster api grpc` command that test_dagster_postgres.py starts against the same workspace.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")


def _hadolint(source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "-"], input=source, capture_output=True, text=True
    )


def test_hadolint_passes_on_the_dockerfile_and_fails_a_careless_one() -> None:
    result = _hadolint(DOCKERFILE.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    careless = _hadolint("FROM python:latest\nRUN pip install dagster\n")
    assert careless.returncode != 0 and "DL3007" in careless.stdout


def test_the_image_serves_the_code_location_the_workspace_loads() -> None:
    text = DOCKERFILE.read_text()
    command = json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE).group(1))
    workspace = yaml.safe_load((REPO / "deploy" / "dagster" / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    dagster_tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    assert command[:3] == ["dagster", "api", "grpc"]
    assert command[command.index("-m") + 1] == dagster_tool["module_name"]
    location = entry["grpc_server"]["location_name"]
    assert command[command.index("--location-name") + 1] == location
    assert location == dagster_tool["code_location_name"]
    assert command[command.index("-p") + 1] == "4000" and "EXPOSE 4000" in text
    # Everything it copies exists, and the instance config is the production one.
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (REPO / path).exists(), path
    assert "COPY --chown=10001:10001 deploy/dagster/dagster.yaml" in text
