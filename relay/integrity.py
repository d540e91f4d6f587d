"""What the relay knows about its own storage: the write mark, and damage seen while serving.

**The write mark.** The database counts its acknowledged writes: every group commit that
changed a row also adds one to ``write_mark.seq``, in the same transaction (relay/db.py). After
the COMMIT returned, and before any caller of the batch hears of it, the writer copies that
count into a small file beside the database, ``<stem>.hwm`` (``relay.hwm``), and fdatasyncs it.
So the file never runs ahead of what the database durably holds, and every write the relay
acknowledged (a signed receipt included) is counted in it. A database whose count is below the
file's has lost acknowledged writes (a deleted or damaged WAL, a restored old copy, a missing
file): ``compare`` refuses it, and the relay does not start on it.

The file is named after the database's stem, not ``relay.db.hwm``, so that removing
``relay.db*`` does not remove the evidence with it.

File format (``MARK_SIZE`` bytes): two slots, at offsets 0 and ``SLOT_SPAN``, each
``MAGIC | seq (8 bytes, big-endian) | BLAKE2b-128(MAGIC | seq)``. Count ``n`` is written into
slot ``n % 2`` with one ``pwrite`` and one ``fdatasync``; the reader takes the largest count
among the slots that check. A write torn by a crash spoils one slot only, and the other still
holds the previous count, which is never ahead of the database: a crash can never make the
file unreadable or too high. Only when neither slot checks is the file damaged.

**Damage while serving.** ``Health`` holds what the storage reported since start: an SQLite
corruption error makes the relay ``damaged`` for good (writes refused, /healthz 503); a full
disk makes it ``disk-full`` until its file system has room again. Each is logged once (a full
disk at most once per ``DISK_FULL_LOG_INTERVAL``), never per request.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import struct
import threading
import time
from pathlib import Path

from .constants import DISK_FREE_TO_CLEAR, DISK_FULL_HOLD, DISK_FULL_LOG_INTERVAL
from .store_error import StoreError

log = logging.getLogger("comity.relay")

#: identifies a slot of a write-mark file (and its format version)
MAGIC = b"comityW1"
#: slots sit in separate 512-byte sectors, so a torn write of one cannot touch the other
SLOT_SPAN = 512
#: the whole file: two sectors
MARK_SIZE = 2 * SLOT_SPAN
_SLOT = struct.Struct(">8sQ16s")
#: where operators read what to do (named in every refusal's hint)
RECOVERY = "see 'Damaged storage and lost writes' in docs/operations.md"

# SQLite primary result codes (the low byte of an extended code)
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26


class Refused(StoreError):
    """the data folder fails a storage check: the relay must not start on it"""

    code = "unavailable"

    def __init__(self, message: str, hint: str = RECOVERY, *, kind: str = "lost"):
        super().__init__(message)
        self.hint = hint
        #: "lost" (writes or the database are gone), "mark" (the mark file), "corrupt"
        self.kind = kind


def fsync_dir(path: Path) -> None:
    """Make the creation, renaming or removal of a file in folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_path(database: Path) -> Path:
    """The write-mark file of ``database`` (``relay.db`` -> ``relay.hwm``)."""
    return database.with_name(database.stem + ".hwm")


def _slot(seq: int) -> bytes:
    check = hashlib.blake2b(MAGIC + seq.to_bytes(8, "big"), digest_size=16).digest()
    return _SLOT.pack(MAGIC, seq, check)


def _parse(data: bytes) -> int | None:
    magic, seq, check = _SLOT.unpack(data[:_SLOT.size])
    return seq if magic == MAGIC and check == _slot(seq)[-16:] else None


def read_mark(path: Path) -> int | None:
    """The count in the mark file; None if there is no file; Refused if it is damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Refused(f"cannot read the write mark {path}: {exc.strerror or exc}",
                      kind="mark") from None
    counts = [] if len(data) != MARK_SIZE else \
        [seq for seq in (_parse(data[0:]), _parse(data[SLOT_SPAN:])) if seq is not None]
    if not counts:
        raise Refused(f"the write mark {path} is damaged, so whether the database lost "
                      "acknowledged writes cannot be told", kind="mark")
    return max(counts)


def create_mark(path: Path, seq: int) -> None:
    """Write a fresh mark file holding ``seq`` (in both slots): complete or absent, durably."""
    body = bytearray(MARK_SIZE)
    body[0:_SLOT.size] = body[SLOT_SPAN:SLOT_SPAN + _SLOT.size] = _slot(seq)
    partial = path.with_name(path.name + ".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, bytes(body))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)
    fsync_dir(path.parent)


class WriteMark:
    """The open mark file of a writer (relay/db.py calls ``write`` after each commit)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR)

    def write(self, seq: int) -> None:
        """Make ``seq`` the durable count; raises OSError if the disk refuses."""
        data = _slot(seq)
        if os.pwrite(self._fd, data, (seq % 2) * SLOT_SPAN) != len(data):
            raise OSError(errno.EIO, f"short write to {self.path.name}")
        os.fdatasync(self._fd)      # the size never changes: no metadata to sync

    def close(self) -> None:
        os.close(self._fd)


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that changes nothing: it neither creates the file nor, on close,
    checkpoints and deletes the WAL (which a read-write connection would do, destroying the
    evidence of a damaged one)."""
    return sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True,
                           isolation_level=None)


def read_write_count(path: Path) -> int | None:
    """``write_count`` of the database file at ``path``, read without changing anything."""
    conn = connect_read_only(path)
    try:
        return write_count(conn)
    finally:
        conn.close()


def write_count(conn: sqlite3.Connection) -> int | None:
    """The database's count of write batches (table ``write_mark``, schema version 6); 0 for
    an empty file, None for a database from before the count existed."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return 0
    if "write_mark" not in tables:
        return None
    return conn.execute("SELECT seq FROM write_mark").fetchone()[0]


