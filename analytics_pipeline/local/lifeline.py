"""The lifeline: a small process that outlives `dev` only to stop what `dev` started.

`PR_SET_PDEATHSIG` (see `processes.py`) tells each direct child of `dev` that its parent died,
but not the children's own children: `dagster dev`'s gRPC server waits for its run workers
before it exits, and a run worker can go on receiving and loading for as long as its run takes,
into a warehouse the next `dev` may no longer point at. So `dev` starts this watcher first, in
a session of its own, and tells it over a pipe the process group of every child it starts. The
pipe's write end lives only in `dev`: when `dev` dies, by any signal, the watcher reads end of
file, SIGTERMs each group, SIGKILLs what is left after a few seconds, and exits. An orderly stop
says `done` first, and the watcher exits without touching anything.

The watcher also inherits `dev`'s lock files (`pipeline_lock.py`): the lock is released when the
last holder exits, so a new `dev` cannot start until the old pipeline's processes are gone.

    python -m analytics_pipeline.local.lifeline --fd N [--grace SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from analytics_pipeline.local.processes import ChildProcess, stop_groups

# Long enough for the trigger to checkpoint and Dagster to shut its processes down (1-3 s when
# the whole group gets SIGTERM), short enough that nothing lingers: every load is idempotent.
ORPHAN_GRACE_SECONDS = 5.0
_DONE = "done"


class Lifeline:
    """`dev`'s side of the lifeline: start the watcher, name the groups it must stop."""

    def __init__(self, log_path: Path, inherited_fds: tuple[int, ...] = ()) -> None:
        self._read_fd, self._write_fd = os.pipe()
        self.process = ChildProcess(
            "lifeline",
            [
                *(sys.executable, "-m", "analytics_pipeline.local.lifeline"),
                *("--fd", str(self._read_fd), "--grace", str(ORPHAN_GRACE_SECONDS)),
            ],
            log_path,
            dies_with_parent=False,  # it must outlive `dev` to clean up after it
            pass_fds=(self._read_fd, *inherited_fds),
        )

    def start(self) -> Lifeline:
        self.process.start()
        os.close(self._read_fd)  # only the watcher reads; our copy would hide its end of file
        return self

    def watch(self, group: int) -> None:
        self._send(f"watch {group}")

    def forget(self, group: int) -> None:
        self._send(f"forget {group}")

    def close(self) -> None:
        """Orderly stop (every child already stopped): the watcher exits and is reaped."""
        self._send(_DONE)
        os.close(self._write_fd)
        if self.process.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.popen.wait(timeout=5.0)
        self.process.stop()  # closes its log (and stops it, had it not exited)

    def _send(self, line: str) -> None:
        # A watcher that died must not take `dev` with it (the children still die with `dev`).
        with contextlib.suppress(OSError):
            os.write(self._write_fd, f"{line}\n".encode())


def watch_until_parent_dies(fd: int, grace: float) -> bool:
    """Follow the watch/forget lines until end of file; stop the groups still watched unless the
    parent said `done`. True when it had to stop them."""
    groups: dict[int, None] = {}  # insertion-ordered set
    with open(fd, encoding="utf-8") as pipe:
        for line in pipe:
            command, _, argument = line.strip().partition(" ")
            if command == _DONE:
                return False
            if command == "watch":
                groups[int(argument)] = None
            elif command == "forget":
                groups.pop(int(argument), None)
    print(f"dev died; stopping process groups {list(groups)}", flush=True)
    stop_groups(list(groups), grace)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="stop what `dev` started once `dev` dies")
    parser.add_argument("--fd", type=int, required=True, help="read end of dev's pipe")
    parser.add_argument("--grace", type=float, default=ORPHAN_GRACE_SECONDS)
    args = parser.parse_args(argv)
    # Ctrl-C in dev's terminal and dev's own SIGTERM are for dev: the watcher waits for the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watch_until_parent_dies(args.fd, args.grace)


if __name__ == "__main__":
    main()
