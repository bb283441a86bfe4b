"""The handler's batch compression: ISA-L when installed, zlib otherwise; both plain gzip."""

from __future__ import annotations

import zlib

import pytest

from analytics_pipeline.contract.batches import decompress
from analytics_pipeline.ingest import packing

NDJSON = b'{"message_id":"m-1","type":"track"}\n' * 500


@pytest.mark.parametrize("deflate", ["installed", "zlib fallback"])
def test_batches_are_deterministic_gzip_the_loader_reads(
    deflate: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if deflate == "zlib fallback":
        monkeypatch.setattr(packing, "_deflate", zlib)
    compressed = packing.compress_batch(NDJSON)

    assert compressed[:2] == b"\x1f\x8b"  # gzip, not a raw zlib stream
    assert compressed[4:8] == b"\x00\x00\x00\x00"  # mtime 0: equal content, equal bytes
    assert decompress(compressed) == NDJSON
    assert packing.compress_batch(NDJSON) == compressed
    assert len(compressed) < len(NDJSON) // 10
