"""When a cron schedule runs, per billing month, counted day by day (croniter parses the fields).

Iterating a minute-level schedule tick by tick over a year takes seconds; a cron string is a set
of minutes times a set of hours on the days it matches, so the matching days and the times of
day are enough, and they tell the cost model how full a day's partition is at each tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from croniter import croniter

from analytics_pipeline.cost.prices import HOURS_PER_MONTH

_REFERENCE_YEAR = 2026  # not a leap year: 365 days = 8,760 h = 12 billing months of 730 h
_MONTHS_PER_YEAR = 365 * 24 / HOURS_PER_MONTH
_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


@dataclass(frozen=True)
class Schedule:
    expression: str
    days_per_month: float  # days it runs on, in an average 730-hour month
    minutes_of_day: tuple[int, ...]  # when it runs on those days, minutes after midnight UTC

    @property
    def ticks_per_month(self) -> float:
        return self.days_per_month * len(self.minutes_of_day)

    def as_json(self) -> dict[str, object]:
        return {"cron": self.expression, "ticks_per_month": round(self.ticks_per_month, 3)}


def schedule(expression: str) -> Schedule:
    fields = croniter.expand(expression)[0]
    if len(fields) != 5:
        raise ValueError(f"expected a 5-field cron string, got {expression!r}")
    minutes, hours, days_of_month, months, days_of_week = (
        _values(field, low, high) for field, (low, high) in zip(fields, _FIELD_RANGES, strict=True)
    )
    # cron's rule: when both day fields are restricted, a day matching either one runs.
    either_day = fields[2] != ["*"] and fields[4] != ["*"]
    day = date(_REFERENCE_YEAR, 1, 1)
    matching_days = 0
    while day.year == _REFERENCE_YEAR:
        in_month = day.day in days_of_month
        in_week = day.isoweekday() % 7 in days_of_week  # cron: 0 = Sunday
        if day.month in months and ((in_month or in_week) if either_day else in_month and in_week):
            matching_days += 1
        day += timedelta(days=1)
    return Schedule(
        expression,
        matching_days / _MONTHS_PER_YEAR,
        tuple(sorted(60 * hour + minute for hour in hours for minute in minutes)),
    )


def ticks_per_month(expression: str) -> float:
    return schedule(expression).ticks_per_month


def _values(field: list[int | str], low: int, high: int) -> set[int]:
    if field == ["*"]:
        return set(range(low, high + 1))
    values = set()
    for value in field:
        if not isinstance(value, int):  # 'L', '#' forms: not used by this pipeline
            raise ValueError(f"unsupported cron field value {value!r}")
        values.add(0 if (low, high) == (0, 6) and value == 7 else value)
    return values
