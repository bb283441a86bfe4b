"""Where the load loop's wall time goes: a py-spy recording of the loop run, summed by step.

`record` runs `py-spy record --idle --threads --format raw` on a process (the Dagster run
worker of `events_loop_job`) for a while; `summarize` reads the collapsed stacks of the thread
that runs the loop and charges every sample to the deepest step it is in (waiting included:
`--idle` keeps the samples of a thread blocked in a long poll or a lock), so the shares add up
to the loop's wall time:

    .venv/bin/python -m benchmarks.loop_profile <recording.txt>

Samples of the loop thread outside `run_loop` are Dagster handling what the op yielded (the
materializations and check evaluations of each load: event log writes).
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections import Counter
from pathlib import Path

from benchmarks.workload import REPO_ROOT

PY_SPY = REPO_ROOT / ".venv" / "bin" / "py-spy"
_THREAD = re.compile(r"^thread \((\w+)\)")
# Steps, matched on `[Class.]function (path:line)` frames; the deepest match of a stack wins.
_STEP_FRAMES = (
    ("SQS receive (long poll)", r"receive \(.*loader/batch_queue\.py"),
    ("read bodies (inline / S3)", r"body \(.*loader/batch_queue\.py"),
    ("plan (decode, dedupe, aggregate deltas)", r"plan_load \("),
    ("store: lookups", r"(known|loaded_batches|pending) \(.*loader/store\.py"),
    ("store: intent (fsync)", r"begin \(.*loader/store\.py"),
    ("store: record (fsync)", r"(finish|abandon) \(.*loader/store\.py"),
    ("warehouse prepare", r"prepare \(.*warehouse/"),
    ("warehouse commit", r"commit \(.*warehouse/"),
    ("recover (every load asks the store)", r"recover \(.*loader/load\.py"),
    ("SQS delete", r"delete \(.*loader/batch_queue\.py"),
)
STEPS = tuple((name, re.compile(r"^(\w+\.)?" + frame)) for name, frame in _STEP_FRAMES)
OTHER_LOADER = "loader, other"
DAGSTER = "Dagster: handling yielded materializations"


def record(
    pid: int, seconds: int, output: Path, *, idle: bool = True, rate: int = 50
) -> subprocess.Popen[bytes]:
    """Start py-spy on `pid` for `seconds` (it writes `output` when done); `idle` keeps the
    samples of waiting threads (wall time), without it only running ones count (CPU)."""
    command = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(seconds)]
    command += ["--rate", str(rate), "--threads", "--format", "raw"] + (["--idle"] if idle else [])
    command += ["--nonblocking", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _step(frames: list[str]) -> str | None:
    """The deepest step a stack is in; None outside the loop."""
    if not any(frame.startswith("run_loop (") for frame in frames):  # a module function
        return None
    found = OTHER_LOADER
    for frame in frames:
        for name, pattern in STEPS:
            if pattern.match(frame):
                found = name
    return found


def summarize(path: Path) -> tuple[Counter[str], int]:
    """Samples per step of the loop's thread, and the thread's sample total."""
    by_thread: dict[str, Counter[str]] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = _THREAD.match(frames[0])
        key = thread.group(1) if thread else "?"
        step = _step(frames[1:] if thread else frames)
        by_thread.setdefault(key, Counter())[step or DAGSTER] += int(count)
    loop_threads = [c for c in by_thread.values() if sum(v for k, v in c.items() if k != DAGSTER)]
    if not loop_threads:
        return Counter(), 0
    steps = max(loop_threads, key=lambda c: sum(v for k, v in c.items() if k != DAGSTER))
    return steps, sum(steps.values())


def table(path: Path) -> list[str]:
    """Markdown rows: step, share of the loop's wall time."""
    steps, total = summarize(path)
    rows = ["| step of the loop | share of its wall time |", "|---|---:|"]
    for name, samples in steps.most_common():
        rows.append(f"| {name} | {100 * samples / max(total, 1):.1f} % |")
    return rows


def top_frames(path: Path, count: int = 15) -> list[str]:
    """Markdown rows: the frames most samples pass through (inclusive), for any process."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = [f for f in stack.split(";") if not _THREAD.match(f)]
        total += int(samples)
        for frame in dict.fromkeys(frames):  # once per stack, however deep the recursion
            inclusive[frame] += int(samples)
    rows = ["| frame (inclusive) | share of samples |", "|---|---:|"]
    for frame, samples in inclusive.most_common(count):
        rows.append(f"| `{frame}` | {100 * samples / max(total, 1):.1f} % |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", type=Path, help="py-spy raw output (collapsed stacks)")
    parser.add_argument("--frames", type=int, default=0, help="top frames instead of steps")
    arguments = parser.parse_args()
    if arguments.frames:
        print("\n".join(top_frames(arguments.recording, arguments.frames)))
    else:
        print("\n".join(table(arguments.recording)))


if __name__ == "__main__":
    main()
