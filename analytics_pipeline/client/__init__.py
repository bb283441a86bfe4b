"""Python client SDK: Segment-style calls, batched into gzip JSON blobs on Kinesis.

from analytics_pipeline.client import Client

with Client("analytics-events", context={"app": {"name": "demo"}}) as analytics:
    analytics.track("Video Recorded", {"duration_ms": 5400})
"""

from analytics_pipeline.client.client import Client, ClientStats, Device
from analytics_pipeline.client.event_queue import (
    ClientClosedError,
    EventTooLargeError,
    QueueFullError,
)
from analytics_pipeline.client.sender import SendError

__all__ = [
    "Client",
    "ClientClosedError",
    "ClientStats",
    "Device",
    "EventTooLargeError",
    "QueueFullError",
    "SendError",
]
