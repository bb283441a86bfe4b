"""The loader store on its own: keys, ledger and intents survive a reopen; one holder at a time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from analytics_pipeline.loader.store import (
    ACTIVE_USER,
    MESSAGE_ID,
    QUARANTINE_ID,
    Intent,
    LoaderStore,
    StoreBusyError,
    digest,
    store_in_use,
)


def open_store(path: Path, wait_seconds: float = 0.0):
    return LoaderStore.open(path, retention_days=8, wait_seconds=wait_seconds)


def test_digests_separate_kinds_parts_and_none_from_empty() -> None:
    assert digest(MESSAGE_ID, "x") != digest(QUARANTINE_ID, "x")
    assert digest(ACTIVE_USER, "2026-12-01", "ab") != digest(ACTIVE_USER, "2026-12-01a", "b")
    assert digest(ACTIVE_USER, "d", None) != digest(ACTIVE_USER, "d", "")
    assert digest(MESSAGE_ID, "x") == digest(MESSAGE_ID, "x")
    assert len(digest(MESSAGE_ID, "x")) == 17


def test_a_finished_load_is_known_after_a_reopen_and_an_abandoned_one_is_not(
    tmp_path: Path,
) -> None:
    done = Intent("load-1", 1.0, [digest(MESSAGE_ID, "a").hex()], ["batch-1"])
    dropped = Intent("load-2", 2.0, [digest(MESSAGE_ID, "b").hex()], ["batch-2"])
    open_one = Intent("load-3", 3.0, [digest(MESSAGE_ID, "c").hex()], ["batch-3"], {"s": "x"})
    with open_store(tmp_path) as store:
        assert store.is_empty()
        for intent in (done, dropped, open_one):
            store.begin(intent)
        store.finish(done)
        store.abandon(dropped)

    with open_store(tmp_path) as store:
        keys = [digest(MESSAGE_ID, value) for value in "abc"]
        assert store.known(keys) == {keys[0]}
        assert store.loaded_batches(["batch-1", "batch-2", "batch-3"]) == {"batch-1"}
        assert store.pending() == [open_one]  # what a restarted loader rolls forward
        assert not store.is_empty()


def test_a_second_holder_is_refused_and_named_until_the_first_closes(tmp_path: Path) -> None:
    assert store_in_use(tmp_path) is None  # no store here: nothing to tell
    with open_store(tmp_path):
        assert store_in_use(tmp_path) is True
        with pytest.raises(StoreBusyError, match="pid"), open_store(tmp_path):
            pass
    assert store_in_use(tmp_path) is False
    with open_store(tmp_path):
        pass


def test_the_store_is_free_once_its_holder_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from analytics_pipeline.loader.store import LoaderStore
                with LoaderStore.open(Path({str(tmp_path)!r}), retention_days=8):
                    print("held", flush=True)
                    time.sleep(120)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert store_in_use(tmp_path) is True
        holder.kill()
        holder.wait(timeout=30)
        assert store_in_use(tmp_path) is False
        with open_store(tmp_path, wait_seconds=5) as store:
            assert store.is_empty()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_committed_load_stays_unreported_until_it_is_reported_across_reopens(
    tmp_path: Path,
) -> None:
    """The report of a load goes in with its keys (one write) and out only when reported."""
    report = {"load_ids": ["load-1"], "results": {}, "by_day": [], "days": {}}
    reported = Intent("load-1", 1.0, [digest(MESSAGE_ID, "a").hex()], ["batch-1"], report=report)
    silent = Intent("load-2", 2.0, [digest(MESSAGE_ID, "b").hex()], ["batch-2"])  # no report
    with open_store(tmp_path) as store:
        store.begin(reported)
        assert store.unreported() == []  # not committed yet: nothing to report
        store.finish(reported)
        store.begin(silent)
        store.finish(silent)
    with open_store(tmp_path) as store:
        assert store.unreported() == [{**report, "created_at": 1.0}]
        store.reported([])  # nothing: no write
        store.reported(["load-1"])
    with open_store(tmp_path) as store:
        assert store.unreported() == []
        assert store.loaded_batches(["batch-1", "batch-2"]) == {"batch-1", "batch-2"}
