"""The atheris target runs briefly in every test run, so `make fuzz` cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_fuzz_target_runs_2000_inputs_without_a_finding(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    finished = subprocess.run(
        [sys.executable, "fuzz/fuzz_parse.py", "-runs=2000", "-seed=1", str(corpus)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Done 2000 runs" in finished.stderr
    assert len(list(corpus.iterdir())) >= 30  # seeded from the bad-input catalogue
