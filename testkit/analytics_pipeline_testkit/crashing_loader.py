"""A loader process that SIGKILLs itself at a chosen step of a load: real deaths, for tests.

    python -m analytics_pipeline_testkit.crashing_loader --kill-at after_commit

It loads the configured queue (settings from the environment) exactly as the load loop does,
with the warehouse and the store wrapped so that the process kills itself (SIGKILL: no cleanup,
no flush beyond what already reached the disk) right after the step named:

  after_prepare  the load's rows are written, invisible (BigQuery: finalized streams)
  after_intent   the store holds the intent; nothing committed
  mid_commit     BigQuery: the first table's stream committed, the others not
  after_commit   everything committed; the store does not know yet
  after_record   the store has the keys and the ledger; SQS not deleted
  none           no death: load until the queue is empty (nothing waiting, nothing in
                 flight: a dead loader's messages come back after their visibility), exit 0

Each outcome `run_loop` yields is logged as a `reported {...}` line: what the Dagster loop run
would have reported of it.

The test then starts another one (`none`) and checks every event arrived exactly once. The
wrappers live here, in the test kit: production code has no fault hook.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from analytics_pipeline.loader import LoadOutcome
from analytics_pipeline.loader.loop import open_loader, run_loop
from analytics_pipeline.loader.store import Intent, LoaderStore
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import open_warehouse
from analytics_pipeline.warehouse.base import LoadPlan, Warehouse

KILL_POINTS = ("after_prepare", "after_intent", "mid_commit", "after_commit", "after_record")
REPORTED = "reported "  # a log line per outcome run_loop yielded, as JSON (see `reported`)


def reported(outcome: LoadOutcome) -> dict[str, Any]:
    """What the Dagster loop would have reported of one load."""
    return {
        "load_ids": outcome.load_ids,
        "recovered": outcome.recovered,
        "inserted": {kind.value: result.rows_inserted for kind, result in outcome.results.items()},
    }


def reports_in(log: str) -> list[dict[str, Any]]:
    """The outcomes a crashing loader's log says it reported."""
    return [
        json.loads(line[len(REPORTED) :]) for line in log.splitlines() if line.startswith(REPORTED)
    ]


def die(point: str) -> None:
    print(f"killed at {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class CrashingWarehouse:
    """The real warehouse, dying after `prepare`, after the first stream's commit, or after
    `commit`."""

    def __init__(self, real: Warehouse, kill_at: str) -> None:
        self._real = real
        self._kill_at = kill_at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def prepare(self, plan: LoadPlan) -> dict[str, Any]:
        prepared = self._real.prepare(plan)
        if self._kill_at == "after_prepare":
            die(self._kill_at)
        return prepared

    def commit(self, plan: LoadPlan, prepared: dict[str, Any]) -> None:
        if self._kill_at == "mid_commit" and len(prepared.get("streams", [])) > 1:
            first = {**prepared, "streams": prepared["streams"][:1]}
            self._real.commit(plan, first)
            die(self._kill_at)
        self._real.commit(plan, prepared)
        if self._kill_at == "after_commit":
            die(self._kill_at)


def crashing_store(store: LoaderStore, kill_at: str) -> LoaderStore:
    begin, finish = store.begin, store.finish

    def begin_then_die(intent: Intent) -> None:
        begin(intent)
        if kill_at == "after_intent":
            die(kill_at)

    def finish_then_die(intent: Intent) -> None:
        finish(intent)
        if kill_at == "after_record":
            die(kill_at)

    store.begin = begin_then_die  # type: ignore[method-assign]
    store.finish = finish_then_die  # type: ignore[method-assign]
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-at", choices=[*KILL_POINTS, "none"], default="none")
    parser.add_argument("--wait-seconds", type=float, default=60.0, help="for the store")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="exit after idle")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    warehouse: Any = open_warehouse(settings)
    if args.kill_at != "none":
        warehouse = CrashingWarehouse(warehouse, args.kill_at)
    with open_loader(settings, warehouse=warehouse, wait_seconds=args.wait_seconds) as loader:
        if args.kill_at != "none":
            crashing_store(loader.store, args.kill_at)
        print("loading", flush=True)
        while True:
            outcomes = list(run_loop(loader, settings, seconds=args.idle_seconds))
            for outcome in outcomes:
                print(f"loaded {outcome.messages} messages", flush=True)
                print(REPORTED + json.dumps(reported(outcome)), flush=True)
            if not outcomes and not any(loader.queue.depth().values()):
                return 0


if __name__ == "__main__":
    sys.exit(main())
