"""Values into GoogleSQL: typed query parameters, and literals for ids we generate ourselves.

bqemulator refuses query parameters inside multi-statement scripts, so scripts take values as
script variables read from tables or as literals built here from validated values: never from
event content (anything unusual is refused, not escaped).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from google.cloud import bigquery

_SAFE_LITERAL = re.compile(r"[A-Za-z0-9 _.:/+=@-]*")


def string_literal(value: str) -> str:
    """A quoted GoogleSQL literal for ids we generate; anything unusual is refused, not escaped."""
    if not _SAFE_LITERAL.fullmatch(value):
        raise ValueError(f"refusing to put {value!r} into SQL: unexpected characters")
    return f"'{value}'"


def timestamp_literal(moment: datetime) -> str:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"TIMESTAMP '{moment.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


def date_literal(day: date) -> str:
    return f"DATE '{day.isoformat()}'"


def micros(moment: datetime) -> int:
    """Microseconds since the epoch: how the Storage Write API takes a TIMESTAMP."""
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def days(day: date) -> int:
    """Days since the epoch: how the Storage Write API takes a DATE."""
    return (day - date(1970, 1, 1)).days


def naive_utc(value: Any) -> Any:
    """DuckDB's representation: TIMESTAMP values as naive UTC datetimes."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def parameter(value: Any) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    """A positional parameter (`?`) typed from the Python value; naive datetimes are UTC."""
    if isinstance(value, list | tuple):
        items = list(value)
        element = parameter(items[0]).type_ if items else "STRING"
        return bigquery.ArrayQueryParameter(None, element, [parameter(v).value for v in items])
    if isinstance(value, bool):
        return bigquery.ScalarQueryParameter(None, "BOOL", value)
    if isinstance(value, int):
        return bigquery.ScalarQueryParameter(None, "INT64", value)
    if isinstance(value, float):
        return bigquery.ScalarQueryParameter(None, "FLOAT64", value)
    if isinstance(value, Decimal):
        return bigquery.ScalarQueryParameter(None, "NUMERIC", value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return bigquery.ScalarQueryParameter(None, "TIMESTAMP", moment)
    if isinstance(value, date):
        return bigquery.ScalarQueryParameter(None, "DATE", value)
    if isinstance(value, bytes):
        return bigquery.ScalarQueryParameter(None, "BYTES", value)
    return bigquery.ScalarQueryParameter(None, "STRING", None if value is None else str(value))
