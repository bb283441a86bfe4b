"""One way to build boto3 clients: endpoint, region and local credentials from `Settings`.

Against the local emulator any credentials work; when no credentials are configured and the
endpoint is a local one, fixed dummy keys are used so a fresh machine needs no AWS set-up.
Production takes credentials the standard AWS way (environment, profile, instance role).
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config

from analytics_pipeline.settings import Settings

_RETRIES = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)


def is_local_endpoint(endpoint_url: str | None) -> bool:
    return bool(endpoint_url) and ("127.0.0.1" in endpoint_url or "localhost" in endpoint_url)


def local_credentials(endpoint_url: str | None) -> dict[str, str]:
    """Dummy keys for the local emulator when the environment names none."""
    if is_local_endpoint(endpoint_url) and not os.environ.get("AWS_ACCESS_KEY_ID"):
        return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return {}


def client(service: str, settings: Settings | None = None, **overrides: Any) -> Any:
    settings = settings or Settings.from_env()
    kwargs: dict[str, Any] = {
        "region_name": settings.aws_region,
        "endpoint_url": settings.aws_endpoint_url,
        "config": _RETRIES,
    }
    kwargs.update(local_credentials(settings.aws_endpoint_url))
    kwargs.update(overrides)
    return boto3.client(service, **kwargs)
