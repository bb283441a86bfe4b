"""What the asset catalogue shows about each table: its name in the warehouse in use, its columns
(from `warehouse/tables.py`, the one declaration of every table), owners, kinds and where the code
that writes it lives. Every table asset takes its metadata from here, so the catalogue cannot
drift from the tables the loader creates.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import dagster as dg

from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.tables import SCHEMA, TABLE_COLUMNS, TABLE_LAYOUTS


def owners(settings: Settings) -> list[str]:
    return [owner.strip() for owner in settings.asset_owners.split(",") if owner.strip()]


def table_name(settings: Settings, table: str) -> str:
    """The name a user queries: `analytics.events` (DuckDB), `[project.]dataset.events`."""
    if settings.warehouse == "bigquery":
        dataset = f"{settings.bigquery_dataset}.{table}"
        return f"{settings.bigquery_project}.{dataset}" if settings.bigquery_project else dataset
    return f"{SCHEMA}.{table}"


def column_schema(settings: Settings, table: str) -> dg.TableSchema:
    """The table's columns with the warehouse's own type names and NOT NULL constraints."""
    bigquery = settings.warehouse == "bigquery"
    layout = TABLE_LAYOUTS[table]
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=column.bigquery_type if bigquery else column.sql_type,
                description=_layout_note(column.name, layout.partition_column, layout.clustering),
                constraints=dg.TableColumnConstraints(nullable=not column.not_null),
            )
            for column in TABLE_COLUMNS[table]
        ]
    )


def _layout_note(column: str, partition: str | None, clustering: tuple[str, ...]) -> str | None:
    notes = []
    if column == partition:
        notes.append("day partitions (BigQuery)")
    if column in clustering:
        notes.append(f"clustering key {clustering.index(column) + 1} (BigQuery)")
    return "; ".join(notes) or None


def table_metadata(settings: Settings, table: str) -> dict[str, Any]:
    return {
        "dagster/table_name": table_name(settings, table),
        "dagster/column_schema": column_schema(settings, table),
    }


def table_kinds(settings: Settings, *more: str) -> set[str]:
    """The warehouse in use (its icon in the UI), `table`, and any more."""
    return {settings.warehouse, "table", *more}


def code_reference(*functions: Callable[..., Any]) -> dg.CodeReferencesMetadataValue:
    """Links to the functions that write an asset Dagster does not materialize itself."""
    with warnings.catch_warnings():  # code references: a beta feature, pinned
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.CodeReferencesMetadataValue(
            code_references=[
                dg.LocalFileCodeReference(
                    file_path=inspect.getsourcefile(function) or "",
                    line_number=inspect.getsourcelines(function)[1],
                    label=f"{function.__module__}.{function.__qualname__}",
                )
                for function in functions
            ]
        )
