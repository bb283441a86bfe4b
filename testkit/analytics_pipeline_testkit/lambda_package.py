"""The Lambda package as Lambda runs it: unpacked into a task folder, imported by a Python that
has boto3 and nothing else (the python3.11 runtime's set-up)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from analytics_pipeline.local.stack import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "deploy" / "lambda" / "build_zip.py"
HANDLER_MODULE = "analytics_pipeline.ingest.handler"
# What the first invocation imports besides the handler module (aws.py imports boto3).
FIRST_INVOCATION_MODULES = ("analytics_pipeline.aws", "analytics_pipeline.contract.parse")


def build_zip(output: Path, arch: str = "x86_64") -> Path:
    subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--arch", arch, "--output", str(output)],
        check=True,
        capture_output=True,
    )
    return output


def boto3_only_python(venv: Path) -> Path:
    """A fresh virtualenv holding boto3 (at the pinned version) and its dependencies only."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"),
            *("-c", str(REPO_ROOT / "constraints.txt"), "boto3"),
        ],
        check=True,
        capture_output=True,
    )
    return python


def unpack(package: Path, task_root: Path, keep_bytecode: bool = True) -> Path:
    with zipfile.ZipFile(package) as archive:
        archive.extractall(task_root)
    if not keep_bytecode:
        for cache in list(task_root.rglob("__pycache__")):
            shutil.rmtree(cache)
    return task_root


def run_in_task(
    python: Path, task_root: Path, code: str, env: dict[str, str] | None = None
) -> dict:
    """Run `code` (which prints one JSON line last) the way Lambda puts the task on sys.path.

    -B: like /var/task, nothing can be written next to the sources. The working directory is
    the task root, as on Lambda, so the repository's own package is never in reach.
    """
    result = subprocess.run(
        [str(python), "-B", "-c", code],
        cwd=task_root,
        env={**(env or {}), "PYTHONPATH": str(task_root), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


COLD_IMPORT = f"""
import json, time
started = time.perf_counter()
import {HANDLER_MODULE}
handler_done = time.perf_counter()
{"; ".join(f"import {m}" for m in FIRST_INVOCATION_MODULES)}
first_done = time.perf_counter()
print(json.dumps({{"handler": handler_done - started, "first_call": first_done - started}}))
"""


def cold_import_seconds(python: Path, task_root: Path) -> dict[str, float]:
    """One fresh process: seconds to import the handler, and with what its first call imports."""
    return run_in_task(python, task_root, COLD_IMPORT)
