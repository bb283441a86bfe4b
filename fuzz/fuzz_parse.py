"""Coverage-guided fuzzing of the wire contract parser (atheris / libFuzzer).

    make fuzz                                   # 300 s
    make fuzz FUZZ_ARGS="-max_total_time=3600"  # longer
    .venv/bin/python fuzz/fuzz_parse.py -runs=2000               # what the test suite runs

Properties checked on every input: `parse_blob` never raises, a blob is either rejected whole
(one row, no message id) or every batch element becomes exactly one accepted or rejected row,
every reason is a known code, accepted rows survive the batch encoding round trip, and the
same input parses to the same result twice (the Lambda's retries rely on that). The fuzzer
mutates raw bytes, so a quarter of inputs are gzipped first to reach past the gzip check, and
inputs starting 0x02 are batch elements put into a valid blob envelope; the seed corpus is the
bad-input catalogue (its events also as 0x02 seeds).
"""

from __future__ import annotations

import contextlib
import gzip
import sys
import zlib
from datetime import UTC, datetime
from pathlib import Path

import atheris
import msgspec

with atheris.instrument_imports(include=["analytics_pipeline"]):
    from analytics_pipeline.contract import (
        batches,
        blob_quarantine_id,
        event_quarantine_id,
        is_blob_rejection,
        parse_blob,
    )
    from analytics_pipeline.contract.limits import Limits
    from analytics_pipeline.contract.reasons import Reason

RECEIVED_AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
# Small limits so the fuzzer reaches every limit branch with small inputs.
LIMITS = Limits(
    max_blob_bytes=65_536,
    max_decompressed_bytes=131_072,
    max_events_per_blob=20,
    max_event_bytes=2_048,
    max_nesting_depth=12,
)
REASONS = frozenset(reason.value for reason in Reason)


def check(data: bytes) -> None:
    if data[:1] == b"\x01":  # route a share of inputs through gzip
        data = gzip.compress(data[1:], mtime=0)
    elif data[:1] == b"\x02":  # and a share into a valid envelope, to reach the event checks
        data = b'{"sentAt":"2026-11-29T12:00:00Z","context":{"a":1},"batch":[' + data[1:] + b"]}"
    result = parse_blob(data, received_at=RECEIVED_AT, source="fuzz", limits=LIMITS)
    assert result.accepted or result.rejected or _batch_length(data) == 0
    for row in result.rejected:
        assert row.reason in REASONS, row.reason
    if any(is_blob_rejection(row) for row in result.rejected):
        assert len(result.rejected) == 1 and not result.accepted
        assert result.rejected[0].message_id is None
        assert result.rejected[0].quarantine_id == blob_quarantine_id(data)
    else:  # every batch element is exactly one row, its id from its content or position
        elements = _batch_length(data)
        assert len(result.accepted) + len(result.rejected) == elements, elements
        for row in result.rejected:
            payload = row.payload.encode()
            assert any(
                row.quarantine_id == event_quarantine_id(payload, row.message_id, "fuzz", i)
                for i in range(elements)
            ), row
    for row in result.accepted:
        assert 0 < len(row.message_id) <= LIMITS.max_message_id_chars
    if result.accepted:
        encoded = batches.encode_rows(result.accepted)
        assert len(batches.decode_event_rows(encoded)) == len(result.accepted)
    if result.rejected:
        encoded = batches.encode_rows(result.rejected)
        assert len(batches.decode_quarantine_rows(encoded)) == len(result.rejected)
    assert parse_blob(data, received_at=RECEIVED_AT, source="fuzz", limits=LIMITS) == result


def _batch_length(data: bytes) -> int:
    """Elements of the blob's batch by an independent decode (only for accepted blobs)."""
    text = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return len(msgspec.json.decode(text, type=_BatchOnly).batch)


class _BatchOnly(msgspec.Struct):
    batch: list[msgspec.Raw]


def write_seed_corpus(folder: Path) -> None:
    """The catalogue's inputs (those small enough to be useful seeds) as corpus files."""
    from analytics_pipeline_testkit.catalogue import CATALOGUE, Build

    folder.mkdir(parents=True, exist_ok=True)
    build = Build(now=RECEIVED_AT, tag="seed")
    for entry in CATALOGUE:
        data = entry.build(build)
        if len(data) > 4_096:
            continue
        # Valid gzip seeds the gzip route with its content; other bytes are the seed as they are.
        with contextlib.suppress(OSError, EOFError, zlib.error):
            data = b"\x01" + gzip.decompress(data)
        (folder / entry.name).write_bytes(data)
        text = data[1:] if data[:1] == b"\x01" else data
        start, end = text.find(b'"batch": ['), text.rfind(b"]")
        if start >= 0 and end > start:
            (folder / f"{entry.name}.events").write_bytes(b"\x02" + text[start + 10 : end])


def main(argv: list[str]) -> None:
    """libFuzzer arguments; the first folder given (default below) is seeded and grown."""
    folders = [arg for arg in argv[1:] if not arg.startswith("-")]
    if not folders:
        # Outside the tracked files: libFuzzer adds every new interesting input to it.
        folders = [str(Path(__file__).resolve().parents[1] / ".analytics-pipeline" / "fuzz-corpus")]
        argv = [*argv, folders[0]]
    write_seed_corpus(Path(folders[0]))
    atheris.Setup(argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
