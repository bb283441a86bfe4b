"""What the collector tests share: their write keys and Basic auth."""

from __future__ import annotations

import base64

WRITE_KEY = "test-write-key"
OTHER_WRITE_KEY = "second-key"
WRITE_KEYS_SETTING = f"{WRITE_KEY}=test-source,{OTHER_WRITE_KEY}=other-source"


def basic_auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
