"""Write keys -> sources: which sender an HTTP request comes from, as Segment's API tells it.

A Segment or RudderStack SDK names its source by a write key, sent as the HTTP Basic username
(`Authorization: Basic base64("<key>:")`) or as `writeKey` in the JSON body. Write keys are not
secrets (every browser that loads a page carries one); they route events to a source. So the
key itself is never stored: events carry the source's name and a short hash of the key
(`write_key_id`), which is enough to tell two keys of one source apart when one is rotated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import msgspec


@dataclass(frozen=True)
class Source:
    name: str
    write_key_id: str
    context_json: bytes  # `{"name": ..., "write_key_id": ...}`, the value of `context.source`


def write_key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def parse_write_keys(setting: str) -> dict[str, Source]:
    """`ANALYTICS_WRITE_KEYS`: comma-separated `key` or `key=source`; a bare key's source is
    named after its hash (never after the key)."""
    keys: dict[str, Source] = {}
    for entry in setting.split(","):
        key, _, name = (part.strip() for part in entry.strip().partition("="))
        if not key:
            continue
        key_id = write_key_id(key)
        name = name or key_id
        keys[key] = Source(
            name, key_id, msgspec.json.encode({"name": name, "write_key_id": key_id})
        )
    return keys


def basic_auth_username(header: str | None) -> str | None:
    """The username of an `Authorization: Basic ...` header (the write key), else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None