def compare(database: Path, counted: int, mark: int | None) -> None:
    """Refuse a database whose count of acknowledged writes is below its mark."""
    if mark is not None and counted < mark:
        raise Refused(f"the database {database} is behind its write mark: it holds {counted} "
                      f"write batches, but the relay acknowledged {mark}; the last "
                      f"{mark - counted} batches of acknowledged writes (one or more each) "
                      "are lost")


# -- damage while serving -------------------------------------------------------------------------

def classify(exc: BaseException) -> str | None:
    """'corrupt', 'full' (no space), or None for an error that says nothing about the storage."""
    if isinstance(exc, sqlite3.DatabaseError):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        text = str(exc)
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in text \
                or "not a database" in text:
            return "corrupt"
        if code == _SQLITE_FULL or "disk is full" in text:
            return "full"
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "full"
    return None


def has_room(folder: Path) -> bool:
    """Whether the file system of ``folder`` has DISK_FREE_TO_CLEAR bytes and an inode free."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    inodes = stat.f_files == 0 or stat.f_favail > 0      # 0 files: no inode limit (btrfs)
    return inodes and stat.f_bavail * stat.f_frsize >= DISK_FREE_TO_CLEAR


class Health:
    """The storage's state as this process saw it while serving (thread-safe).

    A full disk is reported until both DISK_FULL_HOLD passed since the last failure and the
    file system has room again (``has_room``), checked when /healthz asks and when a write
    succeeds. Not "until a write succeeds" alone: the database reuses its WAL's space after a
    checkpoint, so its commits can succeed while every blob upload fails for lack of space.
    """

    def __init__(self, folder: Path, clock=time.monotonic):
        self._folder = folder
        self._clock = clock
        self._lock = threading.Lock()
        #: why the database is considered damaged (None: it is not)
        self.damaged: str | None = None
        #: when a full disk was first and last seen (None: not full, as far as we know)
        self.full_since: float | None = None
        self._full_last = 0.0
        self._full_logged: float | None = None

    @property
    def status(self) -> str:
        """'damaged', 'disk-full' or 'ok', for /healthz."""
        if self.damaged is not None:
            return "damaged"
        self._recheck()
        return "disk-full" if self.full_since is not None else "ok"

    def saw(self, exc: BaseException, where: str) -> str | None:
        """Record what ``exc`` says about the storage; return its ``classify`` kind.
        ``where`` names the operation for the log; it never holds an id or a path."""
        kind = classify(exc)
        with self._lock:
            if kind == "corrupt":
                self._damage(exc, where)
            elif kind == "full":
                now = self._clock()
                self.full_since = self.full_since or now
                self._full_last = now
                if self._full_logged is None or now - self._full_logged >= DISK_FULL_LOG_INTERVAL:
                    self._full_logged = now
                    log.error("disk full: %s refused; /healthz answers 503 until there is "
                              "room again", where)
        return kind

    def broken(self, exc: BaseException, where: str) -> None:
        """Storage that failed in a way that may have lost an acknowledged write (a failed
        fsync of the write mark): treated as damage."""
        with self._lock:
            self._damage(exc, where)

    def _damage(self, exc: BaseException, where: str) -> None:
        if self.damaged is None:
            self.damaged = type(exc).__name__ + ": " + str(exc).splitlines()[0][:200]
            log.error("the database is damaged (%s during %s): writes are refused and "
                      "/healthz answers 503 until the relay is stopped and repaired; %s",
                      self.damaged, where, RECOVERY)

    def wrote(self) -> None:
        """A database commit succeeded: perhaps the disk has room again."""
        self._recheck()

    def _recheck(self) -> None:
        if self.full_since is None or self._clock() - self._full_last < DISK_FULL_HOLD:
            return
        if not has_room(self._folder):
            return
        with self._lock:
            if self.full_since is not None:
                self.full_since = None
                log.warning("disk space available again")
