"""The storage checks of a data folder: run before the relay starts, and by ``comity-relay check``.

``check_before_start`` refuses (``relay.integrity.Refused``: one message, one hint) a folder
whose database is missing while the rest of a relay is there, whose write mark is damaged, or
whose database fails ``PRAGMA quick_check``. Opening the database (relay/db.py) then refuses one
that counts fewer write batches than its mark. ``check_stopped`` runs all of them on a stopped
relay without changing anything (read-only connections: not even a checkpoint); ``accept_loss`` is the operator's explicit,
audited way past a loss that cannot be repaired (docs/operations.md, "Damaged storage and lost
writes").
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .integrity import (Refused, compare, connect_read_only, create_mark, fsync_dir, mark_path,
                        read_mark, read_write_count)

DATABASE = "relay.db"
#: what, beside the database, says a relay has lived in a folder
_RELAY_STATE = ("relay.key", "token.key", mark_path(Path(DATABASE)).name)
#: prefix of the folder ``accept_loss`` copies the files it changes into (then a UTC time)
KEPT_ASIDE = "before-accept-loss-"
#: quick_check lines quoted in a refusal (the rest are the same story)
_QUOTED = 1


@dataclass(frozen=True)
class Summary:
    """A data folder that passed every check."""

    database: Path
    #: write batches the database counts, and the mark's count (None: no mark yet)
    counted: int
    mark: int | None
    #: seconds quick_check took
    seconds: float


def _relay_state(data_dir: Path) -> list[str]:
    found = [name for name in _RELAY_STATE if (data_dir / name).exists()]
    blobs = data_dir / "blobs"
    if blobs.is_dir() and any(blobs.iterdir()):
        found.append("blobs/")
    return found


def quick_check(database: Path) -> float:
    """Refuse a database that fails ``PRAGMA quick_check``; the seconds it took."""
    started = time.perf_counter()
    try:
        conn = connect_read_only(database)
        try:
            rows = [row[0] for row in conn.execute("PRAGMA quick_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows != ["ok"]:
        said = "; ".join(" ".join(str(row).split()) for row in rows[:_QUOTED])
        more = f" (and {len(rows) - _QUOTED} more)" if len(rows) > _QUOTED else ""
        raise Refused(f"the database {database} is damaged: quick_check says: {said}{more}",
                      kind="corrupt")
    return time.perf_counter() - started


def check_before_start(data_dir: Path) -> float:
    """The checks the relay runs before it opens its database (refuses with Refused);
    returns the seconds quick_check took (0 for a folder without a database)."""
    database = data_dir / DATABASE
    read_mark(mark_path(database))                  # a damaged mark has its own refusal
    if not database.exists():
        state = _relay_state(data_dir)
        if state:
            raise Refused(f"the database {database} is missing, but {data_dir} holds the rest "
                          f"of a relay ({', '.join(state)}): starting on an empty database "
                          "would lose every message it held")
        return 0.0
    return quick_check(database)


def check_stopped(data_dir: Path) -> Summary:
    """Every check, on a stopped relay; writes nothing. Raises Refused."""
    database = data_dir / DATABASE
    seconds = check_before_start(data_dir)
    mark = read_mark(mark_path(database))
    if not database.exists():
        return Summary(database, 0, mark, seconds)
    counted = read_write_count(database)
    compare(database, counted or 0, mark)
    if mark is None and counted:
        raise Refused(f"the write mark {mark_path(database)} of the database {database} is "
                      "missing, so whether the database lost acknowledged writes cannot be "
                      "told", kind="mark")
    return Summary(database, counted or 0, mark, seconds)


def _keep_aside(data_dir: Path) -> Path:
    """Copy the database, its WAL and the mark, as they are, into a new folder beside them,
    durably: whatever accepting the loss changes can still be looked at (or salvaged) later."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = data_dir / f"{KEPT_ASIDE}{stamp}"
    aside.mkdir(mode=0o700)
    for name in (DATABASE, DATABASE + "-wal", mark_path(Path(DATABASE)).name):
        if (data_dir / name).exists():
            shutil.copy2(data_dir / name, aside / name)
            fd = os.open(aside / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(aside)
    fsync_dir(data_dir)
    return aside


def accept_loss(data_dir: Path, refusal: Refused) -> tuple[int | None, int, Path]:
    """Rebase the write mark on what the database holds now and record that in the audit log.

    Only for a loss (``refusal.kind`` "lost" or "mark"); a damaged database is refused again:
    it must be restored or recovered first. Creates an empty database if there is none. First
    copies the files it is about to change aside (``_keep_aside``), so running it by mistake
    loses nothing. Returns the old mark (None if unreadable), the database's count, and the
    folder of the copies.
    """
    if refusal.kind == "corrupt":
        raise refusal
    from .store import Store

    database = data_dir / DATABASE
    if database.exists():
        quick_check(database)                   # a damaged mark may have hidden a damaged file
    try:
        old = read_mark(mark_path(database))
    except Refused:
        old = None
    counted = (read_write_count(database) or 0) if database.exists() else 0
    aside = _keep_aside(data_dir)
    create_mark(mark_path(database), counted)

    async def record() -> None:
        store = await Store.open(database)
        try:
            detail = {"mark": old, "counted": counted, "reason": refusal.message,
                      "kept": aside.name}
            await store.audit("storage-loss-accepted", None, None, json.dumps(detail),
                              int(time.time()))
        finally:
            await store.close()
    asyncio.run(record())
    return old, counted, aside
