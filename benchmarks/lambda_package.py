"""Size and cold import time of the ingest Lambda package (`make lambda-zip`).

Builds the zip, unpacks it as Lambda does, and imports the handler in fresh processes of a
virtualenv that has boto3 only: the handler module alone, and with what its first invocation
imports (boto3 through aws.py, the contract parser). Twice: with the precompiled .pyc files the
package ships, and without them (what a package of sources alone costs on every cold start,
since /var/task is read-only). Run from the repository root:

    .venv/bin/python -m benchmarks.lambda_package [--runs 15] [--arch x86_64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import zipfile
from pathlib import Path

from analytics_pipeline_testkit.lambda_package import (
    boto3_only_python,
    build_zip,
    cold_import_seconds,
    unpack,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--arch", default="x86_64")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lambda-bench-") as folder:
        root = Path(folder)
        package = build_zip(root / "ingest-lambda.zip", args.arch)
        with zipfile.ZipFile(package) as archive:
            unpacked = sum(i.file_size for i in archive.infolist())
        print(f"zip {package.stat().st_size:,} bytes, {unpacked:,} unpacked ({args.arch})")
        if args.arch != "x86_64":
            return  # the wheels do not import on this machine
        python = boto3_only_python(root / "venv")
        for label, keep in (("with .pyc", True), ("sources only", False)):
            task = unpack(package, root / f"task-{keep}", keep_bytecode=keep)
            cold_import_seconds(python, task)  # warm the page cache: Lambda reads from local disk
            samples = [cold_import_seconds(python, task) for _ in range(args.runs)]
            for key in ("handler", "first_call"):
                values = sorted(s[key] * 1000 for s in samples)
                print(
                    f"{label:13s} {key:10s} median {statistics.median(values):6.1f} ms "
                    f"(min {values[0]:.1f}, max {values[-1]:.1f}, {args.runs} processes)"
                )


if __name__ == "__main__":
    main()
