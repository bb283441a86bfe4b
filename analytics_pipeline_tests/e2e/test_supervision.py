"""`analytics-pipeline dev` as a user meets it when things go wrong (issue 12): a second `dev`
on the same pipeline, and a SIGKILL of dev's whole process group while events flow.

Before this, `kill -9 -- -<pid of dev>` left the trigger and all of `dagster dev` running, and
a restart pointed at another warehouse lost 60 % of the new events to the orphaned sensor. Now
nothing `dev` started survives it but the AWS emulator (the session's, here), the restarted
`dev` takes the stale lock, and every event sent after the restart is in the new warehouse
exactly once, none in the old one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.local.simulator import SimulationReport, simulate
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import (
    command_line,
    descendants,
    free_port,
    start_dev,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.e2e

SETTLE_SECONDS = 240  # a loaded 2-core box; in-flight messages come back after 20 s


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analytics_pipeline.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def loaded(path: Path) -> Counter[str] | None:
    """messageId -> rows in `events` (None while the loader holds the file)."""
    try:
        result = DuckDBWarehouse(path, open_timeout_seconds=2).query(
            "SELECT message_id, count(*) FROM analytics.events GROUP BY 1"
        )
    except Exception:
        return None
    return Counter(dict(result.rows))


def send_in_background(
    settings: Settings, events: int, rate: float
) -> tuple[threading.Thread, list[SimulationReport]]:
    """The SDK sending from a thread of the test (a client of the pipeline, not part of it)."""
    reports: list[SimulationReport] = []
    thread = threading.Thread(
        target=lambda: reports.append(
            simulate(settings, clients=20, events=events, rate=rate, progress=False)
        )
    )
    thread.start()
    return thread, reports


def test_sigkill_of_devs_group_mid_stream_leaves_nothing_and_a_restart_loads_everything_once(
    aws_endpoint: str, tmp_path: Path
) -> None:
    env = unique_settings_env(
        aws_endpoint,
        tmp_path,
        ANALYTICS_SQS_VISIBILITY_SECONDS="20",
        ANALYTICS_TRIGGER_POLL_SECONDS="0.2",
        ANALYTICS_AGGREGATE_CRON="0 0 1 1 *",  # keep aggregate runs out of the way
    )
    settings = Settings.from_env(env)
    first, _ = start_dev(env, tmp_path / "dev-1.log")
    try:
        # -- a second dev, on the same state folder or on the same queue from elsewhere ------
        lock_before = (settings.state_dir / "dev.lock").read_bytes()
        names_before = sorted(p.name for p in settings.state_dir.iterdir())
        elsewhere = {
            **env,
            "ANALYTICS_STATE_DIR": str(tmp_path / "elsewhere" / "state"),
            "ANALYTICS_DUCKDB_PATH": str(tmp_path / "elsewhere" / "warehouse.duckdb"),
            "DAGSTER_HOME": str(tmp_path / "elsewhere" / "dagster_home"),
        }
        for second_env, how_to_stop in (
            (env, "`analytics-pipeline stop`"),
            (elsewhere, f"`ANALYTICS_STATE_DIR={settings.state_dir} analytics-pipeline stop`"),
        ):
            second = cli(second_env, "dev", "--port", str(free_port()), timeout=60)
            assert second.returncode == 1, second.stdout + second.stderr
            assert f"pid {first.pid}" in second.stderr and how_to_stop in second.stderr
            assert f"`kill {first.pid}`" in second.stderr
        assert (settings.state_dir / "dev.lock").read_bytes() == lock_before
        assert sorted(p.name for p in settings.state_dir.iterdir()) == names_before
        assert not (tmp_path / "elsewhere").exists()
        status = cli(env, "status").stdout
        assert "Pipeline processes" in status and f"{first.pid}" in status, status

        # -- SIGKILL of dev's whole process group while the SDK sends ------------------------
        sending, before_reports = send_in_background(settings, events=6000, rate=250)
        wait_for(lambda: loaded(settings.duckdb_path), 90, 1, "a first load while sending")
        assert sending.is_alive(), "the SDK stopped sending before the kill"
        tree = {pid: command_line(pid) for pid in descendants(first.pid)}
        assert any(c.endswith("cli trigger") for c in tree.values()), tree
        assert any("dagster dev" in c for c in tree.values()), tree
        assert any("dagster_webserver" in c for c in tree.values()), tree  # a grandchild
        os.killpg(first.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        left = wait_gone(list(tree), timeout=30)
        print(f"every process of dev gone {time.monotonic() - killed_at:.1f} s after SIGKILL")
        assert not left, {pid: tree[pid] for pid in left}
        sending.join()  # it kept sending while nothing ran
    finally:
        first.stop()  # reaps it

    # -- restart onto another warehouse: it takes the stale lock, loads everything once ------
    env["ANALYTICS_DUCKDB_PATH"] = str(tmp_path / "new-warehouse.duckdb")
    new_settings = Settings.from_env(env)
    restarted, _ = start_dev(env, tmp_path / "dev-2.log")
    try:
        assert "ended without stopping" in restarted.log_path.read_text()
        sent_after = simulate(new_settings, clients=20, events=2000, rate=500, progress=False)
        before = set(before_reports[0].valid_message_ids)
        after = set(sent_after.valid_message_ids)
        assert len(before) == before_reports[0].generated and len(after) == 2000

        def settled() -> Counter[str] | None:
            assert restarted.alive(), restarted.tail()
            new = loaded(new_settings.duckdb_path)
            if new is None or not after <= new.keys():
                return None
            old = loaded(settings.duckdb_path) or Counter()
            queues = [
                sum(BatchQueue.for_settings(new_settings, dead_letters=dlq).depth().values())
                for dlq in (False, True)
            ]
            return new if before <= new.keys() | old.keys() and queues == [0, 0] else None

        new = wait_for(settled, SETTLE_SECONDS, 2, "every event accounted for")
        status = cli(env, "status").stdout
        restarted_tree = descendants(restarted.pid)
        stopped = cli(env, "stop")
    finally:
        restarted.stop()
    old = loaded(settings.duckdb_path)
    assert old is not None
    print(
        f"events sent before/around the kill: {len(before)}, in the old warehouse "
        f"{len(before & old.keys())}, in the new one {len(before & new.keys())}"
    )
    assert {m: new[m] for m in after} == dict.fromkeys(after, 1)  # all, once, in the new one
    assert not after & old.keys()  # no orphaned consumer loaded any of them into the old one
    assert set(new.values()) == {1} and set(old.values()) == {1}
    assert before <= new.keys() | old.keys()  # nothing sent around the kill was lost

    # -- status named the processes; `stop` ended the restarted dev and all it started ------
    for name in ("dev", "lifeline", "trigger", "dagster"):
        assert any(line.startswith(name) and "running" in line for line in status.splitlines())
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"stopped dev {restarted.pid}" in stopped.stdout
    assert not restarted.alive()
    assert not wait_gone(restarted_tree, timeout=10)
