"""The relay's storage: group commit, domain rules, blob files, migrations, and a crash.

Everything runs against real files under tmp_path; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from relay import schema
from relay.blobs import (
    AlreadyComplete, BadBlobId, BadRange, BlobFiles, NoBlobFile, OffsetMismatch, TooLarge,
    UploadBusy, new_blob_id,
)
from relay.db import Database, DiskFull, SchemaError, Unavailable
from relay.store import (
    BadCreationToken, BlobUnusable, Conflict, EnrollmentExists, Gone, LogConflict,
    MessageIdReused, NetworkExists, NoBlob, NoInvite, NoMessage, NoNetwork, Store,
)
from tests.relay_helpers import until
from tests.relay_store_crash_child import NETWORK, RECIPIENTS, envelope_for

NET = "ejn"
T0 = 1_700_000_000


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "relay.db")
    await store.create_network(NET, "genesis-hash", '{"seq": 0, "kind": "genesis"}', T0)
    yield store
    await store.close()


async def submit(store, message_id, recipients=("bob", "carol"), *, envelope_hash=None,
                 sender="alice", blob_ids=(), at=T0):
    envelope = '{"id": "%s", "ciphertext": "..."}' % message_id
    return await store.submit_message(NET, message_id, sender, list(recipients), envelope,
                                      envelope_hash or "h-" + message_id, len(envelope),
                                      list(blob_ids), '{"receipt": "%s"}' % message_id, at)


def insert(db, value):
    db.execute("INSERT INTO audit (at, event, detail) VALUES (?, 'test', '{}')", [value])
    return value


def audit_values(db):
    return sorted(row[0] for row in db.execute("SELECT at FROM audit WHERE event = 'test'"))


# -- relay.db: group commit, isolation of failures, readers ----------------------------------------

async def test_concurrent_writes_share_commits(tmp_path):
    db = await Database.open(tmp_path / "relay.db", max_batch=64)
    try:
        results = await asyncio.gather(*(db.write(insert, i) for i in range(200)))
        assert results == list(range(200))
        assert db.commits < 20              # 200 separate commits without group commit
        assert db.largest_batch <= 64       # the cap holds
        assert await db.read(audit_values) == list(range(200))
    finally:
        await db.close()


async def hold_writer(db):
    """Occupy the writer thread until the returned event is set, so later writes queue up."""
    entered, release = threading.Event(), threading.Event()

    def block(_db):
        entered.set()
        release.wait(10)
    task = asyncio.ensure_future(db.write(block))
    await asyncio.to_thread(entered.wait, 10)
    return task, release


async def test_failing_operation_rolls_back_alone(tmp_path):
    db = await Database.open(tmp_path / "relay.db")
    try:
        def insert_then_fail(db, value):
            insert(db, value)
            raise ValueError("refused")

        blocker, release = await hold_writer(db)
        writes = [asyncio.ensure_future(db.write(insert_then_fail if i == 5 else insert, i))
                  for i in range(10)]
        await asyncio.sleep(0.05)
        assert db.queue_depth() == 10
        commits = db.commits
        release.set()
        await blocker
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert isinstance(results[5], ValueError)
        assert [r for i, r in enumerate(results) if i != 5] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
        assert db.commits == commits + 1 and db.largest_batch >= 10     # one batch, one commit
        assert await db.read(audit_values) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    finally:
        await db.close()


async def test_operation_that_aborts_the_transaction_fails_alone(tmp_path):
    # An operation that loses the whole transaction (as SQLite does on disk full) takes the
    # batch's earlier work with it: the writer must run the others again, not lose them.
    db = await Database.open(tmp_path / "relay.db")
    try:
        def abort(db, value):
            insert(db, value)
            db.conn.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")

        blocker, release = await hold_writer(db)
        writes = [asyncio.ensure_future(db.write(abort if i == 3 else insert, i)) for i in range(8)]
        await asyncio.sleep(0.05)
        release.set()
        await blocker
        results = await asyncio.gather(*writes, return_exceptions=True)
        # Its caller hears the storage's refusal (a 503 with Retry-After), not SQLite's words.
        assert isinstance(results[3], DiskFull)
        assert await db.read(audit_values) == [0, 1, 2, 4, 5, 6, 7]
    finally:
        await db.close()


async def test_reads_run_off_the_loop_and_close_drains_writes(tmp_path):
    db = await Database.open(tmp_path / "relay.db", readers=2)
    name = await db.read(lambda _db: threading.current_thread().name)
    assert name.startswith("comity-db-read")
    with pytest.raises(sqlite3.OperationalError):       # readers are read-only
        await db.read(insert, 1)
    pending = [asyncio.ensure_future(db.write(insert, i)) for i in range(50)]
    await asyncio.sleep(0)
    await db.close()
    assert await asyncio.gather(*pending) == list(range(50))
    with pytest.raises(Unavailable):
        await db.write(insert, 99)
    db = await Database.open(tmp_path / "relay.db")
    assert await db.read(audit_values) == list(range(50))
    await db.close()


# -- schema versions -------------------------------------------------------------------------------

async def test_upgrade_takes_a_backup_first(tmp_path):
    path = tmp_path / "relay.db"
    # A version 1 database, built by hand the way the first release left it.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("BEGIN; CREATE TABLE schema_version (version INTEGER NOT NULL);"
                       + schema.MIGRATIONS[0] + "; INSERT INTO schema_version VALUES (1); COMMIT;")
    conn.execute("INSERT INTO networks VALUES ('ejn', 'g', 1)")
    conn.close()

    later = schema.MIGRATIONS + ("ALTER TABLE networks ADD COLUMN note TEXT DEFAULT 'v2';",)
    db = await Database.open(path, migrations=later)
    rows = await db.read(lambda db: [tuple(r) for r in db.execute("SELECT * FROM networks")])
    version = await db.read(lambda db: db.execute("SELECT version FROM schema_version").fetchone())
    await db.close()
    assert rows == [("ejn", "g", 1, "v2")] and version[0] == len(later)

    backup = tmp_path / "relay.db.v1.bak"
    assert backup.exists()
    old = sqlite3.connect(backup)
    assert old.execute("SELECT * FROM networks").fetchall() == [("ejn", "g", 1)]
    assert old.execute("SELECT version FROM schema_version").fetchone() == (1,)
    old.close()

    with pytest.raises(SchemaError, match="newer"):       # an older relay refuses the new file
        await Database.open(path)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(SchemaError, match="not a comity"):
        await Database.open(other)


async def test_v4_replaces_stored_challenges_by_used_ones(tmp_path):
    """Schema v4 drops the challenges anyone could store (issue 9, break 6) for used_challenges."""
    path = tmp_path / "relay.db"
    db = await Database.open(path, migrations=schema.MIGRATIONS[:3])
    await db.write(lambda db: db.execute(
        "INSERT INTO auth_challenges VALUES ('ejn', 'ana', 'c', 1)"))
    await db.close()
    db = await Database.open(path)
    tables = await db.read(lambda db: {r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")})
    await db.close()
    assert "auth_challenges" not in tables and "auth_challenges_expiry" not in tables
    assert {"used_challenges", "used_challenges_expiry"} <= tables
    assert (tmp_path / "relay.db.v3.bak").exists()


async def test_new_database_is_wal_full_and_private(tmp_path):
    db = await Database.open(tmp_path / "relay.db")
    assert await db.read(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    assert await db.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL
    await db.close()
    assert (tmp_path / "relay.db").stat().st_mode & 0o077 == 0
    assert not list(tmp_path.glob("*.bak"))               # nothing to back up when new


# -- networks, tokens, log -------------------------------------------------------------------------

async def test_creation_token_is_one_time_and_expires(store):
    await store.add_creation_token("iberred", "tok", T0 + 60)
    assert not await store.consume_creation_token("other", "tok", T0)
    assert not await store.consume_creation_token("iberred", "tok", T0 + 60)   # expired
    assert await store.consume_creation_token("iberred", "tok", T0 + 59)
    assert not await store.consume_creation_token("iberred", "tok", T0)        # used

    await store.add_creation_token("refco", "tok2", T0 + 60)
    with pytest.raises(BadCreationToken):
        await store.create_network("refco", "g2", "{}", T0, token_hash="wrong")
    await store.create_network("refco", "g2", "{}", T0, token_hash="tok2")
    with pytest.raises(BadCreationToken):
        await store.create_network("refco2", "g3", "{}", T0, token_hash="tok2")
    await store.add_creation_token(NET, "tok3", T0 + 60)
    with pytest.raises(NetworkExists):
        await store.create_network(NET, "g", "{}", T0, token_hash="tok3")
    assert await store.consume_creation_token(NET, "tok3", T0)   # the refusal kept the token
    assert [n.name for n in await store.list_networks()] == [NET, "refco"]
    assert (await store.get_network("refco")).genesis_hash == "g2"
    with pytest.raises(NoNetwork):
        await store.get_network("nope")


async def test_a_used_challenge_is_used_once_until_swept(store):
    assert not await store.challenge_used(NET, "ana", "c1")
    assert await store.use_challenge(NET, "ana", "c1", T0 + 120)
    assert await store.challenge_used(NET, "ana", "c1")
    assert not await store.challenge_used(NET, "bob", "c1")
    assert not await store.use_challenge(NET, "ana", "c1", T0 + 120)        # a replay
    assert await store.use_challenge(NET, "bob", "c1", T0 + 120)            # another handle's
    # Of concurrent redemptions of one challenge (two workers, say), exactly one wins.
    results = await asyncio.gather(*(store.use_challenge(NET, "ana", "c2", T0 + 180)
                                     for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await store.expire_used_challenges(T0 + 120) == 0              # still valid then
    assert await store.expire_used_challenges(T0 + 121) == 2
    assert not await store.use_challenge(NET, "ana", "c2", T0 + 180)


async def test_log_append_refuses_gaps_and_duplicates(store):
    head = await store.log_head(NET)
    assert (head.seq, head.entry) == (0, '{"seq": 0, "kind": "genesis"}')
    await store.append_log_entry(NET, 1, "h1", '{"seq":1}')
    for bad_seq in (1, 3, 0):
        with pytest.raises(LogConflict) as refused:
            await store.append_log_entry(NET, bad_seq, "hx", "{}")
        assert refused.value.head_seq == 1
    with pytest.raises(NoNetwork):
        await store.append_log_entry("nope", 1, "h", "{}")

    # Twenty clients race for seq 2: exactly one wins.
    results = await asyncio.gather(
        *(store.append_log_entry(NET, 2, f"h2-{i}", "{}") for i in range(20)),
        return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, LogConflict) for r in results if isinstance(r, Exception))

    entries = await store.log_entries(NET, since_seq=1)
    assert [e.seq for e in entries] == [1, 2]
    assert [e.seq for e in await store.log_entries(NET, 0, limit=2)] == [0, 1]
    assert (await store.log_head(NET)).seq == 2
    with pytest.raises(NoNetwork):
        await store.log_entries("nope")


# -- invites and enrollments -----------------------------------------------------------------------

async def test_enrollment_rules(store):
    await store.add_invite(NET, "inv1", "bob", "member", "alice", T0 + 100)
    with pytest.raises(Conflict):
        await store.add_invite(NET, "inv1", "carol", "member", "alice", T0 + 100)
    assert (await store.get_invite(NET, "inv1")).handle == "bob"

    assert await store.add_enrollment(NET, "inv1", '{"keys": 1}', T0)
    assert not await store.add_enrollment(NET, "inv1", '{"keys": 1}', T0 + 1)   # resent
    with pytest.raises(EnrollmentExists):
        await store.add_enrollment(NET, "inv1", '{"keys": 2}', T0 + 1)
    with pytest.raises(NoInvite):
        await store.add_enrollment(NET, "unknown", "{}", T0)
    with pytest.raises(NoInvite):
        await store.add_enrollment(NET, "inv1", '{"keys": 1}', T0 + 100)          # expired

    await store.add_invite(NET, "inv2", "carol", "admin", "alice", T0 + 10)
    await store.add_enrollment(NET, "inv2", '{"c": 1}', T0)
    pending = await store.list_enrollments(NET, T0 + 5)
    assert [(e.invite.handle, e.request) for e in pending] == [("bob", '{"keys": 1}'),
                                                               ("carol", '{"c": 1}')]
    assert [e.invite.invite_id for e in await store.list_enrollments(NET, T0 + 10)] == ["inv1"]

    await store.add_invite(NET, "inv3", "bob", "member", "alice", T0 + 100)
    assert await store.delete_invites_for_handle(NET, "bob") == 2      # answered by the log
    assert [e.invite.invite_id for e in await store.list_enrollments(NET, T0)] == ["inv2"]
    await store.add_invite(NET, "inv1", "bob", "member", "alice", T0 + 100)
    assert await store.delete_invite(NET, "inv1")
    assert not await store.delete_invite(NET, "inv1")
    assert await store.expire_invites(T0 + 10) == [(NET, "inv2")]
    assert await store.list_enrollments(NET, T0) == []
    with pytest.raises(NoInvite):
        await store.get_invite(NET, "inv2")


# -- messages --------------------------------------------------------------------------------------

async def test_submit_is_idempotent(store):
    receipt, created = await submit(store, "m1")
    assert created
    assert await submit(store, "m1") == (receipt, False)
    with pytest.raises(MessageIdReused):
        await submit(store, "m1", envelope_hash="another")
    results = await asyncio.gather(*(submit(store, "m2") for _ in range(10)))
    assert sum(created for _, created in results) == 1
    assert len({r for r, _ in results}) == 1
    for handle in ("bob", "carol"):
        assert [m.message_id for m in await store.mailbox(NET, handle)] == ["m1", "m2"]
    assert (await store.counts()).messages == 2
    with pytest.raises(NoNetwork):
        await store.submit_message("nope", "m", "alice", ["bob"], "{}", "h", 2, [], "{}", T0)
    with pytest.raises(ValueError):
        await submit(store, "m3", recipients=("bob", "bob"))


async def test_queued_submissions_commit_together_each_with_its_own_outcome(store, monkeypatch):
    import relay.store as store_module
    bulk_calls = []
    bulk = store_module._submit_message.bulk

    def spy(db, calls):
        bulk_calls.append(len(calls))
        return bulk(db, calls)
    monkeypatch.setattr(store_module._submit_message, "bulk", spy)
    old_receipt, _ = await submit(store, "old")
    blocker, release = await hold_writer(store.db)
    tasks = [asyncio.ensure_future(call) for call in (
        submit(store, "a"), submit(store, "a"),               # twice in one batch: stored once
        submit(store, "old"),                                 # a retry of a stored message
        submit(store, "old", envelope_hash="another"),        # an id reused: refused alone
        submit(store, "b", recipients=("bob",)),
    )]
    await until(lambda: store.db.queue_depth() == len(tasks), "the submissions queued")
    commits = store.db.commits
    release.set()
    await blocker
    a, a_again, old, reused, b = await asyncio.gather(*tasks, return_exceptions=True)
    assert bulk_calls == [5] and store.db.commits == commits + 1    # one statement set, one commit
    assert a[1] is True and a_again == (a[0], False)
    assert old == (old_receipt, False)
    assert isinstance(reused, MessageIdReused)
    assert b[1] is True
    assert [m.message_id for m in await store.mailbox(NET, "bob")] == ["old", "a", "b"]
    assert [m.message_id for m in await store.mailbox(NET, "carol")] == ["old", "a"]

    # A batch the bulk path cannot take (an unknown network: a foreign key error) runs again
    # one submission at a time: only the culprit fails.
    blocker, release = await hold_writer(store.db)
    tasks = [asyncio.ensure_future(submit(store, "c")),
             asyncio.ensure_future(store.submit_message("nope", "d", "alice", ["bob"], "{}",
                                                        "h", 2, [], "{}", T0)),
             asyncio.ensure_future(submit(store, "e"))]
    await until(lambda: store.db.queue_depth() == len(tasks), "the submissions queued")
    release.set()
    await blocker
    c, d, e = await asyncio.gather(*tasks, return_exceptions=True)
    assert c[1] is True and e[1] is True and isinstance(d, NoNetwork)
    assert [m.message_id for m in await store.mailbox(NET, "carol")] == ["old", "a", "c", "e"]


async def test_the_checkpointer_copies_the_wal_into_the_database_file(tmp_path):
    db = await Database.open(tmp_path / "relay.db")
    try:
        path = tmp_path / "relay.db"
        before = path.stat().st_size
        await asyncio.gather(*(db.write(insert, i) for i in range(3000)))
        # The writers leave checkpoints to the checkpointer thread (their own threshold,
        # WRITER_CHECKPOINT_PAGES, is far away): the file grows only if it ran.
        await until(lambda: path.stat().st_size > before, "a checkpoint copied pages")
        assert await db.read(audit_values) == list(range(3000))
    finally:
        await db.close()


async def test_mailbox_pages_and_collection_deletes_the_envelope(store):
    for i in range(5):
        await submit(store, f"m{i}", recipients=("bob", "carol") if i < 4 else ("carol",))
    page = await store.mailbox(NET, "bob", limit=2)
    assert [m.message_id for m in page] == ["m0", "m1"]
    rest = await store.mailbox(NET, "bob", after_cursor=page[-1].cursor)
    assert [m.message_id for m in rest] == ["m2", "m3"]
    assert rest[0].sender == "alice" and rest[0].size > 0

    assert await store.get_envelope(NET, "m0") == '{"id": "m0", "ciphertext": "..."}'
    first, is_first = await store.record_delivery(NET, "m0", "bob", lambda prev: '{"delivered": 1}', T0 + 1)
    assert is_first
    assert await store.record_delivery(NET, "m0", "bob", lambda prev: '{"delivered": 2}', T0 + 2) == (first,
                                                                                          False)
    with pytest.raises(NoMessage):
        await store.record_delivery(NET, "m0", "mallory", lambda prev: "{}", T0)

    assert not await store.mark_collected(NET, "m0", "bob", T0 + 3)       # carol still waits
    assert not await store.mark_collected(NET, "m0", "bob", T0 + 3)       # idempotent
    assert [m.message_id for m in await store.mailbox(NET, "bob")] == ["m1", "m2", "m3"]
    await store.get_envelope(NET, "m0")
    assert await store.mark_collected(NET, "m0", "carol", T0 + 4)         # the last one
    with pytest.raises(Gone):
        await store.get_envelope(NET, "m0")
    with pytest.raises(NoMessage):
        await store.get_envelope(NET, "nope")
    assert await store.mailbox_head(NET, "bob") == rest[-1].cursor
    assert await store.mailbox_head(NET, "carol") > rest[-1].cursor
    assert await store.mailbox_head(NET, "mallory") == 0

    status = await store.message_status(NET, "m0")
    assert status.message.deleted_at == T0 + 4
    assert status.receipts == {"submission": '{"receipt": "m0"}'}
    by = {r.recipient: r for r in status.recipients}
    assert by["bob"].state == "collected" and by["bob"].receipts == {"delivery": first}
    assert by["carol"].state == "collected" and by["carol"].receipts == {}
    assert (await store.counts()).messages == 4
    await store.ping()


async def test_retention_expires_uncollected_envelopes(store):
    await store.create_network("other", "g", "{}", T0)
    await submit(store, "old", at=T0)
    await submit(store, "new", at=T0 + 100)
    await store.submit_message("other", "x", "alice", ["bob"], "{}", "h", 2, [], "{}", T0)
    await store.mark_collected(NET, "old", "bob", T0 + 1)

    expired = await store.expire_messages(T0 + 60, {NET: 50})
    assert [(e.message_id, e.recipient) for e in expired] == [("old", "carol")]
    with pytest.raises(Gone):
        await store.get_envelope(NET, "old")
    await store.get_envelope(NET, "new")
    await store.get_envelope("other", "x")                 # no retention given: kept
    assert [m.message_id for m in await store.mailbox(NET, "carol")] == ["new"]
    with pytest.raises(Gone):
        await store.mark_collected(NET, "old", "carol", T0 + 61)

    stored = await store.add_receipt(NET, "old", "carol", "not-collected", '{"nc": 1}', T0 + 60)
    assert await store.add_receipt(NET, "old", "carol", "not-collected", '{"nc": 2}', T0) == stored
    by = {r.recipient: r for r in (await store.message_status(NET, "old")).recipients}
    assert by["carol"].state == "not-collected"
    assert by["carol"].receipts == {"not-collected": '{"nc": 1}'}
    assert by["bob"].state == "collected"
    assert await store.expire_messages(T0 + 60, {NET: 50}) == []
    assert [e.network for e in await store.expire_messages(T0 + 60, {}, 10)] == ["other"]


# -- blobs -----------------------------------------------------------------------------------------

async def test_blob_rows_link_and_readers(store):
    a, b, c = new_blob_id(), new_blob_id(), new_blob_id()
    for blob_id in (a, b):
        await store.create_blob(NET, blob_id, "alice", 10, T0)
    await store.create_blob(NET, c, "mallory", 10, T0)
    with pytest.raises(Conflict):
        await store.create_blob(NET, a, "alice", 10, T0)
    with pytest.raises(BlobUnusable, match="not completely"):
        await submit(store, "m1", blob_ids=[a])
    with pytest.raises(NoMessage):                         # the refusal stored nothing
        await store.get_message(NET, "m1")
    await store.set_blob_complete(NET, a)
    await store.set_blob_complete(NET, c)
    with pytest.raises(BlobUnusable, match="someone else"):
        await submit(store, "m1", blob_ids=[a, c])
    with pytest.raises(NoBlob):
        await submit(store, "m1", blob_ids=[new_blob_id()])
    await submit(store, "m1", blob_ids=[a])
    with pytest.raises(BlobUnusable, match="another message"):
        await submit(store, "m2", blob_ids=[a])
    assert await store.blob_readers(NET, a) == {"alice", "bob", "carol"}
    assert await store.blob_readers(NET, b) == {"alice"}
    assert (await store.get_blob(NET, a)).message_id == "m1"
    with pytest.raises(NoBlob):
        await store.get_blob("other", a)

    assert [x.blob_id for x in await store.claim_orphan_blobs(T0)] == []
    assert {x.blob_id for x in await store.claim_orphan_blobs(T0 + 1)} == {b, c}
    for handle in ("bob", "carol"):
        await store.mark_collected(NET, "m1", handle, T0 + 2)
    claimed = {x.blob_id for x in await store.claim_orphan_blobs(T0 + 1)}
    assert claimed == {a, b, c}                            # a's message is gone now
    with pytest.raises(Gone):
        await store.blob_readers(NET, a)
    assert await store.delete_blob_rows(claimed) == 3
    assert await store.claim_orphan_blobs(T0 + 1) == []


async def test_blob_ids_are_strict(tmp_path):
    files = BlobFiles(tmp_path / "blobs")
    assert len(new_blob_id()) == 22 and new_blob_id() != new_blob_id()
    for bad in ("../../etc/passwd", "a" * 21, "a" * 23, "a" * 21 + "/", "a" * 20 + "..",
                "/" + "a" * 21, "a" * 21 + "\n", "", None, "a" * 21 + "é"):
        with pytest.raises(BadBlobId):
            files.path(bad)
        with pytest.raises(BadBlobId):
            await files.append(bad, 0, [b"x"], declared_size=1)


async def test_blob_upload_resume_complete_and_ranges(tmp_path):
    files = BlobFiles(tmp_path / "blobs")
    blob_id = new_blob_id()
    data = os.urandom(700_000)

    async def stream(payload, piece=65_536):
        for i in range(0, len(payload), piece):
            yield payload[i:i + piece]

    assert await files.current_size(blob_id) == 0
    size = await files.append(blob_id, 0, stream(data[:300_000]), declared_size=len(data))
    assert size == 300_000
    with pytest.raises(OffsetMismatch) as refused:
        await files.append(blob_id, 0, [data[:10]], declared_size=len(data))
    assert refused.value.current_size == 300_000
    with pytest.raises(TooLarge):
        await files.append(blob_id, 300_000, stream(data[300_000:] + b"overflow"),
                           declared_size=len(data))
    kept = await files.current_size(blob_id)              # whole chunks before the overflow
    assert 300_000 <= kept < len(data)
    with pytest.raises(OffsetMismatch):                   # not yet all there
        await files.complete(blob_id, expected_size=len(data))
    await files.append(blob_id, kept, [data[kept:]], declared_size=len(data))
    with pytest.raises(NoBlobFile):                       # not readable until complete
        await files.open_range(blob_id, 0, 10)

    assert await files.complete(blob_id, expected_size=len(data)) == len(data)
    assert await files.complete(blob_id) == len(data)     # idempotent
    assert files.path(blob_id).exists() and not files.part_path(blob_id).exists()
    with pytest.raises(AlreadyComplete):
        await files.append(blob_id, len(data), [b"x"], declared_size=len(data) + 1)

    async def read(start, end):
        return b"".join([piece async for piece in await files.open_range(blob_id, start, end)])
    assert await read(0, None) == data
    assert await read(262_000, 600_001) == data[262_000:600_001]
    assert await read(5, 5) == b""
    for start, end in ((-1, 5), (10, 5), (0, len(data) + 1)):
        with pytest.raises(BadRange):
            await files.open_range(blob_id, start, end)
    pieces = [len(p) async for p in await files.open_range(blob_id)]
    assert max(pieces) == 256 * 1024                      # flat memory: bounded pieces

    await files.delete(blob_id)
    assert not files.path(blob_id).exists()
    await files.delete(blob_id)


async def test_concurrent_upload_of_one_blob_is_refused(tmp_path):
    import fcntl
    files = BlobFiles(tmp_path / "blobs")
    blob_id = new_blob_id()
    fd = os.open(files.part_path(blob_id), os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)                         # another upload holds it
    try:
        with pytest.raises(UploadBusy):
            await files.append(blob_id, 0, [b"abc"], declared_size=3)
    finally:
        os.close(fd)
    assert await files.append(blob_id, 0, [b"abc"], declared_size=3) == 3


# -- crash -----------------------------------------------------------------------------------------

CHILD = Path(__file__).with_name("relay_store_crash_child.py")
ACKS_BEFORE_KILL = 400


def test_acknowledged_submissions_survive_kill_9(tmp_path):
    path = tmp_path / "relay.db"
    child = subprocess.Popen([sys.executable, str(CHILD), str(path), "50"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, child.kill)             # never hang the suite
    watchdog.start()
    acked: list[str] = []
    try:
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        while len(acked) < ACKS_BEFORE_KILL:
            line = child.stdout.readline()
            assert line, f"child died: {child.stderr.read()}"
            acked.append(line.strip())
        child.send_signal(signal.SIGKILL)
        acked += [line.strip() for line in child.stdout]   # acks printed before it died
        child.wait()
    finally:
        watchdog.cancel()
        child.kill()
    assert child.returncode == -signal.SIGKILL
    assert len(acked) == len(set(acked)) >= ACKS_BEFORE_KILL

    async def check():
        store = await Store.open(path)
        try:
            for message_id in acked:
                message = await store.get_message(NETWORK, message_id)
                assert message.recipients == tuple(RECIPIENTS)
            # A client retrying an acknowledged submission gets the old receipt, no new rows.
            envelope, envelope_hash = envelope_for(acked[-1])
            again = await store.submit_message(NETWORK, acked[-1], "alice", RECIPIENTS, envelope,
                                               envelope_hash, len(envelope), [], "{}", 0)
            assert again == ('{"receipt":1}', False)
            return await store.db.read(lambda db: (
                db.execute("PRAGMA integrity_check").fetchone()[0],
                db.execute("SELECT count(*) FROM (SELECT 1 FROM deliveries GROUP BY network, "
                           "message_id, recipient HAVING count(*) > 1)").fetchone()[0],
                db.execute("SELECT count(*) FROM messages m WHERE (SELECT count(*) FROM "
                           "deliveries d WHERE d.message_id = m.message_id) != 3").fetchone()[0],
            ))
        finally:
            await store.close()

    integrity, duplicated, incomplete = asyncio.run(check())
    assert (integrity, duplicated, incomplete) == ("ok", 0, 0)


def test_every_storage_error_has_a_wire_code():
    # The HTTP layer answers RelayError(exc.code, exc.message): an unknown code would be a 500.
    import inspect

    from relay import blobs, db, store
    from relay.errors import CATALOGUE
    errors = [obj for module in (db, store, blobs) for obj in vars(module).values()
              if inspect.isclass(obj) and issubclass(obj, db.StoreError)]
    assert len(errors) > 20
    assert {e.__name__: e.code for e in errors if e.code not in CATALOGUE} == {}


async def test_relay_receipts_of_one_message_form_one_chain(store):
    import base64
    import hashlib

    def h(text):
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    await submit(store, "m9", recipients=("bob", "carol", "dave"))
    submission = (await store.get_message(NET, "m9")).receipt
    seen = []

    def make(name):
        def sign(prev):
            seen.append(prev)
            return '{"r":"%s","prev":"%s"}' % (name, prev)
        return sign

    bob, _ = await store.record_delivery(NET, "m9", "bob", make("bob"), T0 + 1)
    carol, _ = await store.record_delivery(NET, "m9", "carol", make("carol"), T0 + 2)
    assert seen == [h(submission), h(bob)]
    # An outcome is settled once: no not-collected after delivered, no second delivery.
    again, created = await store.append_relay_receipt(NET, "m9", "bob", "not-collected",
                                                      make("x"), T0 + 3)
    assert (again, created) == (bob, False)
    dave, created = await store.append_relay_receipt(NET, "m9", "dave", "not-collected",
                                                     make("dave"), T0 + 4)
    assert created and seen[-1] == h(carol)
