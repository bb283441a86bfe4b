"""Build the ingest Lambda package: `make lambda-zip` -> dist/ingest-lambda.zip.

The package holds the handler (`analytics_pipeline.ingest.handler.handler`), the modules it
imports (contract/, ingest/, settings.py, aws.py, chunking.py, the package __init__) and its
run-time wheels, msgspec and isal, as manylinux wheels for Lambda's Python 3.11 on the chosen
architecture, at the versions pinned in constraints.txt. boto3 is not packaged: the runtime
provides it. The wheels are the core install's dependencies (pyproject) minus boto3, and the
modules the handler's import closure: a test holds both to the code.

Sources are compiled to unchecked-hash .pyc files: Lambda's /var/task is read-only, so without
them every cold start compiles every module again. The zip is reproducible (sorted entries,
fixed timestamps): the same sources and wheels give the same bytes and the same CodeSha256.

    python deploy/lambda/build_zip.py [--arch x86_64|arm64] [--output dist/ingest-lambda.zip]
"""

from __future__ import annotations

import argparse
import compileall
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON_VERSION = "3.11"  # the Lambda runtime (python3.11) and this project's interpreter
WHEELS = ("msgspec", "isal")
# The handler's import closure inside the project (checked by a test in a fresh virtualenv).
PACKAGE_FILES = (
    "analytics_pipeline/__init__.py",
    "analytics_pipeline/settings.py",
    "analytics_pipeline/aws.py",
    "analytics_pipeline/chunking.py",
    "analytics_pipeline/contract/*.py",
    "analytics_pipeline/ingest/*.py",
)
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
LAMBDA_TASK_ROOT = "/var/task"  # where Lambda unpacks the zip


def pinned_versions(names: tuple[str, ...], constraints: Path) -> dict[str, str]:
    pins = {}
    for line in constraints.read_text().splitlines():
        name, _, version = line.partition("==")
        if version and name.strip().lower() in names:
            pins[name.strip().lower()] = version.strip()
    missing = set(names) - set(pins)
    if missing:
        raise SystemExit(f"no pin in {constraints} for {sorted(missing)}")
    return pins


def install_wheels(target: Path, arch: str, pins: dict[str, str]) -> None:
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--no-deps"),
            *("--target", str(target), "--platform", PLATFORMS[arch]),
            *("--implementation", "cp", "--python-version", PYTHON_VERSION),
            "--only-binary=:all:",
            *(f"{name}=={version}" for name, version in sorted(pins.items())),
        ],
        check=True,
    )


def copy_package(target: Path) -> list[str]:
    copied = []
    for pattern in PACKAGE_FILES:
        matches = sorted(REPO.glob(pattern))
        if not matches:
            raise SystemExit(f"{pattern} matches nothing")
        for source in matches:
            relative = source.relative_to(REPO)
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
            copied.append(str(relative))
    return copied


def compile_sources(target: Path) -> None:
    if f"{sys.version_info.major}.{sys.version_info.minor}" != PYTHON_VERSION:
        raise SystemExit(f"build with Python {PYTHON_VERSION}: the .pyc files are version-bound")
    ok = compileall.compile_dir(
        str(target),
        ddir=LAMBDA_TASK_ROOT,  # the path tracebacks show, instead of this build's temp folder
        quiet=1,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise SystemExit("compiling the package failed")


def write_zip(source: Path, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(".zip.tmp")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(source)), ZIP_TIMESTAMP)
            info.external_attr = (0o755 if path.suffix == ".so" else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    temporary.replace(output)


def build(output: Path, arch: str) -> Path:
    pins = pinned_versions(WHEELS, REPO / "constraints.txt")
    with tempfile.TemporaryDirectory(prefix="ingest-lambda-") as folder:
        staging = Path(folder)
        install_wheels(staging, arch, pins)
        copy_package(staging)
        compile_sources(staging)
        write_zip(staging, output)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="x86_64")
    parser.add_argument("--output", type=Path, default=REPO / "dist" / "ingest-lambda.zip")
    args = parser.parse_args(argv)
    output = build(args.output, args.arch)
    with zipfile.ZipFile(output) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
        entries = len(archive.infolist())
    print(
        f"{output}: {output.stat().st_size:,} bytes ({unpacked:,} unpacked, {entries} files), "
        f"{args.arch}, Python {PYTHON_VERSION}"
    )


if __name__ == "__main__":
    main()
