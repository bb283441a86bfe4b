"""Alerts: one message per failed run to ANALYTICS_ALERT_WEBHOOK_URL, in the body Slack's
incoming webhooks take (`text`, plus `blocks` for Slack's layout); Mattermost, Rocket.Chat,
Discord's /slack endpoint and most chat tools accept it too.

Dagster's run-failure sensor reads run failures from the event log behind a cursor, so each
failed run is posted once (a run retried by `run_retries` is a new run: its failure is another
message, which says which attempt it was). Successes are never posted; a load loop run that
ends at its window (ANALYTICS_LOOP_SECONDS) ends as a success. A webhook that does not answer is
tried three times within the evaluation; if it still fails, the sensor tick shows the error and
the run gets an engine event saying so (Dagster moves the cursor on: no message twice).
"""

import json
import time
import urllib.error
import urllib.request
from typing import Any

import dagster as dg

from analytics_pipeline.settings import Settings

ALERT_SENSOR_NAME = "run_failure_alert"
POST_ATTEMPTS = 3
POST_TIMEOUT_SECONDS = 10.0
MAX_ERROR_CHARS = 1_500


def alert_message(
    run: dg.DagsterRun, error: str | None, settings: Settings, *, at: float | None = None
) -> dict[str, Any]:
    """The Slack-compatible body for one failed run."""
    url = f"{settings.dagster_ui_url.rstrip('/')}/runs/{run.run_id}"
    attempt = int(run.tags.get("dagster/retry_number", "0")) + 1
    partition = run.tags.get("dagster/partition")
    what = f"*{run.job_name}*" + (f" (partition {partition})" if partition else "")
    summary = f"Dagster run failed: {run.job_name} run {run.run_id[:8]}, attempt {attempt}"
    detail = (error or "no error message").strip()[:MAX_ERROR_CHARS]
    moment = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at or time.time()))
    return {
        "text": f"{summary}: {url}",
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f":red_circle: {what} failed (attempt {attempt}) at {moment}\n"
                    f"<{url}|Open run {run.run_id[:8]} in Dagster>",
                },
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{detail}```"}},
        ],
    }


def post_json(url: str, body: dict[str, Any]) -> None:
    """POST with retries on network errors and 5xx; a 4xx is the webhook refusing: raised."""
    data = json.dumps(body).encode()
    for attempt in range(1, POST_ATTEMPTS + 1):
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=POST_TIMEOUT_SECONDS) as response:
                response.read()
                return
        except urllib.error.HTTPError as error:
            if error.code < 500 or attempt == POST_ATTEMPTS:
                raise
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            if attempt == POST_ATTEMPTS:
                raise
        time.sleep(2.0 ** (attempt - 1))


def alert_sensor(settings: Settings) -> dg.SensorDefinition:
    configured = bool(settings.alert_webhook_url)

    @dg.run_failure_sensor(
        name=ALERT_SENSOR_NAME,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=10,
        description=(
            "Posts one message per failed run to ANALYTICS_ALERT_WEBHOOK_URL."
            if configured
            else "ANALYTICS_ALERT_WEBHOOK_URL is not set: failed runs are only shown here."
        ),
    )
    def _alert(context: dg.RunFailureSensorContext) -> None:
        # Returning None lets the sensor go on to the next failed run within the same tick.
        if not configured:
            return
        post_json(
            settings.alert_webhook_url,
            alert_message(context.dagster_run, failure_text(context), settings),
        )
        context.log.info("alert posted for run %s", context.dagster_run.run_id)

    return _alert


def failure_text(context: dg.RunFailureSensorContext) -> str:
    """What failed: the run's failure message and its first failed step's error."""
    parts = [context.failure_event.message or ""] if context.failure_event else []
    for event in context.get_step_failure_events()[:1]:
        error = getattr(event.event_specific_data, "error", None)
        while error is not None and error.cause is not None:  # the op's own exception, not
            error = error.cause  # Dagster's "Error occurred while executing op" wrapper
        if error is not None:
            parts.append(f"{event.step_key}: {error.message.strip()}")
    return "\n".join(part for part in parts if part)
