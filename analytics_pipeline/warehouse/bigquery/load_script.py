"""The load transaction: one multi-statement script that moves a staged load into its table.

It updates the kind's fence row (so two loads of one kind conflict and one retries instead of
both passing the checks), re-reads the ledger, looks up which staged keys the table already
holds within the dedupe window (keys and window bounds are script variables read from the
staging table, so constants to the planner: the partition filter and clustering prune),
inserts the rest and writes the ledger rows. COMMIT makes rows and ledger visible together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date

from analytics_pipeline.warehouse.base import StagedBatch
from analytics_pipeline.warehouse.bigquery.sql import date_literal, string_literal
from analytics_pipeline.warehouse.tables import LOADED_BATCHES_COLUMNS, LoadSpec

# SQS keeps a message 14 days at most (DLQ redrive keeps the first enqueue time), so no batch
# can come back later than that: ledger look-ups read only this many days of partitions.
LEDGER_LOOKBACK_DAYS = 15


def load_script(
    spec: LoadSpec,
    sql_table: Callable[[str], str],
    staging: str,
    fence: str,
    ledger: str,
    fresh: Sequence[StagedBatch],
    received: Mapping[str, int],
    dedupe_window_days: int,
) -> str:
    """The script; its last statement selects (fresh batch ids, keys already there, loaded_at).

    Values are literals of validated ids, dates and integers, or script variables: query
    parameters do not work inside scripts on bqemulator, and event content never enters SQL.
    """
    table, key, window = sql_table(spec.table), spec.key, spec.window_column
    stage, ledger_table = sql_table(staging), sql_table(ledger)
    batches = ", ".join(
        f"STRUCT({string_literal(batch.batch_id)} AS batch_id, "
        f"{date_literal(date.fromisoformat(batch.day))} AS day, "
        f"{int(batch.row_count)} AS rows_declared, "
        f"{int(received[batch.batch_id])} AS rows_received)"
        for batch in fresh
    )
    wire_names = [column.name for column in spec.wire_columns]
    columns = [*wire_names, "loaded_at"]
    select_list = ", ".join(
        f"PARSE_JSON(s.`{name}`, wide_number_mode => 'round')"
        if name in spec.json_columns
        else f"s.`{name}`"
        for name in wire_names
    )
    window_days = int(dedupe_window_days)
    kind = string_literal(spec.kind.value)
    return f"""
DECLARE v_loaded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP();
DECLARE v_batches ARRAY<STRUCT<batch_id STRING, day DATE, rows_declared INT64,
  rows_received INT64>> DEFAULT [{batches}];
DECLARE v_staged STRUCT<keys ARRAY<STRING>, low TIMESTAMP, high TIMESTAMP> DEFAULT (
  SELECT AS STRUCT IFNULL(ARRAY_AGG(`{key}`), []) AS keys,
    TIMESTAMP_SUB(MIN(`{window}`), INTERVAL {window_days} DAY) AS low,
    TIMESTAMP_ADD(MAX(`{window}`), INTERVAL {window_days} DAY) AS high
  FROM {stage});
DECLARE v_fresh ARRAY<STRING>;
DECLARE v_existing ARRAY<STRING>;
BEGIN TRANSACTION;
UPDATE {sql_table(fence)} SET load_id = {string_literal(staging)},
  updated_at = v_loaded_at WHERE kind = {kind};
SET v_fresh = (
  SELECT IFNULL(ARRAY_AGG(b.batch_id), []) FROM UNNEST(v_batches) AS b
  WHERE b.batch_id NOT IN (
    SELECT l.batch_id FROM {ledger_table} AS l
    WHERE l.batch_id IN (SELECT x.batch_id FROM UNNEST(v_batches) AS x)
      AND l.loaded_at >= TIMESTAMP_SUB(v_loaded_at, INTERVAL {LEDGER_LOOKBACK_DAYS} DAY)));
SET v_existing = (
  SELECT IFNULL(ARRAY_AGG(DISTINCT t.`{key}`), []) FROM {table} AS t
  WHERE t.`{key}` IN UNNEST(v_staged.keys)
    AND t.`{window}` BETWEEN v_staged.low AND v_staged.high);
INSERT INTO {table} ({", ".join(f"`{name}`" for name in columns)})
SELECT {select_list}, v_loaded_at FROM {stage} AS s
WHERE s.staged_batch_id IN UNNEST(v_fresh) AND s.`{key}` NOT IN UNNEST(v_existing);
INSERT INTO {ledger_table} ({", ".join(f"`{c.name}`" for c in LOADED_BATCHES_COLUMNS)})
SELECT b.batch_id, {kind}, b.day, b.rows_declared,
  IFNULL(n.inserted, 0), b.rows_received - IFNULL(n.inserted, 0), v_loaded_at
FROM UNNEST(v_batches) AS b
LEFT JOIN (
  SELECT s.staged_batch_id, COUNT(*) AS inserted FROM {stage} AS s
  WHERE s.`{key}` NOT IN UNNEST(v_existing) GROUP BY s.staged_batch_id
) AS n ON n.staged_batch_id = b.batch_id
WHERE b.batch_id IN UNNEST(v_fresh);
COMMIT TRANSACTION;
SELECT v_fresh AS fresh, v_existing AS existing, v_loaded_at AS loaded_at;
"""
