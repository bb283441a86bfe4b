"""The run-failure alert against a real HTTP server on 127.0.0.1: one message per failed run,
none for a success, none twice across ticks, and a message an operator can act on."""

from __future__ import annotations

import dagster as dg

from analytics_pipeline.defs.operations.alerts import alert_sensor
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.webhook import WebhookReceiver

ERROR = "the warehouse refused the rows: schema mismatch on column `context`"


@dg.op
def refuse() -> None:
    raise RuntimeError(ERROR)


@dg.op
def succeed() -> None:
    return None


@dg.job
def failing_job() -> None:
    refuse()


@dg.job
def succeeding_job() -> None:
    succeed()


def _tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None) -> str:
    """One evaluation as the daemon does it (cursor in, cursor out); raises what the tick would."""
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))
    return data.cursor or ""


def _run(job: dg.JobDefinition, instance: dg.DagsterInstance) -> str:
    return job.execute_in_process(instance=instance, raise_on_error=False).run_id


def test_one_alert_per_failed_run_and_none_for_a_success() -> None:
    with WebhookReceiver() as hook, dg.DagsterInstance.ephemeral() as instance:
        settings = Settings.from_env(
            {
                "ANALYTICS_ALERT_WEBHOOK_URL": hook.url,
                "ANALYTICS_DAGSTER_UI_URL": "http://127.0.0.1:3999",
            }
        )
        sensor = alert_sensor(settings)
        cursor = _tick(sensor, instance, None)  # the first tick only sets the cursor
        failed = [_run(failing_job, instance), _run(failing_job, instance)]
        succeeded = _run(succeeding_job, instance)
        for _ in range(3):  # later ticks find nothing new
            cursor = _tick(sensor, instance, cursor)
        _run(succeeding_job, instance)
        cursor = _tick(sensor, instance, cursor)

        bodies = hook.received()
        assert len(bodies) == len(failed), bodies
        for body, run_id in zip(bodies, failed, strict=True):
            assert f"http://127.0.0.1:3999/runs/{run_id}" in body["text"]
            assert "failing_job" in body["text"]
            blocks = "\n".join(block["text"]["text"] for block in body["blocks"])
            assert ERROR in blocks and "refuse" in blocks
            assert succeeded not in body["text"]


def test_a_webhook_that_fails_once_still_gets_the_message_once() -> None:
    """A 503 is retried within the tick; the accepted message is not posted again later."""
    with WebhookReceiver(statuses=(503,)) as hook, dg.DagsterInstance.ephemeral() as instance:
        sensor = alert_sensor(Settings.from_env({"ANALYTICS_ALERT_WEBHOOK_URL": hook.url}))
        cursor = _tick(sensor, instance, None)
        run_id = _run(failing_job, instance)
        for _ in range(2):
            cursor = _tick(sensor, instance, cursor)

        bodies = hook.received()
        assert len(bodies) == 2  # the refused attempt, then the accepted one
        assert bodies[0] == bodies[1] and run_id in bodies[1]["text"]


def test_no_webhook_no_request() -> None:
    with WebhookReceiver() as hook, dg.DagsterInstance.ephemeral() as instance:
        sensor = alert_sensor(Settings.from_env({}))
        cursor = _tick(sensor, instance, None)
        _run(failing_job, instance)
        _tick(sensor, instance, cursor)
        assert hook.received() == []
