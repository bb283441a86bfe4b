"""Another process holding the DuckDB file: we wait for it politely, or say clearly who blocks.

The holder is a real second process (DuckDB's lock is per process, not per connection).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse, WarehouseBusyError
from analytics_pipeline.warehouse.tables import SCHEMA
from analytics_pipeline_testkit.loading import load_once
from analytics_pipeline_testkit.rows import event, staged

HOLD_SECONDS = 2.0

HOLDER = """
import sys, time, duckdb
connection = duckdb.connect(sys.argv[1])  # read-write: nobody else may open the file now
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
connection.close()
"""


@contextmanager
def held_read_write(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Yields once the other process has the file open read-write."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=10)


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouse:
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb", open_timeout_seconds=30)
    load_once(warehouse, [staged([event("m-1")])], warehouse.path.parent / "store")
    return warehouse


@pytest.mark.e2e
def test_query_and_load_wait_for_the_other_process(warehouse: DuckDBWarehouse) -> None:
    with held_read_write(warehouse.path, HOLD_SECONDS):
        started = time.monotonic()
        answer = warehouse.query(f"SELECT count(*) FROM {SCHEMA}.events")
        waited = time.monotonic() - started
        loaded = load_once(warehouse, [staged([event("m-2")])], warehouse.path.parent / "store")

    assert answer.rows == [(1,)]
    assert waited >= HOLD_SECONDS / 2  # it really was blocked, and waited rather than failed
    assert loaded.rows_inserted == 1 and loaded.reconciles
    assert warehouse.table_row_counts()["events"] == 2


@pytest.mark.e2e
def test_a_short_timeout_names_the_file_and_the_other_process(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    DuckDBWarehouse(path).ensure_schema()
    impatient = DuckDBWarehouse(path, open_timeout_seconds=0.3)

    with held_read_write(path, HOLD_SECONDS):
        with pytest.raises(WarehouseBusyError) as query_error:
            impatient.query("SELECT 1")
        with pytest.raises(WarehouseBusyError):
            load_once(impatient, [staged([event("m-1")])], impatient.path.parent / "store")

    message = str(query_error.value)
    assert str(path) in message and "another process" in message
    assert impatient.query("SELECT 1").rows == [(1,)]  # fine again once released
