"""SQLite for the relay: one writer thread with group commit, a small pool of readers.

Every write is a plain function ``fn(db, *args)`` (``db`` is a
``sqlite_utils.Database`` over the writer's connection) handed to
``await Database.write(fn, *args)``. The writer thread takes everything queued
(up to ``max_batch`` operations), runs the operations one after another in a
single transaction, commits once and only then resolves every caller's future.
So N concurrent writers cost one fsync, not N. An operation that raises is
rolled back alone: its caller gets the exception, the rest of the batch
commits. (The batch first runs without savepoints, the common case; if an
operation raises, the transaction is rolled back and the batch runs again with
each operation inside its own SAVEPOINT.)

Durability: WAL with ``synchronous=FULL`` syncs the log at every commit, and a
future resolves only after its commit returned, so a write the caller saw
succeed survives a crash of the process or of the machine. Each batch that
changed rows also counts itself in ``write_mark``; after its COMMIT, still
under the write lock and before any future resolves, the count is copied into
the write-mark file beside the database (relay/integrity.py), so a database
that later loses acknowledged writes is refused when it is opened.

Several processes may share the file (``comity-relay serve --workers N``, and
``comity-relay token`` beside a running relay): each writer takes an exclusive
``flock`` on ``<name>-writer.lock`` around its transaction, so writers queue in
the kernel and wake the moment the lock is free, instead of polling SQLite's
busy handler (which sleeps 1, 2, 5... ms between tries).

Reads run on ``readers`` threads, each with its own read-only connection, each
call inside one read transaction (one consistent snapshot). WAL lets them run
while the writer commits.

Rules for ``fn``: touch only the database, be quick (the whole batch waits),
never BEGIN/COMMIT/ROLLBACK (savepoints are fine), and be safe to run again:
when an operation of the batch raises, or SQLite aborts the whole transaction
(disk full, I/O error), the writer runs the batch's other operations again in
a new one. A caller cancelled while its
operation is queued does not stop it: it may still commit.

On open the schema is created or upgraded from ``relay.schema.MIGRATIONS``;
before upgrading a database that holds data, an online backup named after the
old version is written next to it (``relay.db.v1.bak``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import sqlite_utils

from .constants import RETRY_DAMAGED, RETRY_DISK_FULL
from .integrity import (Health, Refused, WriteMark, compare, create_mark, fsync_dir, mark_path,
                        read_mark, read_write_count, write_count)
from .schema import MIGRATIONS
from .store_error import StoreError, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: most operations in one transaction: bounds how long a batch holds its callers
MAX_BATCH = 256
#: reader threads; reads are short indexed look-ups
DEFAULT_READERS = 4
#: seconds a connection waits on a lock; only checkpoints and a backup tool ever contend
BUSY_TIMEOUT = 10.0
#: bytes a WAL file is truncated to after a checkpoint
WAL_SIZE_LIMIT = 64 * 1024 * 1024
#: seconds between checkpoints by the background checkpointer
CHECKPOINT_INTERVAL = 0.25
#: WAL pages after which a writer checkpoints by itself (only if the checkpointer falls behind)
WRITER_CHECKPOINT_PAGES = 16_384
#: prepared statements kept per connection (the store has fewer distinct ones)
STATEMENT_CACHE = 256


class Damaged(Unavailable):
    """the relay's database is damaged: it accepts no writes until an operator repairs it"""

    headers = {"Retry-After": str(RETRY_DAMAGED)}


class DiskFull(Unavailable):
    """the relay's disk is full: retry later"""

    headers = {"Retry-After": str(RETRY_DISK_FULL)}


class SchemaError(StoreError):
    """the database file has a schema this relay cannot use"""

    code = "unavailable"


class _Op:
    __slots__ = ("fn", "args", "loop", "future")

    def __init__(self, fn, args, loop, future):
        self.fn, self.args, self.loop, self.future = fn, args, loop, future


_STOP = object()                 # queue sentinel: drain what is before it, then stop


