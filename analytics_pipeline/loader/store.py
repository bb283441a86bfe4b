"""The loader's own state, outside the warehouse: what was loaded, and what is being loaded.

It answers, without a warehouse query, the questions every load asks: which batch ids are
already loaded (the ledger), which messageIds / quarantine ids are already in their table (the
key index), which (day, user) and (day, event, user) pairs the aggregates have already counted
(first-seen keys), which loads were under way when a loader stopped (intents), and which
committed loads were never reported to Dagster (reports: the loader died before it could). A
lookup is global over the retention: a copy of an event is found whatever its timestamp says.

RocksDB (through `rocksdict`) keeps it on the loader's disk: one column family for the keys,
each written with a time to live of `retention_days` (RocksDB drops expired keys in compaction,
so nothing ever scans the index to expire it), one for intents, one for reports. Keys are
16-byte BLAKE2b digests behind a one-byte kind tag: at 10^10 stored keys the chance that a new
key collides with any of them is about 10^-18, so no event is ever taken for a copy of another.
Writes are synchronous (WAL fsync): a recorded load survives a crash of the host, not only of
the process.

One process at a time: `open` takes an exclusive `flock` on the folder (waiting up to
`wait_seconds`), on top of RocksDB's own LOCK. That is the fence between two loaders: a second
loop (a restart overlapping the old one, an operator's run) waits until the first has exited,
so two workers never both insert one messageId.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import rocksdict

KEYS_FAMILY = "keys"
INTENTS_FAMILY = "intents"
REPORTS_FAMILY = "reports"
LOCK_FILE = "loader.lock"
DIGEST_BYTES = 16


class StoreBusyError(RuntimeError):
    """Another loader holds the store; it names the holder."""


def digest(kind: bytes, *parts: str | None) -> bytes:
    """The index key of a value: a kind tag and a digest of its parts (None and "" differ)."""
    text = "\x1f".join("\x00" if part is None else part for part in parts)
    hashed = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES)
    return kind + hashed.digest()


# Kind tags of the keys: one byte each, so the kinds never collide.
MESSAGE_ID = b"m"  # events: messageId
QUARANTINE_ID = b"q"  # quarantine: quarantine_id
BATCH_ID = b"B"  # the ledger: batch ids already loaded
ACTIVE_USER = b"u"  # (day, coalesce(userId, anonymousId))
IDENTIFIED_USER = b"i"  # (day, userId)
ANONYMOUS_USER = b"a"  # (day, anonymousId) of events without a userId
EVENT_USER = b"e"  # (day, type, event, coalesce(userId, anonymousId))


@dataclass
class Intent:
    """A load under way: enough to finish it after a crash (roll it forward) and record it."""

    load_id: str
    created_at: float
    keys: list[str] = field(default_factory=list)  # hex of every key the load adds
    batch_ids: list[str] = field(default_factory=list)  # batches it loads whole
    # What the warehouse needs to finish the commit (BigQuery: stream names per table).
    warehouse: dict[str, Any] = field(default_factory=dict)
    # What the load did (`LoadOutcome.to_report`), kept until it is reported (see `finish`).
    report: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        # vars, not asdict: the same JSON without a deep copy of every key (~5 % of a load).
        return json.dumps(vars(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Intent:
        return cls(**json.loads(data))

    def key_bytes(self) -> list[bytes]:
        return [bytes.fromhex(key) for key in self.keys]


class LoaderStore:
    """The index, ledger and intents of one queue's loader (see the module docstring)."""

    def __init__(self, db: rocksdict.Rdict, path: Path, lock: IO[str]) -> None:
        self._db = db
        self.path = path
        self._lock = lock
        self._keys = db.get_column_family(KEYS_FAMILY)
        self._keys_handle = db.get_column_family_handle(KEYS_FAMILY)
        self._intents = db.get_column_family(INTENTS_FAMILY)
        self._intents_handle = db.get_column_family_handle(INTENTS_FAMILY)
        self._reports = db.get_column_family(REPORTS_FAMILY)
        self._reports_handle = db.get_column_family_handle(REPORTS_FAMILY)
        self._sync = rocksdict.WriteOptions()
        self._sync.sync = True

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, path: Path, *, retention_days: int, wait_seconds: float = 0.0
    ) -> Iterator[LoaderStore]:
        """The store at `path`, held exclusively until the block ends."""
        path.mkdir(parents=True, exist_ok=True)
        lock = _acquire(path / LOCK_FILE, wait_seconds)
        try:
            options = rocksdict.Options(raw_mode=True)
            options.create_if_missing(True)
            options.create_missing_column_families(True)
            table = rocksdict.BlockBasedOptions()
            table.set_bloom_filter(10, False)  # ~1 % false positives: most lookups miss
            table.set_block_cache(rocksdict.Cache(64 * 1024 * 1024))
            options.set_block_based_table_factory(table)
            db = rocksdict.Rdict(
                str(path / "rocksdb"),
                options=options,
                column_families={
                    KEYS_FAMILY: options,
                    INTENTS_FAMILY: options,
                    REPORTS_FAMILY: options,
                },
                access_type=rocksdict.AccessType.with_ttl(retention_days * 86_400),
            )
            store = cls(db, path, lock)
            try:
                yield store
            finally:
                store._close()
        finally:
            lock.close()  # releases the flock

    def _close(self) -> None:
        # The column-family views keep the database open: drop them before closing it.
        del self._keys, self._keys_handle, self._intents, self._intents_handle
        del self._reports, self._reports_handle
        self._db.close()
        del self._db

    # -- lookups ---------------------------------------------------------------------------

    def known(self, keys: Sequence[bytes]) -> set[bytes]:
        """The subset of `keys` the store holds (within the retention)."""
        if not keys:
            return set()
        unique = list(dict.fromkeys(keys))
        found = self._keys.get(unique)
        return {key for key, value in zip(unique, found, strict=True) if value is not None}

    def loaded_batches(self, batch_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(batch_ids))
        found = self.known([digest(BATCH_ID, batch_id) for batch_id in ids])
        return {batch_id for batch_id in ids if digest(BATCH_ID, batch_id) in found}

    def is_empty(self) -> bool:
        with contextlib.suppress(StopIteration):
            next(iter(self._keys.keys()))
            return False
        return True

    # -- loads -----------------------------------------------------------------------------

    def begin(self, intent: Intent) -> None:
        """Record a load before its commit (synchronously)."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.put(intent.load_id.encode(), intent.encode(), self._intents_handle)
        self._db.write(batch, self._sync)

    def finish(self, intent: Intent) -> None:
        """The load is committed: its keys and batches in, its intent gone, its report kept
        until `reported`, in one write."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        day = str(int(time.time() // 86_400)).encode()
        for key in intent.key_bytes():
            batch.put(key, day, self._keys_handle)
        for batch_id in intent.batch_ids:
            batch.put(digest(BATCH_ID, batch_id), intent.load_id.encode(), self._keys_handle)
        batch.delete(intent.load_id.encode(), self._intents_handle)
        if intent.report:
            report = {**intent.report, "created_at": intent.created_at}
            batch.put(intent.load_id.encode(), json.dumps(report).encode(), self._reports_handle)
        self._db.write(batch, self._sync)

    def unreported(self) -> list[dict[str, Any]]:
        """Reports of committed loads that no one has reported yet, oldest first."""
        reports = [json.loads(value) for value in self._reports.values()]
        return sorted(reports, key=lambda report: report["created_at"])

    def reported(self, load_ids: Iterable[str]) -> None:
        """The loads' outcomes reached Dagster. Not synchronous: a report lost in a crash
        is only reported again."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for load_id in load_ids:
            batch.delete(load_id.encode(), self._reports_handle)
        if len(batch):
            self._db.write(batch)

    def abandon(self, intent: Intent) -> None:
        """The load was never committed (and never will be): forget it."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.delete(intent.load_id.encode(), self._intents_handle)
        self._db.write(batch, self._sync)

    def pending(self) -> list[Intent]:
        """Loads begun and neither finished nor abandoned, oldest first."""
        intents = [Intent.decode(value) for value in self._intents.values()]
        return sorted(intents, key=lambda intent: (intent.created_at, intent.load_id))

    def add_keys(self, keys: Iterable[bytes], batch_ids: Iterable[str] = ()) -> None:
        """Keys and batches already in the warehouse (a rebuild of a lost store)."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        day = str(int(time.time() // 86_400)).encode()
        for key in keys:
            batch.put(key, day, self._keys_handle)
        for batch_id in batch_ids:
            batch.put(digest(BATCH_ID, batch_id), b"rebuilt", self._keys_handle)
        self._db.write(batch, self._sync)


def _acquire(path: Path, wait_seconds: float) -> IO[str]:
    """An exclusive flock on `path` (it holds the holder's pid), waiting up to `wait_seconds`."""
    handle = open(path, "a+")  # noqa: SIM115 - held for as long as the store is open
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise StoreBusyError(
                    f"the loader store {path.parent} is in use by {holder}: one loader per "
                    "queue (it waits for the other to finish)"
                ) from None
            time.sleep(0.2)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def store_in_use(path: Path) -> bool | None:
    """Whether a live process holds the store at `path` (its flock dies with it); None when
    there is no store here to tell (it lives on another host)."""
    lock_path = path / LOCK_FILE
    if not lock_path.exists():
        return None
    with open(lock_path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # closing the file releases the shared lock
