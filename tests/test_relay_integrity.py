"""Damaged storage and lost writes (issue 10, items 3 and 4): the relay refuses to start on a
database that is damaged, behind its write mark, or missing beside the rest of a relay;
``comity-relay check`` says the same on a stopped relay; corruption and a full disk seen while
serving show on /healthz and stop writes. docs/operations.md, "Damaged storage and lost writes".
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from relay import integrity
from relay import store as store_module
from relay.constants import RETRY_DISK_FULL
from relay.store import Store
from tests.relay_helpers import create_network, relay  # noqa: F401
from tests.relay_process_support import START_TIMEOUT, RelayProcess, clean_env, relay_command
from tests.relay_store_crash_child import NETWORK, RECIPIENTS, envelope_for

CHILD = Path(__file__).with_name("relay_store_crash_child.py")
#: SIGKILL the crash child once this many submissions were acknowledged
ACKS_BEFORE_KILL = 300
#: SQLite's default page size, which relay.db uses
PAGE = 4096


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*relay_command(), *args], capture_output=True, text=True,
                          env=clean_env(), timeout=START_TIMEOUT)


def _assert_refusal(done: subprocess.CompletedProcess, expected: str) -> None:
    """Exit 1, one ``error:`` line naming the damage, a ``hint:`` to the recovery section."""
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], done.stderr
    assert lines[1:] and all(line.startswith("hint: ") for line in lines[1:]), done.stderr
    assert "Damaged storage and lost writes" in done.stderr


def _serve_refused(data: Path, *args: str) -> subprocess.CompletedProcess:
    relay = RelayProcess(data, *args)
    try:
        status = relay.wait_exit(START_TIMEOUT)
    finally:
        relay.close()
    return subprocess.CompletedProcess([], status, relay.stdout.text, relay.stderr.text + "\n")


def _serve_starts(data: Path) -> None:
    relay = RelayProcess(data).wait_ready()
    relay.signal(signal.SIGTERM)
    assert relay.wait_exit() == 0, relay.output()


def _populate(database: Path, count: int) -> None:
    """``count`` submissions in a store at ``database``, closed cleanly (WAL checkpointed)."""
    async def fill() -> None:
        store = await Store.open(database)
        try:
            await store.create_network(NETWORK, "genesis-hash", '{"seq":0}', 1000)
            await asyncio.gather(*(store.submit_message(
                NETWORK, f"m-{i}", "alice", RECIPIENTS, *envelope_for(f"m-{i}"), 700, [],
                '{"receipt":1}', 1000) for i in range(count)))
        finally:
            await store.close()
    asyncio.run(fill())


# -- a damaged database file ----------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["1", "2"])
def test_start_is_refused_after_bytes_overwritten_in_table_pages(tmp_path, workers):
    data = tmp_path / "data"
    data.mkdir()
    _populate(data / "relay.db", 400)
    size = (data / "relay.db").stat().st_size
    assert size > 40 * PAGE
    # 20 x 64 bytes, at the start of table pages (page header and cell pointers), never in the
    # 100-byte file header: the b-trees are broken, as on a disk that lost sectors.
    with open(data / "relay.db", "r+b") as f:
        for n in range(20):
            f.seek((2 + n * (size // PAGE - 3) // 20) * PAGE)
            f.write(b"\xa5" * 64)
    _assert_refusal(_serve_refused(data, "--workers", workers), "is damaged: quick_check says")
    _assert_refusal(_cli("check", "--data-dir", str(data)), "is damaged: quick_check says")
    # Nothing can accept a damaged file away: restore or recover it first.
    _assert_refusal(_cli("check", "--data-dir", str(data), "--accept-loss"),
                    "is damaged: quick_check says")


async def test_corruption_while_serving_turns_healthz_503_and_refuses_writes(
        relay, monkeypatch, caplog):
    network = await create_network(relay)
    envelope, _ = network.seal(network.admin, ["ana"])
    assert (await relay.get("/healthz")).status == 200

    def malformed(*args):
        raise sqlite3.DatabaseError("database disk image is malformed")
    monkeypatch.setattr(store_module, "_submit_message", malformed)
    with caplog.at_level(logging.ERROR, logger="comity.relay"):
        reply = await network.submit(network.admin, envelope)
        assert (reply.status, reply.error) == (503, "unavailable")
        assert int(reply.headers["Retry-After"]) > 0
        monkeypatch.undo()                     # the next write would succeed: still refused
        for _ in range(3):
            reply = await network.submit(network.admin, envelope)
            assert (reply.status, reply.error) == (503, "unavailable"), reply
            assert int(reply.headers["Retry-After"]) > 0
        health = await relay.get("/healthz")
    assert health.status == 503 and health.json()["status"] == "damaged"
    assert "malformed" in health.json()["reason"]
    assert int(health.headers["Retry-After"]) > 0
    assert sum("the database is damaged" in r.getMessage() for r in caplog.records) == 1
    assert (await relay.store.log_head(network.name)).seq == 0     # reads still answer


async def test_disk_full_is_logged_without_the_blob_id_and_shows_on_healthz(relay, monkeypatch,
                                                                           caplog):
    from relay import blobs as blob_module
    network = await create_network(relay)
    created = await relay.post(network.path + "/blobs", {"size": 10}, member=network.admin)
    blob = created.json()["blob"]

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    write_all = blob_module._write_all
    monkeypatch.setattr(blob_module, "_write_all", full)
    monkeypatch.setattr(integrity, "has_room", lambda folder: False)
    with caplog.at_level(logging.INFO, logger="comity.relay"):
        for _ in range(3):
            reply = await network.patch_blob(network.admin, blob, 0, b"x" * 10)
            assert (reply.status, reply.error) == (503, "unavailable")
            assert reply.headers["Retry-After"] == str(RETRY_DISK_FULL)
        health = await relay.get("/healthz")
        assert (health.status, health.json()["status"]) == (503, "disk-full")
        assert health.headers["Retry-After"] == str(RETRY_DISK_FULL)
        # A database commit succeeding proves nothing (it reuses its WAL's space): still full.
        monkeypatch.setattr(integrity, "DISK_FULL_HOLD", 0)
        assert (await relay.post(network.path + "/blobs", {"size": 5},
                                 member=network.admin)).status == 201
        assert (await relay.get("/healthz")).json()["status"] == "disk-full"
        # Room again: /healthz says so, and the upload goes through.
        monkeypatch.setattr(integrity, "has_room", lambda folder: True)
        monkeypatch.setattr(blob_module, "_write_all", write_all)
        assert (await relay.get("/healthz")).status == 200
        assert (await network.patch_blob(network.admin, blob, 0, b"x" * 10)).status == 204
    logged = caplog.text
    assert "disk full" in logged and "/blobs/{id}" in logged
    assert blob not in logged                       # a blob id is a capability
    assert sum("disk full" in r.getMessage() for r in caplog.records) == 1   # once per interval


async def test_every_503_carries_retry_after(relay):
    relay.state.draining = True
    health = await relay.get("/healthz")
    other = await relay.get("/v1/relay")
    relay.state.draining = False
    assert health.status == other.status == 503
    assert int(health.headers["Retry-After"]) > 0 and int(other.headers["Retry-After"]) > 0


# -- lost writes after a crash ------------------------------------------------------------------

@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> Path:
    """A data folder whose writer was killed with SIGKILL in a storm of submissions, with
    checkpoints off: every acknowledged write is still only in the WAL."""
    data = tmp_path_factory.mktemp("crashed") / "data"
    data.mkdir()
    child = subprocess.Popen([sys.executable, str(CHILD), str(data / "relay.db"), "50",
                              "no-checkpoints"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    watchdog = threading.Timer(60, child.kill)             # never hang the suite
    watchdog.start()
    try:
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        for _ in range(ACKS_BEFORE_KILL):
            assert child.stdout.readline(), child.stderr.read()
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        watchdog.cancel()
        child.kill()
    assert child.returncode == -signal.SIGKILL
    assert (data / "relay.db-wal").stat().st_size > 100 * PAGE
    return data


def _copy(crashed: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(crashed, data)
    return data


def test_the_mark_never_runs_ahead_of_a_database_killed_mid_storm(crashed, tmp_path):
    data = _copy(crashed, tmp_path)
    mark = integrity.read_mark(integrity.mark_path(data / "relay.db"))
    assert mark >= 1
    done = _cli("check", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert "passes quick_check" in done.stderr
    _serve_starts(data)


def _database_files(data: Path) -> dict[str, bytes]:
    """relay.db and its WAL, byte for byte (SQLite's index and lock files, and an empty WAL
    a reader may create, carry no data)."""
    return {path.name: path.read_bytes() for path in data.glob("relay.db*")
            if not path.name.endswith(("-shm", "-writer.lock")) and path.stat().st_size}


@pytest.mark.parametrize("damage", ["deleted", "overwritten"])
def test_start_is_refused_when_the_wal_of_a_killed_relay_is_lost(crashed, tmp_path, damage):
    data = _copy(crashed, tmp_path)
    wal = data / "relay.db-wal"
    if damage == "deleted":
        wal.unlink()
        (data / "relay.db-shm").unlink()
    else:
        with open(wal, "r+b") as f:             # 32 bytes in the middle of the committed frames
            f.seek(wal.stat().st_size // 2)
            f.write(b"\x5a" * 32)
    before = _database_files(data)
    _assert_refusal(_cli("check", "--data-dir", str(data)), "is behind its write mark")
    _assert_refusal(_serve_refused(data), "is behind its write mark")
    _assert_refusal(_serve_refused(data, "--workers", "2"), "is behind its write mark")
    # Refused untouched: no checkpoint folded the WAL's valid part in and deleted the rest.
    assert _database_files(data) == before


# -- a missing database, a damaged mark, and accepting a loss -----------------------------------

def test_a_missing_database_beside_the_relay_key_is_refused_until_the_loss_is_accepted(tmp_path):
    data = tmp_path / "data"
    _serve_starts(data)                          # creates relay.key, relay.db, relay.hwm
    done = _cli("check", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    for path in data.glob("relay.db*"):
        path.unlink()
    mark = (data / "relay.hwm").read_bytes()
    _assert_refusal(_serve_refused(data), "relay.db is missing")
    _assert_refusal(_cli("check", "--data-dir", str(data)), "relay.db is missing")
    assert not (data / "relay.db").exists()      # neither created an empty one

    accepted = _cli("check", "--data-dir", str(data), "--accept-loss")
    assert accepted.returncode == 0, accepted.stderr
    assert "accepted the loss" in accepted.stderr
    [aside] = data.glob("before-accept-loss-*")         # what it changed, kept as it was
    assert (aside / "relay.hwm").read_bytes() == mark
    _serve_starts(data)
    conn = sqlite3.connect(data / "relay.db")
    events = [row[0] for row in conn.execute("SELECT event FROM audit")]
    conn.close()
    assert events == ["storage-loss-accepted"]


def test_a_damaged_mark_is_refused_with_its_own_message(tmp_path):
    data = tmp_path / "data"
    _serve_starts(data)
    (data / "relay.hwm").write_bytes(os.urandom(integrity.MARK_SIZE))
    _assert_refusal(_cli("check", "--data-dir", str(data)), "relay.hwm is damaged")
    _assert_refusal(_serve_refused(data), "relay.hwm is damaged")


def test_a_torn_mark_write_leaves_the_previous_count(tmp_path):
    path = tmp_path / "relay.hwm"
    integrity.create_mark(path, 6)
    mark = integrity.WriteMark(path)
    mark.write(7)
    mark.write(8)
    mark.close()
    assert integrity.read_mark(path) == 8
    with open(path, "r+b") as f:                 # the write of 8 (slot 0) was torn
        f.write(b"\x00" * 20)
    assert integrity.read_mark(path) == 7


def test_check_refuses_a_running_relay(tmp_path):
    data = tmp_path / "data"
    relay = RelayProcess(data).wait_ready()
    try:
        done = _cli("check", "--data-dir", str(data))
    finally:
        relay.close()
    assert done.returncode == 1 and "another comity-relay" in done.stderr


async def test_a_write_whose_mark_cannot_be_synced_is_not_acknowledged(tmp_path, monkeypatch):
    """No answer outruns its mark: if the mark's fsync fails, the caller hears 503, and the
    relay stops writing (after a failed fsync the kernel may have dropped the data)."""
    from relay.db import Damaged, Database, Unavailable
    db = await Database.open(tmp_path / "relay.db")
    try:
        def failing(self, seq):
            raise OSError(errno.EIO, "Input/output error")
        monkeypatch.setattr(integrity.WriteMark, "write", failing)
        with pytest.raises(Unavailable):
            await db.write(lambda conn: conn.execute(
                "INSERT INTO audit (at, event, detail) VALUES (1, 'e', '{}')"))
        monkeypatch.undo()
        with pytest.raises(Damaged):
            await db.write(lambda conn: None)
        assert db.health.status == "damaged"
    finally:
        await db.close()


async def test_writes_queued_with_one_that_meets_damage_are_not_committed(tmp_path):
    """Once an operation of a batch meets corruption, nothing of that batch or of those queued
    behind it is committed onto the file."""
    from relay.db import Damaged, Database
    db = await Database.open(tmp_path / "relay.db")
    try:
        def insert(conn, value):
            conn.execute("INSERT INTO audit (at, event, detail) VALUES (?, 'e', '{}')", [value])

        def malformed(conn, value):
            raise sqlite3.DatabaseError("database disk image is malformed")
        results = await asyncio.gather(*(db.write(malformed if i == 2 else insert, i)
                                         for i in range(6)), return_exceptions=True)
        assert all(isinstance(r, Damaged) for r in results[2:]), results
        assert await db.read(lambda conn: conn.execute(
            "SELECT count(*) FROM audit WHERE at >= 2").fetchone()[0]) == 0
    finally:
        await db.close()


@pytest.mark.parametrize("folder", ["missing", "empty", "unrelated"])
def test_check_refuses_a_folder_that_holds_no_relay_and_creates_nothing(tmp_path, folder):
    """A wrong --data-dir is not a healthy relay: check must neither pass it nor write there."""
    data = tmp_path / "data"
    if folder != "missing":
        data.mkdir()
    if folder == "unrelated":
        (data / "notes.txt").write_text("not a relay")
    before = sorted(p.name for p in data.iterdir()) if data.exists() else None
    done = _cli("check", "--data-dir", str(data))
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {data} holds no comity relay"), done.stderr
    assert (sorted(p.name for p in data.iterdir()) if data.exists() else None) == before
