"""Simulated mobile traffic, sent through the real SDK to the stream.

Each simulated client is a device: its own anonymous id, blob context, partition key and a clock
that is off by up to `max_clock_skew` seconds, so the pipeline's skew correction has work to do.
Some devices identify to a user id part-way through. All devices share ONE `Client` (one
consumer thread, one Kinesis connection): 100 devices at 1,000 events/s cost a producer thread
and a consumer thread. The client runs with `on_full="block"`, so a run at full speed applies
back-pressure instead of dropping events, and every event the report lists was sent or counted
as failed.

Invalid events (`invalid_ratio`) go through `enqueue_raw`, one fault each, and the report counts
them by the `Reason` the pipeline should quarantine them under. Message ids come from uuid4 even
with a seed: a seeded id would repeat across runs and be dropped as a duplicate downstream.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tqdm import tqdm

from analytics_pipeline.client import Client, ClientStats, Device
from analytics_pipeline.client.client import kinesis_client
from analytics_pipeline.client.encoding import format_timestamp
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.local.processes import stop_on_signals
from analytics_pipeline.settings import Settings

DEFAULT_MAX_CLOCK_SKEW_SECONDS = 300.0
IDENTIFYING_SHARE = 0.4
STATUS_EVERY_SECONDS = 10.0
# The SDK's default timer. Devices created together flush together, so the stream sees a burst
# every interval; the e2e benchmark flushes every second for a steadier stream.
DEFAULT_FLUSH_INTERVAL_SECONDS = 5.0

TRACK_EVENTS = (
    "Video Recorded",
    "Video Viewed",
    "Video Shared",
    "Comment Posted",
    "Search Performed",
    "Item Purchased",
    "Button Tapped",
    "Notification Opened",
)
SCREENS = ("Feed", "Camera", "Editor", "Profile", "Search", "Settings", "Inbox", "Checkout")
FILTERS = ("vivid", "mono", "warm", "cool", "grain", "fade", "sharpen", "vignette")
EXPERIMENTS = (("new_editor", ("A", "B")), ("feed_ranking_v3", ("control", "treatment")))
DEVICE_MODELS = (
    ("iOS", "Apple", ("iPhone15,2", "iPhone16,1", "iPhone14,5"), ("17.6", "18.1", "18.2")),
    ("Android", "Samsung", ("SM-S918B", "SM-A546B"), ("13", "14", "15")),
    ("Android", "Google", ("Pixel 8", "Pixel 9 Pro"), ("14", "15")),
)
APP_VERSIONS = ("4.1.3", "4.2.0", "4.2.1")
LOCALES = ("en-US", "de-DE", "fr-FR", "es-MX", "ja-JP", "pt-BR")


@dataclass
class SimulationReport:
    clients: int
    requested_events: int
    elapsed_seconds: float = 0.0
    valid_message_ids: list[str] = field(default_factory=list)
    invalid_message_ids: list[str] = field(default_factory=list)  # those that carry an id
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    events_by_type: Counter[str] = field(default_factory=Counter)
    identified_devices: int = 0
    clock_skews_seconds: list[float] = field(default_factory=list)
    stats: ClientStats | None = None
    valid: int = 0
    invalid: int = 0

    @property
    def generated(self) -> int:
        return self.valid + self.invalid

    def summary(self) -> str:
        rate = self.generated / self.elapsed_seconds if self.elapsed_seconds else 0.0
        lines = [
            f"{self.generated} events from {self.clients} simulated devices in "
            f"{self.elapsed_seconds:.1f} s ({rate:,.0f} events/s): "
            f"{self.valid} valid, {self.invalid} invalid",
        ]
        if self.invalid_by_reason:
            reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.invalid_by_reason.items()))
            lines.append(f"invalid by expected reason: {reasons}")
        if self.stats is not None:
            s = self.stats
            lines.append(
                f"client: sent={s.sent} failed={s.failed} dropped={s.dropped} "
                f"blobs={s.blobs_sent} put_records_calls={s.put_records_calls} "
                f"record_errors={s.record_errors}"
            )
        return "\n".join(lines)


@dataclass
class _SimulatedDevice:
    handle: Device
    skew_seconds: float
    identify_at: int | None  # the device's n-th event is an identify (None: stays anonymous)
    user_id: str
    session_id: str
    events_sent: int = 0

    def now(self) -> datetime:
        """The device's own (wrong) clock."""
        return datetime.now(UTC) + timedelta(seconds=self.skew_seconds)


