"""Throughput of `parse_blob` against decode-only, on realistic gzip blobs (not a test).

Run: .venv/bin/python -m benchmarks.parse_bench
"""

from __future__ import annotations

import time
import zlib

import msgspec

from analytics_pipeline.contract import parse_blob
from analytics_pipeline_testkit.blobs import REALISTIC_RECEIVED_AT as RECEIVED_AT
from analytics_pipeline_testkit.blobs import realistic_blobs


def best_of(repeats: int, function) -> float:  # type: ignore[no-untyped-def]
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> None:
    total = 10_000
    blobs = realistic_blobs(total)
    texts = [zlib.decompress(blob, wbits=31) for blob in blobs]
    average = sum(len(t) for t in texts) / total
    accepted = sum(
        len(parse_blob(b, received_at=RECEIVED_AT, source="bench").accepted) for b in blobs
    )
    assert accepted == total, accepted

    def gunzip_and_decode() -> None:
        for blob in blobs:
            msgspec.json.decode(zlib.decompress(blob, wbits=31))

    def decode_plain() -> None:
        for text in texts:
            msgspec.json.decode(text)

    def parse_gzip() -> None:
        for blob in blobs:
            parse_blob(blob, received_at=RECEIVED_AT, source="bench")

    def parse_plain() -> None:
        for text in texts:
            parse_blob(text, received_at=RECEIVED_AT, source="bench")

    print(f"{len(blobs)} gzip blobs, {total} events, {average:.0f} bytes/event (decompressed)")
    functions = {
        "gunzip + msgspec.json.decode": gunzip_and_decode,
        "parse_blob(gzip blob)": parse_gzip,
        "msgspec.json.decode(plain blob)": decode_plain,
        "parse_blob(plain blob)": parse_plain,
    }
    # Interleaved rounds, best of each: a busy neighbour slows all four alike.
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(15):
        for name, function in functions.items():
            best[name] = min(best[name], best_of(1, function))
    rates = {name: total / seconds for name, seconds in best.items()}
    for name, rate in rates.items():
        print(f"{name:34s} {rate:>10,.0f} events/s")
    gzip_ratio = rates["parse_blob(gzip blob)"] / rates["gunzip + msgspec.json.decode"]
    plain_ratio = rates["parse_blob(plain blob)"] / rates["msgspec.json.decode(plain blob)"]
    mixed_ratio = rates["parse_blob(gzip blob)"] / rates["msgspec.json.decode(plain blob)"]
    print(f"ratio, gzip blobs, both sides gunzip:    {gzip_ratio:.2f}")
    print(f"ratio, plain blobs:                      {plain_ratio:.2f}")
    print(f"ratio, parse gzip vs decode plain:       {mixed_ratio:.2f}")


if __name__ == "__main__":
    main()
