"""The collector's IAM policy grants exactly the call its code makes: a Kinesis client, used
only through the SDK's `KinesisSender`, whose one call is PutRecords."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_collector_may_only_put_records_on_the_stream() -> None:
    policy = json.loads((REPO / "deploy/iam/collector-policy.json").read_text())
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == ["kinesis:PutRecords"]
    assert statement["Resource"] == "arn:aws:kinesis:*:*:stream/analytics-events"

    code = "".join(p.read_text() for p in (REPO / "analytics_pipeline/collector").glob("*.py"))
    assert set(re.findall(r'aws\.client\("(\w+)"', code)) == {"kinesis"}
    assert "KinesisSender(" in code and ".kinesis." not in code  # never the client itself
    sender = (REPO / "analytics_pipeline/client/sender.py").read_text()
    assert set(re.findall(r"self\.kinesis\.(\w+)\(", sender)) == {"put_records"}