@dataclass(frozen=True)
class _TrafficOptions:
    invalid_ratio: float
    seed: int | None
    max_clock_skew: float
    keep_ids: bool  # every messageId in the report (a bounded run) or counts only (forever)


class _Traffic:
    """Generates one realistic (or deliberately broken) event at a time on a random device."""

    def __init__(
        self,
        client: Client,
        report: SimulationReport,
        options: _TrafficOptions,
        settings: Settings,
    ) -> None:
        if report.clients < 1:
            raise ValueError("clients must be at least 1")
        if not 0.0 <= options.invalid_ratio <= 1.0:
            raise ValueError("invalid_ratio must be between 0 and 1")
        self._client = client
        self._report = report
        self._rng = random.Random(options.seed)
        self._invalid_ratio = options.invalid_ratio
        self._settings = settings
        self._keep_ids = options.keep_ids
        self._faults: tuple[Callable[[_SimulatedDevice, dict[str, Any]], Any], ...] = tuple(
            getattr(self, f"_fault_{reason.value}") for reason in _FAULT_REASONS
        )
        self.devices = [self._new_device(options.max_clock_skew) for _ in range(report.clients)]
        report.clock_skews_seconds = [device.skew_seconds for device in self.devices]

    def _new_device(self, max_clock_skew: float) -> _SimulatedDevice:
        rng = self._rng
        skew = rng.uniform(-max_clock_skew, max_clock_skew)
        os_name, manufacturer, models, os_versions = rng.choice(DEVICE_MODELS)
        context = {
            "app": {"name": "demo", "version": rng.choice(APP_VERSIONS), "build": "4200"},
            "os": {"name": os_name, "version": rng.choice(os_versions)},
            "device": {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "manufacturer": manufacturer,
                "model": rng.choice(models),
            },
            "locale": rng.choice(LOCALES),
            "network": {"wifi": rng.random() < 0.6, "carrier": "Simulated Mobile"},
        }
        handle = self._client.device(
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            context=context,
            clock=lambda skew=skew: datetime.now(UTC) + timedelta(seconds=skew),
        )
        identifies = rng.random() < IDENTIFYING_SHARE
        return _SimulatedDevice(
            handle=handle,
            skew_seconds=skew,
            identify_at=rng.randint(0, 20) if identifies else None,
            user_id=f"u-{rng.getrandbits(40):010x}",
            session_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        )

    # -- valid events ----------------------------------------------------------------------------

    def emit(self) -> None:
        device = self._rng.choice(self.devices)
        if self._invalid_ratio and self._rng.random() < self._invalid_ratio:
            self._emit_invalid(device)
        else:
            self._emit_valid(device)
        device.events_sent += 1

    def _emit_valid(self, device: _SimulatedDevice) -> None:
        rng = self._rng
        handle = device.handle
        if device.identify_at is not None and device.events_sent >= device.identify_at:
            device.identify_at = None
            self._report.identified_devices += 1
            kind = "identify"
            message_id = handle.identify(
                device.user_id,
                {"plan": rng.choice(("free", "pro", "team")), "signup_source": "organic"},
            )
        else:
            roll = rng.random()
            if roll < 0.72:
                kind = "track"
                name = rng.choice(TRACK_EVENTS)
                message_id = handle.track(name, self._properties(device, name))
            elif roll < 0.97:
                kind = "screen"
                message_id = handle.screen(
                    rng.choice(SCREENS), {"session_id": device.session_id, "from_push": False}
                )
            else:
                kind = "group"
                message_id = handle.group(
                    f"g-{rng.randint(1, 50)}", {"name": "Simulated team", "seats": 5}
                )
        self._report.valid += 1
        self._report.events_by_type[kind] += 1
        if self._keep_ids:
            self._report.valid_message_ids.append(message_id)

    def _properties(self, device: _SimulatedDevice, name: str) -> dict[str, Any]:
        """Nested properties of about 500 bytes of JSON, shaped like a video app's."""
        rng = self._rng
        experiment, variants = rng.choice(EXPERIMENTS)
        return {
            "video": {
                "id": f"{rng.getrandbits(64):016x}",
                "duration_ms": rng.randint(1_000, 60_000),
                "resolution": {"width": 1080, "height": 1920},
                "fps": rng.choice((30, 60)),
                "codec": rng.choice(("hevc", "h264")),
                "filters": rng.sample(FILTERS, rng.randint(0, 3)),
                "has_audio": rng.random() < 0.9,
            },
            "session": {
                "id": device.session_id,
                "sequence": device.events_sent,
                "foreground": True,
            },
            "experiment": {"name": experiment, "variant": rng.choice(variants)},
            "source": rng.choice(("camera", "gallery", "feed", "share_sheet")),
            "battery_level": round(rng.random(), 2),
            "storage_free_mb": rng.randint(200, 64_000),
            "action": name.lower().replace(" ", "_"),
            "referrer": {"type": "organic", "campaign": None},
            "price": round(rng.uniform(0.99, 49.99), 2) if name == "Item Purchased" else None,
        }

    # -- invalid events: one fault each, named after the reason the pipeline should give ----------

    def _emit_invalid(self, device: _SimulatedDevice) -> None:
        index = self._rng.randrange(len(self._faults))
        reason = _FAULT_REASONS[index]
        base = {
            "type": "track",
            "event": self._rng.choice(TRACK_EVENTS),
            "messageId": str(uuid.uuid4()),
            "anonymousId": device.handle.anonymous_id,
            "originalTimestamp": format_timestamp(device.now()),
            "properties": {"simulated_fault": reason.value},
        }
        message = self._faults[index](device, base)
        message_id = device.handle.enqueue_raw(message)
        self._report.invalid += 1
        self._report.invalid_by_reason[reason.value] += 1
        if self._keep_ids and message_id is not None:
            self._report.invalid_message_ids.append(message_id)

    def _fault_invalid_type(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        return {**event, "type": "purchase"}

    def _fault_missing_message_id(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        return {key: value for key, value in event.items() if key != "messageId"}

    def _fault_message_id_too_long(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        return {**event, "messageId": "-".join(str(uuid.uuid4()) for _ in range(3))}

    def _fault_missing_identity(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        return {key: value for key, value in event.items() if key != "anonymousId"}

    def _fault_missing_event_name(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        return {key: value for key, value in event.items() if key != "event"}

    def _fault_invalid_field_type(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        return {**event, "userId": 12345}

    def _fault_invalid_timestamp(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        return {**event, "originalTimestamp": "yesterday at noon"}

    def _fault_timestamp_too_old(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        days = self._settings.late_arrival_days + 5
        then = device.now() - timedelta(days=days)
        return {**event, "originalTimestamp": format_timestamp(then)}

    def _fault_timestamp_in_future(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        ahead = timedelta(seconds=self._settings.future_tolerance_seconds, days=1)
        return {**event, "timestamp": format_timestamp(datetime.now(UTC) + ahead)}

    def _fault_event_too_large(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        padding = "x" * (self._settings.max_event_bytes + 1024)
        return {**event, "properties": {"simulated_fault": "event_too_large", "blob": padding}}

    def _fault_event_not_object(self, device: _SimulatedDevice, event: dict[str, Any]) -> Any:
        return ["not", "an", "event"]


_FAULT_REASONS = (
    Reason.INVALID_TYPE,
    Reason.MISSING_MESSAGE_ID,
    Reason.MESSAGE_ID_TOO_LONG,
    Reason.MISSING_IDENTITY,
    Reason.MISSING_EVENT_NAME,
    Reason.INVALID_FIELD_TYPE,
    Reason.INVALID_TIMESTAMP,
    Reason.TIMESTAMP_TOO_OLD,
    Reason.TIMESTAMP_IN_FUTURE,
    Reason.EVENT_TOO_LARGE,
    Reason.EVENT_NOT_OBJECT,
)


def _paced(rate: float | None, stop: threading.Event | None = None) -> Iterator[int]:
    """Yield 0, 1, 2, ... at `rate` per second overall (None: as fast as possible).

    Sleeps only when more than 5 ms ahead, so a high rate costs a few wake-ups per second rather
    than one per event.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive (or None for as fast as possible)")
    start = time.monotonic()
    index = 0
    while stop is None or not stop.is_set():
        if rate is not None:
            ahead = start + index / rate - time.monotonic()
            if ahead > 0.005:
                if stop is not None:
                    stop.wait(ahead)
                    continue
                time.sleep(ahead)
        yield index
        index += 1


@contextlib.contextmanager
def _simulation(
    settings: Settings,
    report: SimulationReport,
    traffic: _TrafficOptions,
    kinesis: Any,
    flush_interval: float = DEFAULT_FLUSH_INTERVAL_SECONDS,
) -> Iterator[tuple[Client, _Traffic]]:
    """The SDK client and the traffic it sends; on exit the client is closed (everything queued
    is sent) and the report gets the elapsed time and the client's final counts."""
    client = Client(
        settings.stream_name,
        kinesis=kinesis if kinesis is not None else kinesis_client(settings),
        on_full="block",
        context={"app": {"name": "demo"}},
        flush_interval=flush_interval,
    )
    started = time.monotonic()
    try:
        yield (
            client,
            _Traffic(client, report, traffic, settings),
        )
    finally:
        client.close()
        report.elapsed_seconds = time.monotonic() - started
        report.stats = client.stats


def simulate(
    settings: Settings,
    *,
    clients: int,
    events: int,
    rate: float | None,
    progress: bool = True,
    invalid_ratio: float = 0.0,
    seed: int | None = None,
    kinesis: Any = None,
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW_SECONDS,
) -> SimulationReport:
    """Send `events` events from `clients` devices, then flush; returns what was generated.

    `kinesis` overrides the boto3 client built from `settings` (tests pass a double).
    """
    report = SimulationReport(clients=clients, requested_events=events)
    options = _TrafficOptions(invalid_ratio, seed, max_clock_skew, keep_ids=True)
    simulation = _simulation(settings, report, options, kinesis)
    bar = tqdm(total=events, unit="ev", disable=not progress, smoothing=0.1)
    with simulation as (client, traffic), bar:
        for index in _paced(rate):
            if index >= events:
                break
            traffic.emit()
            if index % 100 == 99:
                bar.update(100)
        bar.update(report.generated - bar.n)
        bar.set_postfix_str("flushing")
        client.close()
        stats = client.stats
        bar.set_postfix_str(f"sent={stats.sent} failed={stats.failed}")
    return report


def run_forever(
    settings: Settings,
    rate: float,
    *,
    clients: int = 100,
    invalid_ratio: float = 0.0,
    seed: int | None = None,
    kinesis: Any = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = print,
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW_SECONDS,
    status_every_seconds: float = STATUS_EVERY_SECONDS,
    on_status: Callable[[SimulationReport, ClientStats], None] | None = None,
    flush_interval: float = DEFAULT_FLUSH_INTERVAL_SECONDS,
) -> SimulationReport:
    """A steady stream at `rate` events/s until SIGTERM, Ctrl-C or `stop` is set; then the
    client is closed (everything queued is sent) and the report returned. Keeps counts, not ids,
    so memory stays flat however long it runs. `on_status` (instead of a status line) lets a
    benchmark follow the counts while it runs; `flush_interval` is the SDK's flush timer."""
    stop = stop or threading.Event()
    report = SimulationReport(clients=clients, requested_events=0)
    options = _TrafficOptions(invalid_ratio, seed, max_clock_skew, keep_ids=False)
    simulation = _simulation(settings, report, options, kinesis, flush_interval)
    with stop_on_signals((signal.SIGTERM,), stop), simulation as (client, traffic):
        say(f"simulating {clients} devices at {rate:g} events/s to {settings.stream_name}")
        next_status = time.monotonic() + status_every_seconds
        try:
            for _ in _paced(rate, stop):
                traffic.emit()
                if time.monotonic() >= next_status:
                    next_status += status_every_seconds
                    if on_status is None:
                        say(_status_line(report, client.stats))
                    else:
                        on_status(report, client.stats)
        except KeyboardInterrupt:
            pass
    say(report.summary())
    return report


def _status_line(report: SimulationReport, stats: ClientStats) -> str:
    return (
        f"generated={report.generated} sent={stats.sent} queued={stats.queued} "
        f"failed={stats.failed} dropped={stats.dropped}"
    )
