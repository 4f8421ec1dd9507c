"""The durable side of the Event queue: accepted Event invocations in SQLite, `events.db` under
SANDBOX_DATA_DIR.

A row is written (and committed) before the caller gets its 202, holds what a delivery needs after
a restart (function and version, payload, the original request id, trace id, enqueue time, completed
attempts), and is deleted once the event is done with: delivered, given up, or discarded. When the
outcome goes on to a destination, the destination's event is inserted in the same transaction that
deletes this one, so the hand-off is neither lost nor doubled by a crash.

WAL mode with synchronous=NORMAL: a commit survives the process being killed (SIGKILL, a crash),
not a power cut before the next checkpoint. Every call runs on one thread of the store's own, so
SQLite never blocks the event loop and writes happen in the order they were asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from .logs import get_logger

log = get_logger("event_store")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    request_id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    version TEXT NOT NULL,
    invoked_arn TEXT NOT NULL,
    payload BLOB NOT NULL,
    trace_id TEXT NOT NULL,
    tenant_id TEXT,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""


class EventStoreError(Exception):
    """The store cannot be written (disk full, read-only, unopenable); the message says why."""


@dataclass(frozen=True)
class StoredEvent:
    request_id: str
    function: str  # the function's name
    version: str  # the version it resolved to when accepted ($LATEST or a number)
    invoked_arn: str
    payload: bytes
    trace_id: str
    tenant_id: str | None
    enqueued_at: float  # epoch seconds: MaximumEventAgeInSeconds counts from here, across restarts
    attempts: int = 0  # attempts that ended with a function error


_COLUMNS = ", ".join(f.name for f in fields(StoredEvent))
_INSERT = f"INSERT OR REPLACE INTO events ({_COLUMNS}) VALUES ({', '.join('?' for _ in fields(StoredEvent))})"


class EventStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._problem: str | None = None
        self._closed = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-store")

    @property
    def problem(self) -> str | None:
        """Why the store cannot be used right now, if it cannot."""
        return self._problem

    async def open(self) -> list[StoredEvent]:
        """Open (or create) the database; the events a previous run left, oldest first. An unusable
        database is logged, not fatal: Event invokes are refused until it can be written."""
        try:
            return await self._run(self._load)
        except EventStoreError:
            return []

    async def add(self, event: StoredEvent) -> None:
        """Commit a newly accepted event; EventStoreError when it cannot be written."""
        await self._run(lambda db: db.execute(_INSERT, astuple(event)))

    async def attempted(self, request_id: str, attempts: int) -> None:
        update = "UPDATE events SET attempts=? WHERE request_id=?"
        await self._quietly(lambda db: db.execute(update, (attempts, request_id)))

    async def finish(self, request_id: str, follow_up: StoredEvent | None = None) -> None:
        """The event is done with; `follow_up` (its destination's event) takes its place atomically."""

        def finish(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")  # one transaction (the connection is in autocommit mode otherwise)
            try:
                if follow_up is not None:
                    db.execute(_INSERT, astuple(follow_up))
                db.execute("DELETE FROM events WHERE request_id=?", (request_id,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        await self._quietly(finish)

    async def count(self) -> int:
        """How many events are stored (0 when the store cannot be read)."""
        try:
            return await self._run(lambda db: db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except EventStoreError:
            return 0

    async def close(self) -> None:
        def close(_: sqlite3.Connection | None) -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._thread, close, None)
        self._thread.shutdown(wait=True)

    # -- on the store's thread ------------------------------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise EventStoreError("the event store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, work)

    async def _quietly(self, work: Callable[[sqlite3.Connection], Any]) -> None:
        """A write after the 202: if it fails, the event is still delivered in this run (and may be
        delivered again after a restart, or keep a stale attempt count)."""
        with contextlib.suppress(EventStoreError):
            await self._run(work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            result = work(self._connection())
        except (sqlite3.Error, OSError) as exc:
            self._problem = _describe(exc)
            log.error("event_store.write_failed", path=str(self.path), error=self._problem)
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
                self._reset()  # a damaged file: reopened (or set aside) on the next call
            raise EventStoreError(self._problem) from None
        self._problem = None
        return result

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=1000")  # someone reading it with the sqlite3 shell
            db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            db.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise
            corrupt = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            self.path.rename(corrupt)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_name(self.path.name + suffix).unlink()
            log.error("event_store.corrupt", path=str(self.path), moved_to=str(corrupt), error=str(exc))
            return self._connect()
        self.path.chmod(0o600)
        return db

    def _reset(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _load(self, db: sqlite3.Connection) -> list[StoredEvent]:
        rows = db.execute(f"SELECT {_COLUMNS} FROM events ORDER BY enqueued_at").fetchall()
        return [StoredEvent(*row) for row in rows]


def _describe(exc: sqlite3.Error | OSError) -> str:
    text = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
    if "full" in text or "No space" in text:
        return f"disk full ({text})"
    if "readonly" in text or "Read-only" in text:
        return f"read-only ({text})"
    return text
