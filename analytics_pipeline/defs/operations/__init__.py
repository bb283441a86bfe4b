"""Operations domain: what an operator launches from the UI (replays, redrive) and the alerts
that tell them to."""

from __future__ import annotations

import dagster as dg

from analytics_pipeline.defs.operations.alerts import ALERT_SENSOR_NAME, alert_sensor
from analytics_pipeline.defs.operations.jobs import (
    DLQ_REDRIVE_JOB,
    DLQ_REPLAY_JOB,
    QUARANTINE_REPLAY_JOB,
    operation_jobs,
)
from analytics_pipeline.settings import Settings

__all__ = [
    "ALERT_SENSOR_NAME",
    "DLQ_REDRIVE_JOB",
    "DLQ_REPLAY_JOB",
    "QUARANTINE_REPLAY_JOB",
    "operations_definitions",
]


def operations_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(jobs=operation_jobs(settings), sensors=[alert_sensor(settings)])
