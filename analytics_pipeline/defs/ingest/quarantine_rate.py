"""The `quarantine_rate` check: the share of freshly loaded rows that were rejected, over a
sliding window of the load loop's own counts (no query: $0 on every warehouse).

The loop adds each load and reports an evaluation at most once a minute, and at once when the
verdict changes, so the check's history stays readable while loads run every second. A window
with fewer than MIN_ROWS rows passes: a handful of rows says nothing about a client release.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

import dagster as dg

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.defs.ingest.keys import EVENTS_QUARANTINE, QUARANTINE_RATE_CHECK
from analytics_pipeline.loader import LoadOutcome
from analytics_pipeline.settings import Settings

MIN_ROWS = 100
REPORT_EVERY_SECONDS = 60.0

QUARANTINE_RATE_DESCRIPTION = (
    "Fails (warning) when more than ANALYTICS_QUARANTINE_RATE_MAX of the rows loaded within "
    "ANALYTICS_QUARANTINE_RATE_WINDOW_MINUTES were rejected (judged from 100 rows on). Usual "
    "causes: a client release sending bad events, or a contract limit that is too tight. The "
    "metadata lists the top reasons; their rows are in `events_quarantine` (`analytics-pipeline "
    'query "SELECT reason, detail, payload FROM analytics.events_quarantine ORDER BY '
    'received_at DESC LIMIT 20"`). After fixing a limit (e.g. a wider ANALYTICS_LATE_ARRIVAL_'
    "DAYS), launch `quarantine_replay_job` with that reason."
)


@dataclass
class RejectionWindow:
    window_seconds: float
    max_rate: float
    loads: deque[tuple[float, int, int, Counter[str]]] = field(default_factory=deque)
    reported_at: float | None = None
    reported_passed: bool | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RejectionWindow:
        return cls(settings.quarantine_rate_window_minutes * 60, settings.quarantine_rate_max)

    def add(self, outcome: LoadOutcome, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        accepted = outcome.result(BatchKind.EVENTS).rows_inserted
        rejected = outcome.result(BatchKind.QUARANTINE).rows_inserted
        if accepted or rejected:
            self.loads.append((now, accepted, rejected, Counter(outcome.rejected_by_reason)))
        while self.loads and self.loads[0][0] < now - self.window_seconds:
            self.loads.popleft()

    def result(self) -> dg.AssetCheckResult:
        accepted = sum(load[1] for load in self.loads)
        rejected = sum(load[2] for load in self.loads)
        reasons: Counter[str] = sum((load[3] for load in self.loads), Counter())
        rows = accepted + rejected
        rate = rejected / rows if rows else 0.0
        passed = rows < MIN_ROWS or rate <= self.max_rate
        top = ", ".join(f"{reason}: {count}" for reason, count in reasons.most_common(5))
        return dg.AssetCheckResult(
            asset_key=EVENTS_QUARANTINE,
            check_name=QUARANTINE_RATE_CHECK,
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "rejected_rate": round(rate, 4),
                "threshold": self.max_rate,
                "rows": rows,
                "rejected": rejected,
                "window_minutes": round(self.window_seconds / 60, 1),
                "top_reasons": top or "none",
                "judged": rows >= MIN_ROWS,
            },
        )

    def evaluation_due(self, now: float | None = None) -> dg.AssetCheckEvaluation | None:
        """The evaluation to report now, or None (reported less than a minute ago, same
        verdict)."""
        now = time.monotonic() if now is None else now
        result = self.result()
        recent = self.reported_at is not None and now - self.reported_at < REPORT_EVERY_SECONDS
        if recent and result.passed == self.reported_passed:
            return None
        self.reported_at, self.reported_passed = now, result.passed
        return dg.AssetCheckEvaluation(
            asset_key=EVENTS_QUARANTINE,
            check_name=QUARANTINE_RATE_CHECK,
            passed=result.passed,
            severity=result.severity,
            metadata=result.metadata,
        )