def _settle(outcomes: list) -> None:
    """Runs on the caller's event loop: hand each waiting caller its result."""
    for future, ok, value in outcomes:
        if future.done():        # the caller was cancelled; its operation still ran
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class Database:
    """The relay database file. Create with ``await Database.open(path)``."""

    def __init__(self, path: Path, readers: int, max_batch: int):
        self.path = path
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closing = False
        self._writer: sqlite_utils.Database | None = None
        self._write_lock: int | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._readers = concurrent.futures.ThreadPoolExecutor(
            readers, thread_name_prefix="comity-db-read")
        #: committed transactions that changed rows (each costs one fsync of the WAL)
        self.commits = 0
        #: operations that ran (committed or failed)
        self.operations = 0
        #: largest batch taken in one transaction so far
        self.largest_batch = 0
        #: damage and full disks seen while serving (relay/integrity.py)
        self.health = Health(path.parent)
        #: the write-mark file (relay/integrity.py); None for a schema without ``write_mark``
        self._mark: WriteMark | None = None

    @classmethod
    async def open(cls, path: str | os.PathLike, *, readers: int = DEFAULT_READERS,
                   max_batch: int = MAX_BATCH,
                   migrations: Sequence[str] = MIGRATIONS) -> "Database":
        """Open (creating or upgrading) the database at ``path`` and start the writer."""
        self = cls(Path(path), readers, max_batch)
        started: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._writer_main, args=(started, tuple(migrations)),
            name="comity-db-write", daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(started)
        except BaseException:
            self._readers.shutdown(wait=False)
            raise
        self._checkpointer = threading.Thread(target=self._checkpointer_main,
                                              name="comity-db-checkpoint", daemon=True)
        self._checkpointer.start()
        return self

    # -- public API ---------------------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(db, *args)`` in the writer's next batch; return its result once committed."""
        if self._closing:
            raise Unavailable("the database is closing")
        if self.health.damaged is not None:     # never receipt onto a damaged file
            raise Damaged()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Op(fn, args, loop, future))
        return await future

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(db, *args)`` on a reader thread, inside one read transaction."""
        if self._closing:
            raise Unavailable("the database is closing")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, fn, args)

    def queue_depth(self) -> int:
        """Write operations waiting for the writer (not counting the batch it is running)."""
        return self._queue.qsize()

    async def close(self) -> None:
        """Refuse new work, finish every queued read and write, stop the threads."""
        if self._closing:
            return
        self._closing = True
        await asyncio.to_thread(self._readers.shutdown, True)
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)

    # -- connections --------------------------------------------------------------------------

    def _connect(self, *, reader: bool) -> sqlite_utils.Database:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False, cached_statements=STATEMENT_CACHE)
        conn.row_factory = sqlite3.Row
        if not reader:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                conn.close()
                raise SchemaError(f"cannot put {self.path} in WAL mode (got {mode!r})")
            # after a checkpoint, shrink a WAL that a burst made large
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            # Checkpoints are the checkpointer thread's job, off the write lock; this is a backstop.
            conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
        # FULL: the WAL is fsynced at every commit, so a commit survives power loss
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        if reader:
            conn.execute("PRAGMA query_only=ON")
        return sqlite_utils.Database(conn, execute_plugins=False)

    def _run_read(self, fn: Callable, args: tuple) -> Any:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect(reader=True)
            with self._reader_lock:
                self._reader_conns.append(db.conn)
        conn = db.conn
        conn.execute("BEGIN")
        try:
            return fn(db, *args)
        except sqlite3.DatabaseError as exc:
            kind = self.health.saw(exc, "a read")
            if kind == "corrupt":
                raise Damaged() from None
            if kind == "full":
                raise DiskFull() from None
            raise
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    # -- the checkpointer thread --------------------------------------------------------------

    def _checkpointer_main(self) -> None:
        """Copy committed WAL pages into the database file every CHECKPOINT_INTERVAL.

        PASSIVE: it never waits for readers or writers and never holds the write lock,
        so writers (of every worker process) no longer pay for checkpoints inside their
        transactions, which the write lock makes everyone else wait for.
        """
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous=FULL")   # fsync the database after copying
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    if self.health.saw(exc, "a checkpoint") is None:
                        log.exception("checkpoint failed; the writers checkpoint if the WAL grows")
        finally:
            conn.close()

    # -- the writer thread --------------------------------------------------------------------

    def _writer_main(self, started: concurrent.futures.Future, migrations: tuple) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            marked = read_mark(mark_path(self.path))
            if new and marked:
                raise Refused(f"the database {self.path} is missing, but its write mark says "
                              f"{marked} write batches were acknowledged")
            # Before the writer connects: a database that lost writes is refused untouched.
            before = 0 if new else read_write_count(self.path)
            compare(self.path, before or 0, marked)
            self._writer = self._connect(reader=False)
            if new:
                os.chmod(self.path, 0o600)   # the -wal and -shm files inherit this mode
            self._write_lock = os.open(self.path.with_name(self.path.name + "-writer.lock"),
                                       os.O_RDWR | os.O_CREAT, 0o600)
            _migrate(self._writer.conn, self.path, migrations)
            self._open_mark(marked, before)
        except BaseException as exc:
            if self._writer is not None:
                self._writer.close()
            if self._write_lock is not None:
                os.close(self._write_lock)
            started.set_exception(exc)
            return
        started.set_result(None)
        try:
            self._writer_loop()
        finally:
            self._writer.close()
            os.close(self._write_lock)
            if self._mark is not None:
                self._mark.close()

    def _open_mark(self, marked: int | None, before: int | None) -> None:
        """Open the write-mark file, creating it for a new database or one that predates it."""
        counted = write_count(self._writer.conn)
        if counted is None:                     # a schema without write_mark (tests' old versions)
            return
        path = mark_path(self.path)
        if marked is None:
            if before is not None and before > 0:
                # The database has counted writes, so the file existed: it was removed.
                raise Refused(f"the write mark {path} of the database {self.path} is missing, "
                              "so whether the database lost acknowledged writes cannot be told",
                              kind="mark")
            create_mark(path, counted)
        self._mark = WriteMark(path)

    def _writer_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            ops = [item for item in batch if item is not _STOP]
            if ops and self.health.damaged is not None:   # queued before the damage was seen
                self._resolve(ops, {op: (False, Damaged()) for op in ops})
            elif ops:
                try:
                    outcomes = self._run_batch(ops)
                except Exception as exc:      # a bug or a broken connection: fail, keep serving
                    kind = self.health.saw(exc, "a write")
                    if kind is None:
                        log.exception("write batch failed")
                    self._abort()
                    error = {"corrupt": Damaged(), "full": DiskFull()}.get(
                        kind, Unavailable(f"the database failed: {exc}"))
                    outcomes = {op: (False, error) for op in ops}
                self._resolve(ops, outcomes)
            if len(ops) != len(batch):
                return

    def _abort(self) -> None:
        conn = self._writer.conn
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")

    def _run_batch(self, ops: list[_Op]) -> dict[_Op, tuple[bool, Any]]:
        conn = self._writer.conn
        self.largest_batch = max(self.largest_batch, len(ops))
        self.operations += len(ops)
        changes = conn.total_changes
        fcntl.flock(self._write_lock, fcntl.LOCK_EX)   # other processes' writers wait here
        try:
            outcomes = self._run_plain(ops)
            if outcomes is None:
                outcomes = self._run_isolated(ops)
            self._storage_errors(outcomes)
            pending = [op for op in ops if op in outcomes and outcomes[op][0]]
            if pending and self.health.damaged is not None:   # commit nothing onto it
                for op in pending:
                    outcomes[op] = (False, Damaged())
                pending = []
            if not pending:
                self._abort()
                return outcomes
            wrote = conn.total_changes != changes   # a commit that wrote nothing costs no fsync
            try:
                seq = self._count(conn) if wrote else None
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._abort()
                kind = self.health.saw(exc, "a commit")
                error = {"corrupt": Damaged(), "full": DiskFull()}.get(
                    kind, Unavailable(f"the database could not commit: {exc}"))
                for op in pending:
                    outcomes[op] = (False, error)
                return outcomes
            if wrote:
                self.commits += 1
                self.health.wrote()             # only a commit that wrote pages proves space
            if seq is not None:
                # Still under the write lock, so marks of all processes are written in order;
                # and before any caller is answered, so no answer outruns its mark.
                try:
                    self._mark.write(seq)
                except OSError as exc:
                    # After a failed fsync the kernel may have dropped the data: stop writing.
                    if self.health.saw(exc, "writing the write mark") is None:
                        self.health.broken(exc, "writing the write mark")
                    error = Unavailable("the write is stored but could not be recorded: retry")
                    for op in pending:
                        outcomes[op] = (False, error)
            return outcomes
        finally:
            fcntl.flock(self._write_lock, fcntl.LOCK_UN)

    def _count(self, conn: sqlite3.Connection) -> int | None:
        """Count this batch in ``write_mark`` (same transaction); the new count."""
        if self._mark is None:
            return None
        return conn.execute("UPDATE write_mark SET seq = seq + 1 RETURNING seq").fetchone()[0]

    def _storage_errors(self, outcomes: dict) -> None:
        """An operation that failed because the file is damaged or the disk full: note it,
        and answer its caller with the storage's refusal, not SQLite's words."""
        for op, (ok, value) in list(outcomes.items()):
            if not ok and isinstance(value, (sqlite3.DatabaseError, OSError)):
                kind = self.health.saw(value, "a write")
                if kind is not None:
                    outcomes[op] = (False, Damaged() if kind == "corrupt" else DiskFull())

    def _run_plain(self, ops: list[_Op]) -> dict[_Op, tuple[bool, Any]] | None:
        """The common case: the batch in one transaction, no savepoints.

        Savepoints cost two statements per operation, and every statement hands
        the GIL to the event loop and back. If an operation raises, this rolls
        the transaction back and returns None, and the batch runs again with a
        savepoint around each operation (``_run_isolated``); a batch of one
        operation needs no second run, its rollback is its isolation.

        Consecutive operations with the same function run together through
        ``fn.bulk(db, [args, ...])`` when the function has one: it returns each
        operation's ``(ok, value)`` (and must write nothing for those that fail);
        if it raises, the batch runs isolated, one by one.
        """
        conn, db = self._writer.conn, self._writer
        outcomes: dict[_Op, tuple[bool, Any]] = {}
        conn.execute("BEGIN IMMEDIATE")
        start = 0
        while start < len(ops):
            op = ops[start]
            end = start + 1
            while end < len(ops) and ops[end].fn is op.fn:
                end += 1
            bulk = getattr(op.fn, "bulk", None)
            if bulk is not None and end - start > 1:
                group = ops[start:end]
                try:
                    outcomes.update(zip(group, bulk(db, [item.args for item in group])))
                except Exception:
                    self._abort()
                    return None
                start = end
                continue
            for op in ops[start:end]:
                try:
                    value = op.fn(db, *op.args)
                except Exception as exc:
                    self._abort()
                    if len(ops) == 1:
                        return {op: (False, exc)}
                    return None
                if not conn.in_transaction:
                    if len(ops) == 1:
                        return {op: (False, RuntimeError("a write operation ended the transaction"))}
                    return None
                outcomes[op] = (True, value)
            start = end
        return outcomes

    def _run_isolated(self, ops: list[_Op]) -> dict[_Op, tuple[bool, Any]]:
        """The batch with a savepoint around each operation, so one that raises is rolled
        back alone; leaves the transaction open for the caller to commit."""
        conn, db = self._writer.conn, self._writer
        outcomes: dict[_Op, tuple[bool, Any]] = {}
        pending = ops
        while True:
            conn.execute("BEGIN IMMEDIATE")
            lost = None
            for op in pending:
                conn.execute("SAVEPOINT comity_op")
                try:
                    value = op.fn(db, *op.args)
                except Exception as exc:
                    outcomes[op] = (False, exc)
                    if not conn.in_transaction:      # SQLite aborted the whole transaction
                        lost = op
                        break
                    conn.execute("ROLLBACK TO comity_op")
                    conn.execute("RELEASE comity_op")
                    continue
                if not conn.in_transaction:
                    outcomes[op] = (False, RuntimeError("a write operation ended the transaction"))
                    lost = op
                    break
                conn.execute("RELEASE comity_op")
                outcomes[op] = (True, value)
            if lost is None:
                return outcomes
            # Everything before `lost` was rolled back with it: run the survivors again.
            self._abort()
            pending = [op for op in pending
                       if op is not lost and (op not in outcomes or outcomes[op][0])]
            if not pending:
                return outcomes

    @staticmethod
    def _resolve(ops: list[_Op], outcomes: dict) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = defaultdict(list)
        for op in ops:
            ok, value = outcomes[op]
            by_loop[op.loop].append((op.future, ok, value))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:          # that event loop is closed: nobody is waiting
                pass


# -- schema versions ------------------------------------------------------------------------------

def _schema_version(conn: sqlite3.Connection) -> int:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "schema_version" in tables:
        return conn.execute("SELECT version FROM schema_version").fetchone()[0]
    if tables:
        raise SchemaError("the file is an SQLite database, but not a comity relay database")
    return 0


def _backup(conn: sqlite3.Connection, path: Path, version: int) -> Path:
    """Copy the live database to ``<name>.v<version>.bak`` beside it, durably."""
    target = path.with_name(f"{path.name}.v{version}.bak")
    n = 1
    while target.exists():                     # never overwrite an earlier backup
        target = path.with_name(f"{path.name}.v{version}.{n}.bak")
        n += 1
    partial = target.with_name(target.name + ".part")
    copy = sqlite3.connect(partial)
    try:
        conn.backup(copy)                      # online: a consistent snapshot, page by page
    finally:
        copy.close()
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(partial, 0o600)
    os.replace(partial, target)                # a backup file is complete or absent
    fsync_dir(path.parent)
    return target


def _migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[str]) -> None:
    """Bring the database to ``len(migrations)``, one transaction per step."""
    version, target = _schema_version(conn), len(migrations)
    if version > target:
        raise SchemaError(f"the database is at schema version {version}, newer than this "
                          f"relay understands ({target}): run a newer comity-relay")
    if version == target:
        return
    if version > 0:
        saved = _backup(conn, path, version)
        log.warning("upgrading %s from schema version %d to %d; backup in %s",
                    path, version, target, saved)
    for step in range(version, target):
        create = "CREATE TABLE schema_version (version INTEGER NOT NULL);" if step == 0 else ""
        script = (f"BEGIN IMMEDIATE;\n{create}\n{migrations[step]}\n;"
                  f"DELETE FROM schema_version; INSERT INTO schema_version VALUES ({step + 1});"
                  "\nCOMMIT;")
        try:
            conn.executescript(script)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise SchemaError(f"migration to schema version {step + 1} failed: {exc}") from exc
    fsync_dir(path.parent)                     # the database and WAL file names are durable
