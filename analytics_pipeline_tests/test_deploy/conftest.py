"""The Lambda package, built once per session (the zip test and the stack deployment share it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics_pipeline_testkit.lambda_package import boto3_only_python, build_zip


@pytest.fixture(scope="session")
def lambda_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make lambda-zip`'s build into a temp folder (manylinux wheels for x86_64 from PyPI)."""
    return build_zip(tmp_path_factory.mktemp("lambda") / "ingest-lambda.zip")


@pytest.fixture(scope="session")
def boto3_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return boto3_only_python(tmp_path_factory.mktemp("boto3-venv") / "venv")
