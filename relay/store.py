"""The relay's storage interface: every SQL statement the relay runs, behind async methods.

Handlers make one call per request and never see SQL. Each write method is
one operation in the writer's next group commit (``relay.db``): it happens
completely or not at all, and it is durable once the ``await`` returns. Read
methods run on reader threads against one consistent snapshot.

Everything is keyed by network name. JSON documents (log entries, envelopes,
enrollment requests, receipts, audit details) are stored as the exact text
the caller passes and returned unchanged: the relay never re-serialises a
signed record. Hashes and ids are the wire strings. Times are integer Unix
seconds chosen by the caller, so tests and sweeps control the clock.

Refusals raise a ``StoreError`` subclass whose ``code`` is a wire error code
of relay/errors.py, so the HTTP layer maps them in one place with
``RelayError(exc.code, exc.message)``. A ``ValueError`` means the caller broke
the contract (a bug, not a client error). Row types and refusals are in relay/store_types.py;
pending identity rotations in relay/store_rotations.py (mixed in). Tables and the durability
argument: docs/relay-storage.md.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
from typing import Callable, Iterable, Mapping

from .db import Database, SchemaError, StoreError, Unavailable
from .store_rotations import RotationStore, forget_stale_rotations
from .store_types import (AuditEvent, BadCreationToken, Blob, BlobUnusable, Conflict,  # noqa: F401
                          EnrollmentExists, Enrollment, Expired, Forbidden, Gone, Invite, LogConflict,
                          LogEntry, MailboxItem, Message, MessageIdReused, MessageStatus, Network,
                          NetworkExists, NoBlob, NoInvite, NoMessage, NoNetwork, NotFound,
                          PendingRotation, RecipientStatus, StoredCounts, TooManyRotations)

__all__ = [
    "Store", "StoreError", "Unavailable", "SchemaError", "NotFound", "NoNetwork", "NoMessage",
    "NoInvite", "NoBlob", "Conflict", "NetworkExists", "LogConflict", "MessageIdReused",
    "EnrollmentExists", "BlobUnusable", "Gone", "Forbidden", "BadCreationToken",
    "TooManyRotations",
    "Network", "LogEntry", "Invite", "Enrollment", "MailboxItem", "Message", "RecipientStatus",
    "MessageStatus", "Expired", "Blob", "AuditEvent", "StoredCounts", "PendingRotation",
]

#: page size when the caller gives none; handlers clamp pages to relay.constants limits
DEFAULT_PAGE = 100
#: most messages one expiry sweep, or blobs one orphan claim, takes (keeps a batch short)
SWEEP_BATCH = 500

# Receipt kinds the store itself writes; add_receipt accepts others.
SUBMISSION = "submission"
DELIVERY = "delivery"
NOT_COLLECTED = "not-collected"


def _blob(row) -> Blob:
    return Blob(row["blob_id"], row["network"], row["owner"], row["size"], row["created_at"],
                bool(row["complete"]), row["message_id"], bool(row["deleting"]))


def _invite(row) -> Invite:
    return Invite(row["network"], row["invite_id"], row["handle"], row["role"],
                  row["created_by"], row["expires_at"])


# -- operations: plain functions run by the writer or a reader thread -----------------------------

def _require_network(db, network: str) -> None:
    if db.execute("SELECT 1 FROM networks WHERE name = ?", [network]).fetchone() is None:
        raise NoNetwork(f"no network {network!r} on this relay")


def _consume_token(db, network: str, token_hash: str, now: int) -> bool:
    cur = db.execute("DELETE FROM creation_tokens WHERE network = ? AND token_hash = ? "
                     "AND expires_at > ?", [network, token_hash, now])
    return cur.rowcount == 1


def _create_network(db, name, genesis_hash, genesis_entry, created_at, token_hash) -> Network:
    if db.execute("SELECT 1 FROM networks WHERE name = ?", [name]).fetchone():
        raise NetworkExists(f"a network named {name!r} already exists")
    if token_hash is not None and not _consume_token(db, name, token_hash, created_at):
        raise BadCreationToken()
    db.execute("INSERT INTO networks (name, genesis_hash, created_at) VALUES (?, ?, ?)",
               [name, genesis_hash, created_at])
    db.execute("INSERT INTO log_entries (network, seq, entry_hash, entry) VALUES (?, 0, ?, ?)",
               [name, genesis_hash, genesis_entry])
    return Network(name, genesis_hash, created_at)


def _head(db, network: str) -> LogEntry | None:
    row = db.execute("SELECT seq, entry_hash, entry FROM log_entries WHERE network = ? "
                     "ORDER BY seq DESC LIMIT 1", [network]).fetchone()
    return LogEntry(*row) if row else None


def _append_log_entry(db, network, seq, entry_hash, entry) -> LogEntry:
    head = _head(db, network)
    if head is None:
        raise NoNetwork(f"no network {network!r} on this relay")
    # The writer runs one operation at a time, so this check and the insert are atomic.
    if seq != head.seq + 1:
        raise LogConflict(f"entry seq {seq} is not the next one: the log is at {head.seq}",
                          head_seq=head.seq)
    db.execute("INSERT INTO log_entries (network, seq, entry_hash, entry) VALUES (?, ?, ?, ?)",
               [network, seq, entry_hash, entry])
    # In the same transaction: no rotation signed for this position can be listed afterwards.
    forget_stale_rotations(db, network, seq)
    return LogEntry(seq, entry_hash, entry)


def _add_enrollment(db, network, invite_id, request, now) -> bool:
    row = db.execute("SELECT expires_at FROM invites WHERE network = ? AND invite_id = ?",
                     [network, invite_id]).fetchone()
    if row is None or row[0] <= now:
        raise NoInvite()
    old = db.execute("SELECT request FROM enrollments WHERE network = ? AND invite_id = ?",
                     [network, invite_id]).fetchone()
    if old is not None:
        if old[0] == request:
            return False                          # the same request sent again
        raise EnrollmentExists()
    db.execute("INSERT INTO enrollments (network, invite_id, request, submitted_at) "
               "VALUES (?, ?, ?, ?)", [network, invite_id, request, now])
    return True


def _link_blobs(db, network: str, message_id: str, sender: str, blob_ids: Iterable[str]) -> None:
    for blob_id in dict.fromkeys(blob_ids):       # a repeated id is one blob
        row = db.execute("SELECT * FROM blobs WHERE blob_id = ? AND network = ?",
                         [blob_id, network]).fetchone()
        if row is None:
            raise NoBlob(f"no blob {blob_id!r} in this network")
        if row["owner"] != sender:
            raise BlobUnusable(f"blob {blob_id} was uploaded by someone else")
        if not row["complete"] or row["deleting"]:
            raise BlobUnusable(f"blob {blob_id} is not completely uploaded")
        if row["message_id"] not in (None, message_id):
            raise BlobUnusable(f"blob {blob_id} is already attached to another message")
        db.execute("UPDATE blobs SET message_id = ? WHERE blob_id = ?", [message_id, blob_id])


#: rows per multi-row INSERT: stays under SQLite's 32,766 bound parameters
_ROWS_PER_INSERT = 1000


def _insert_rows(db, table: str, columns: str, rows: list[tuple]) -> None:
    """One multi-row INSERT per ``_ROWS_PER_INSERT`` rows: one SQLite step, one GIL hand-over."""
    width = len(rows[0]) if rows else 0
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start:start + _ROWS_PER_INSERT]
        values = ",".join(["(" + ",".join("?" * width) + ")"] * len(chunk))
        db.conn.execute(f"INSERT INTO {table} ({columns}) VALUES {values}",
                        [value for row in chunk for value in row])


def _submit_messages(db, calls: list[tuple]) -> list[tuple[bool, object]]:
    """Store a batch of submissions (``_submit_message``'s arguments, one tuple each) in a
    few statements, not several per message; each gets its own ``(ok, value)``.

    Every statement the writer thread runs hands the GIL to the event loop and back, and
    while it waits for the GIL it holds the database: with several workers, the others
    wait too. So one SELECT finds the ids already stored (a retry gets its old receipt, an
    id reused for another envelope ``MessageIdReused``), then one multi-row INSERT each into
    messages, envelopes and deliveries. Raises on what only SQL detects (an unknown network,
    through the foreign key) or on a blob that cannot be linked; relay/db.py then runs the
    batch again one submission at a time, so only the culprit fails.
    """
    by_network: dict[str, list[str]] = {}
    for call in calls:
        by_network.setdefault(call[0], []).append(call[1])
    existing: dict[tuple[str, str], tuple[str, str]] = {}
    for network, ids in by_network.items():      # "network = ? AND message_id IN": the index
        for start in range(0, len(ids), _ROWS_PER_INSERT):
            chunk = ids[start:start + _ROWS_PER_INSERT]
            for row in db.conn.execute(
                    "SELECT message_id, envelope_hash, receipt FROM messages WHERE network = ? "
                    f"AND message_id IN ({','.join('?' * len(chunk))})", [network, *chunk]):
                existing[(network, row[0])] = (row[1], row[2])
    outcomes: list[tuple[bool, object]] = []
    messages, envelopes, deliveries, links = [], [], [], []
    for (network, message_id, sender, recipients, envelope, envelope_hash, size, blob_ids,
         receipt, accepted_at) in calls:
        old = existing.get((network, message_id))
        if old is not None:            # stored before, or earlier in this batch
            outcomes.append((True, (old[1], False)) if old[0] == envelope_hash
                            else (False, MessageIdReused()))
            continue
        existing[(network, message_id)] = (envelope_hash, receipt)
        messages.append((network, message_id, sender, envelope_hash, size, accepted_at, receipt))
        envelopes.append((network, message_id, envelope))
        deliveries.extend((network, message_id, r) for r in recipients)
        if blob_ids:
            links.append((network, message_id, sender, blob_ids))
        outcomes.append((True, (receipt, True)))
    if messages:
        _insert_rows(db, "messages", "network, message_id, sender, envelope_hash, size, "
                     "accepted_at, receipt", messages)
        _insert_rows(db, "envelopes", "network, message_id, envelope", envelopes)
        _insert_rows(db, "deliveries", "network, message_id, recipient", deliveries)
    for link in links:
        _link_blobs(db, *link)
    return outcomes


def _submit_message(db, network, message_id, sender, recipients, envelope, envelope_hash, size,
                    blob_ids, receipt, accepted_at) -> tuple[str, bool]:
    """One submission: ``(receipt, created)``; a retry gets the receipt stored first."""
    try:
        [(ok, value)] = _submit_messages(db, [(network, message_id, sender, recipients, envelope,
                                               envelope_hash, size, blob_ids, receipt,
                                               accepted_at)])
    except sqlite3.IntegrityError:
        _require_network(db, network)             # the foreign key failed: NoNetwork
        raise
    if not ok:
        raise value
    return value


_submit_message.bulk = _submit_messages


def _delivery_row(db, network, message_id, handle):
    row = db.execute("SELECT * FROM deliveries WHERE network = ? AND message_id = ? "
                     "AND recipient = ?", [network, message_id, handle]).fetchone()
    if row is None:
        raise NoMessage(f"no message {message_id!r} addressed to {handle!r}")
    return row


def _insert_receipt(db, network, message_id, recipient, kind, receipt, at) -> str:
    """Store a receipt unless one of that kind exists; return the one stored."""
    db.execute("INSERT INTO receipts (network, message_id, recipient, kind, receipt, at) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
               [network, message_id, recipient, kind, receipt, at])
    return db.execute("SELECT receipt FROM receipts WHERE network = ? AND message_id = ? "
                      "AND coalesce(recipient, '') = coalesce(?, '') AND kind = ?",
                      [network, message_id, recipient, kind]).fetchone()[0]


#: relay receipts that settle one recipient: at most one of them per recipient
_OUTCOMES = (DELIVERY, NOT_COLLECTED)


def _append_relay_receipt(db, network, message_id, recipient, kind, make, at) -> tuple[str, bool]:
    """Chain a recipient's outcome receipt after the relay's latest receipt of the message.

    ``make(prev)`` signs the receipt given the base64url evidence hash of the
    relay's previous receipt; it runs inside the writer, so receipts of one
    message form a single chain even when recipients fetch concurrently.
    Returns ``(receipt, created)``; the recipient's existing outcome if it has one.
    """
    existing = db.execute(
        "SELECT kind, receipt FROM receipts WHERE network = ? AND message_id = ? "
        "AND recipient = ? AND kind IN (?, ?)",
        [network, message_id, recipient, *_OUTCOMES]).fetchone()
    if existing is not None:
        return existing[1], False
    last = db.execute(
        "SELECT receipt FROM receipts WHERE network = ? AND message_id = ? "
        "AND kind IN (?, ?) ORDER BY id DESC LIMIT 1",
        [network, message_id, *_OUTCOMES]).fetchone()
    if last is None:                      # the first outcome follows the submission receipt
        last = (_message(db, network, message_id).receipt,)
    # Receipts are stored as their canonical JSON, so this is keys.receipts.evidence_hash.
    prev = base64.urlsafe_b64encode(hashlib.sha256(last[0].encode("utf-8")).digest()) \
        .rstrip(b"=").decode("ascii")
    receipt = make(prev)
    return _insert_receipt(db, network, message_id, recipient, kind, receipt, at), True


def _record_delivery(db, network, message_id, handle, make_receipt, at) -> tuple[str, bool]:
    row = _delivery_row(db, network, message_id, handle)
    if row["expired_at"] is not None and row["collected_at"] is None:
        raise Gone("the message expired before it was collected")
    db.execute("UPDATE deliveries SET delivered_at = ? WHERE cursor = ? AND delivered_at IS NULL",
               [at, row["cursor"]])
    return _append_relay_receipt(db, network, message_id, handle, DELIVERY, make_receipt, at)


def _drop_envelope(db, network, message_id, at) -> None:
    db.execute("DELETE FROM envelopes WHERE network = ? AND message_id = ?", [network, message_id])
    db.execute("UPDATE messages SET deleted_at = ? WHERE network = ? AND message_id = ?",
               [at, network, message_id])
    db.execute("UPDATE blobs SET deleting = 1 WHERE network = ? AND message_id = ?",
               [network, message_id])


def _mark_collected(db, network, message_id, handle, at) -> bool:
    row = _delivery_row(db, network, message_id, handle)
    if row["collected_at"] is not None:
        return False
    if row["expired_at"] is not None:
        raise Gone("the message expired before it was collected")
    db.execute("UPDATE deliveries SET collected_at = ? WHERE cursor = ?", [at, row["cursor"]])
    waiting = db.execute("SELECT count(*) FROM deliveries WHERE network = ? AND message_id = ? "
                         "AND collected_at IS NULL AND expired_at IS NULL",
                         [network, message_id]).fetchone()[0]
    if waiting:
        return False
    _drop_envelope(db, network, message_id, at)
    return True


def _expire_messages(db, now, retention_by_network, default_retention, limit) -> list[Expired]:
    expired: list[Expired] = []
    budget = limit
    for (network,) in db.execute("SELECT name FROM networks ORDER BY name").fetchall():
        retention = retention_by_network.get(network, default_retention)
        if retention is None or budget <= 0:
            continue
        due = db.execute("SELECT message_id FROM messages WHERE network = ? AND deleted_at IS NULL "
                         "AND accepted_at <= ? ORDER BY accepted_at LIMIT ?",
                         [network, now - retention, budget]).fetchall()
        budget -= len(due)
        for (message_id,) in due:
            for (recipient,) in db.execute(
                    "UPDATE deliveries SET expired_at = ? WHERE network = ? AND message_id = ? "
                    "AND collected_at IS NULL AND expired_at IS NULL RETURNING recipient",
                    [now, network, message_id]).fetchall():
                expired.append(Expired(network, message_id, recipient))
            _drop_envelope(db, network, message_id, now)
    return expired


def _message(db, network, message_id) -> Message:
    row = db.execute("SELECT * FROM messages WHERE network = ? AND message_id = ?",
                     [network, message_id]).fetchone()
    if row is None:
        raise NoMessage()
    recipients = tuple(r[0] for r in db.execute(
        "SELECT recipient FROM deliveries WHERE network = ? AND message_id = ? ORDER BY cursor",
        [network, message_id]))
    return Message(network, message_id, row["sender"], recipients, row["envelope_hash"],
                   row["size"], row["accepted_at"], row["receipt"], row["deleted_at"])


def _message_status(db, network, message_id) -> MessageStatus:
    message = _message(db, network, message_id)
    general = {SUBMISSION: message.receipt}
    per: dict[str, dict[str, str]] = {r: {} for r in message.recipients}
    for row in db.execute("SELECT recipient, kind, receipt FROM receipts WHERE network = ? "
                          "AND message_id = ? ORDER BY id", [network, message_id]):
        (general if row[0] is None else per.setdefault(row[0], {}))[row[1]] = row[2]
    rows = db.execute("SELECT * FROM deliveries WHERE network = ? AND message_id = ? "
                      "ORDER BY cursor", [network, message_id])
    recipients = [RecipientStatus(r["recipient"], r["delivered_at"], r["collected_at"],
                                  r["expired_at"], per[r["recipient"]]) for r in rows]
    return MessageStatus(message, general, recipients)


def _get_envelope(db, network, message_id) -> str:
    row = db.execute("SELECT envelope FROM envelopes WHERE network = ? AND message_id = ?",
                     [network, message_id]).fetchone()
    if row is not None:
        return row[0]
    if db.execute("SELECT 1 FROM messages WHERE network = ? AND message_id = ?",
                  [network, message_id]).fetchone():
        raise Gone("the envelope is no longer held: it was collected or it expired")
    raise NoMessage()


def _get_blob(db, network, blob_id) -> Blob:
    row = db.execute("SELECT * FROM blobs WHERE blob_id = ? AND network = ?",
                     [blob_id, network]).fetchone()
    if row is None:
        raise NoBlob()
    return _blob(row)


def _claim_orphan_blobs(db, older_than, limit) -> list[Blob]:
    db.execute("UPDATE blobs SET deleting = 1 WHERE blob_id IN (SELECT blob_id FROM blobs "
               "WHERE message_id IS NULL AND created_at < ? AND deleting = 0 LIMIT ?)",
               [older_than, limit])
    rows = db.execute("SELECT * FROM blobs WHERE deleting = 1 LIMIT ?", [limit]).fetchall()
    return [_blob(r) for r in rows]


def _rows(db, sql, params, make):
    return [make(*row) for row in db.execute(sql, params)]


# -- the interface --------------------------------------------------------------------------------

class Store(RotationStore):
    """All relay state. Open with ``await Store.open(path)``; close with ``await store.close()``."""

    def __init__(self, db: Database):
        self.db = db

    @classmethod
    async def open(cls, path: str | os.PathLike, **options) -> "Store":
        """Open the database at ``path`` (options go to ``Database.open``)."""
        return cls(await Database.open(path, **options))

    async def close(self) -> None:
        await self.db.close()

    # creation tokens

    async def add_creation_token(self, network: str, token_hash: str, expires_at: int) -> None:
        """Allow one creation of ``network`` by the holder of the secret behind ``token_hash``."""
        def op(db):
            db.execute("INSERT OR REPLACE INTO creation_tokens (network, token_hash, expires_at) "
                       "VALUES (?, ?, ?)", [network, token_hash, expires_at])
        await self.db.write(op)

    async def consume_creation_token(self, network: str, token_hash: str, now: int) -> bool:
        """Delete the token and return True if it existed and was unexpired; else False."""
        return await self.db.write(_consume_token, network, token_hash, now)

    async def expire_creation_tokens(self, now: int) -> int:
        """Delete expired tokens; return how many."""
        return await self.db.write(lambda db: db.execute(
            "DELETE FROM creation_tokens WHERE expires_at <= ?", [now]).rowcount)

    # authentication challenges used by a valid signature

    async def use_challenge(self, network: str, handle: str, challenge: str,
                            expires_at: int) -> bool:
        """Record that a member's valid signature used ``challenge``; False if it was already
        (a replay). Kept until ``expires_at``: after that the challenge is refused by age."""
        def op(db):
            # The primary key makes this atomic across workers: of two redemptions, one inserts.
            return db.execute("INSERT OR IGNORE INTO used_challenges (network, handle, challenge, "
                              "expires_at) VALUES (?, ?, ?, ?)",
                              [network, handle, challenge, expires_at]).rowcount == 1
        return await self.db.write(op)

    async def challenge_used(self, network: str, handle: str, challenge: str) -> bool:
        """Whether a valid signature already used ``challenge`` (a read; ``use_challenge``
        is what decides a race)."""
        return await self.db.read(lambda db: db.execute(
            "SELECT 1 FROM used_challenges WHERE network = ? AND handle = ? AND challenge = ?",
            [network, handle, challenge]).fetchone() is not None)

    async def expire_used_challenges(self, now: int) -> int:
        """Forget used challenges that expired before ``now``; return how many."""
        return await self.db.write(lambda db: db.execute(
            "DELETE FROM used_challenges WHERE expires_at < ?", [now]).rowcount)

    # networks and the membership log

    async def create_network(self, name: str, genesis_hash: str, genesis_entry: str,
                             created_at: int, *, token_hash: str | None = None) -> Network:
        """Create a network whose log starts with ``genesis_entry`` (seq 0).

        With ``token_hash`` the creation token is consumed in the same
        transaction (BadCreationToken if unknown, used or expired; not
        consumed if the network exists). Raises NetworkExists.
        """
        return await self.db.write(_create_network, name, genesis_hash, genesis_entry,
                                   created_at, token_hash)

    async def get_network(self, name: str) -> Network:
        """Raises NoNetwork."""
        def op(db):
            row = db.execute("SELECT name, genesis_hash, created_at FROM networks WHERE name = ?",
                             [name]).fetchone()
            if row is None:
                raise NoNetwork(f"no network {name!r} on this relay")
            return Network(*row)
        return await self.db.read(op)

    async def list_networks(self) -> list[Network]:
        return await self.db.read(_rows, "SELECT name, genesis_hash, created_at FROM networks "
                                  "ORDER BY name", [], Network)

    async def append_log_entry(self, network: str, seq: int, entry_hash: str,
                               entry: str) -> LogEntry:
        """Append entry ``seq``; LogConflict unless ``seq`` is exactly the head's seq + 1.

        Of two concurrent appends of the same seq exactly one succeeds. The
        caller verifies the entry against ``log_head`` before appending; the
        head it verified against cannot change without this refusing.
        """
        return await self.db.write(_append_log_entry, network, seq, entry_hash, entry)

    async def log_entries(self, network: str, since_seq: int = 0,
                          limit: int = DEFAULT_PAGE) -> list[LogEntry]:
        """Entries with ``seq >= since_seq`` (inclusive), oldest first. Raises NoNetwork."""
        def op(db):
            rows = _rows(db, "SELECT seq, entry_hash, entry FROM log_entries WHERE network = ? "
                         "AND seq >= ? ORDER BY seq LIMIT ?", [network, since_seq, limit], LogEntry)
            if not rows:
                _require_network(db, network)
            return rows
        return await self.db.read(op)

    async def log_head(self, network: str) -> LogEntry:
        """The last entry. Raises NoNetwork."""
        def op(db):
            head = _head(db, network)
            if head is None:
                raise NoNetwork(f"no network {network!r} on this relay")
            return head
        return await self.db.read(op)

    # invites and enrollments

    async def add_invite(self, network: str, invite_id: str, handle: str, role: str,
                         created_by: str, expires_at: int) -> Invite:
        """Raises NoNetwork, or Conflict if ``invite_id`` is taken."""
        def op(db):
            _require_network(db, network)
            try:
                db.execute("INSERT INTO invites (network, invite_id, handle, role, created_by, "
                           "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                           [network, invite_id, handle, role, created_by, expires_at])
            except sqlite3.IntegrityError:
                raise Conflict(f"invite id {invite_id!r} is already used") from None
            return Invite(network, invite_id, handle, role, created_by, expires_at)
        return await self.db.write(op)

    async def get_invite(self, network: str, invite_id: str) -> Invite:
        """The invite, expired or not (compare ``expires_at``). Raises NoInvite."""
        def op(db):
            row = db.execute("SELECT * FROM invites WHERE network = ? AND invite_id = ?",
                             [network, invite_id]).fetchone()
            if row is None:
                raise NoInvite()
            return _invite(row)
        return await self.db.read(op)

    async def add_enrollment(self, network: str, invite_id: str, request: str, now: int) -> bool:
        """Store the enrollment request for an unexpired invite; True if stored, False if this
        exact request was already stored. Raises NoInvite, or EnrollmentExists for a
        different request on the same invite."""
        return await self.db.write(_add_enrollment, network, invite_id, request, now)

    async def list_enrollments(self, network: str, now: int) -> list[Enrollment]:
        """Pending enrollments of unexpired invites, oldest first."""
        def op(db):
            rows = db.execute(
                "SELECT i.*, e.request, e.submitted_at FROM enrollments e JOIN invites i "
                "USING (network, invite_id) WHERE e.network = ? AND i.expires_at > ? "
                "ORDER BY e.submitted_at, e.invite_id", [network, now])
            return [Enrollment(_invite(r), r["request"], r["submitted_at"]) for r in rows]
        return await self.db.read(op)

    async def delete_invite(self, network: str, invite_id: str) -> bool:
        """Delete the invite and its enrollment (approved or revoked); True if it existed."""
        return await self.db.write(lambda db: db.execute(
            "DELETE FROM invites WHERE network = ? AND invite_id = ?",
            [network, invite_id]).rowcount == 1)

    async def delete_invites_for_handle(self, network: str, handle: str) -> int:
        """Delete every invite (and enrollment) for ``handle``, e.g. once it was added to the
        log; return how many went."""
        return await self.db.write(lambda db: db.execute(
            "DELETE FROM invites WHERE network = ? AND handle = ?", [network, handle]).rowcount)

    async def expire_invites(self, now: int) -> list[tuple[str, str]]:
        """Delete expired invites with their enrollments; return their (network, invite_id)."""
        return await self.db.write(lambda db: [tuple(r) for r in db.execute(
            "DELETE FROM invites WHERE expires_at <= ? RETURNING network, invite_id",
            [now]).fetchall()])

    # messages

    async def submit_message(self, network: str, message_id: str, sender: str,
                             recipients: list[str], envelope: str, envelope_hash: str,
                             size: int, blob_ids: Iterable[str], receipt: str,
                             accepted_at: int) -> tuple[str, bool]:
        """Store an envelope, a mailbox row per recipient, link its blobs; idempotent.

        Returns ``(receipt, created)``. A retry with the same ``envelope_hash``
        returns the receipt stored the first time and ``created=False``; a
        different hash under the same id raises MessageIdReused. Raises
        NoNetwork, NoBlob, BlobUnusable (and nothing is stored).
        """
        recipients = list(recipients)
        if not recipients or len(set(recipients)) != len(recipients):
            raise ValueError("recipients must be a non-empty list without repeats")
        return await self.db.write(_submit_message, network, message_id, sender, recipients,
                                   envelope, envelope_hash, size, list(blob_ids), receipt,
                                   accepted_at)

    async def mailbox(self, network: str, handle: str, after_cursor: int = 0,
                      limit: int = DEFAULT_PAGE) -> list[MailboxItem]:
        """Envelopes ``handle`` has not collected, cursor order, cursors > ``after_cursor``."""
        return await self.db.read(
            _rows, "SELECT d.cursor, d.message_id, m.sender, m.size, m.accepted_at "
            "FROM deliveries d JOIN messages m USING (network, message_id) "
            "WHERE d.network = ? AND d.recipient = ? AND d.cursor > ? "
            "AND d.collected_at IS NULL AND d.expired_at IS NULL ORDER BY d.cursor LIMIT ?",
            [network, handle, after_cursor, limit], MailboxItem)

    async def mailbox_head(self, network: str, handle: str) -> int:
        """The largest cursor ever given to a message for ``handle`` (0 if none): a client
        that has seen everything up to it pages from there."""
        return await self.db.read(lambda db: db.execute(
            "SELECT coalesce(max(cursor), 0) FROM deliveries WHERE network = ? AND recipient = ?",
            [network, handle]).fetchone()[0])

    async def get_message(self, network: str, message_id: str) -> Message:
        """Metadata, recipients and submission receipt (kept after the envelope goes).
        Raises NoMessage."""
        return await self.db.read(_message, network, message_id)

    async def get_envelope(self, network: str, message_id: str) -> str:
        """The envelope JSON. Raises NoMessage, or Gone once collected by all or expired."""
        return await self.db.read(_get_envelope, network, message_id)

    async def record_delivery(self, network: str, message_id: str, handle: str,
                              make_receipt: Callable[[str], str], at: int) -> tuple[str, bool]:
        """Record ``handle``'s first fetch; ``make_receipt(prev)`` signs the delivery receipt
        chained after the relay's latest receipt of the message (see _append_relay_receipt).
        Returns ``(receipt, first)``: the stored receipt, and whether this fetch created it.
        Raises NoMessage (not a recipient), Gone (expired)."""
        return await self.db.write(_record_delivery, network, message_id, handle, make_receipt, at)

    async def append_relay_receipt(self, network: str, message_id: str, recipient: str, kind: str,
                                   make_receipt: Callable[[str], str], at: int) -> tuple[str, bool]:
        """Chain an outcome receipt (``not-collected``) for a recipient that has none yet."""
        return await self.db.write(_append_relay_receipt, network, message_id, recipient, kind,
                                   make_receipt, at)

    async def mark_collected(self, network: str, message_id: str, handle: str, at: int) -> bool:
        """``handle`` has the envelope and its attachments. Returns True when this was the
        last recipient, and the envelope was deleted (its blobs are then claimed by
        ``claim_orphan_blobs``). Idempotent. Raises NoMessage, Gone (expired first)."""
        return await self.db.write(_mark_collected, network, message_id, handle, at)

    async def message_status(self, network: str, message_id: str) -> MessageStatus:
        """Per-recipient state and every receipt. Raises NoMessage."""
        return await self.db.read(_message_status, network, message_id)

    async def expire_messages(self, now: int, retention_by_network: Mapping[str, int],
                              default_retention: int | None = None,
                              limit: int = SWEEP_BATCH) -> list[Expired]:
        """Delete envelopes held longer than their network's retention (networks missing from
        the mapping use ``default_retention``, or are skipped if it is None); mark each
        waiting recipient not-collected and return them, so the caller can sign a
        not-collected receipt for each and store it with ``add_receipt``. At most ``limit``
        messages per call: call again while it returns something."""
        return await self.db.write(_expire_messages, now, dict(retention_by_network),
                                   default_retention, limit)

    async def add_receipt(self, network: str, message_id: str, recipient: str | None, kind: str,
                          receipt: str, at: int) -> str:
        """Store a receipt (``recipient`` None for the message as a whole) unless one of that
        kind is stored already; return the stored one. Raises NoMessage."""
        def op(db):
            if recipient is None:
                _message(db, network, message_id)
            else:
                _delivery_row(db, network, message_id, recipient)
            return _insert_receipt(db, network, message_id, recipient, kind, receipt, at)
        return await self.db.write(op)

    # blobs (the bytes are in relay.blobs.BlobFiles)

    async def create_blob(self, network: str, blob_id: str, owner: str, size: int,
                          created_at: int) -> Blob:
        """Raises NoNetwork, or Conflict if the id is taken."""
        def op(db):
            _require_network(db, network)
            try:
                db.execute("INSERT INTO blobs (blob_id, network, owner, size, created_at) "
                           "VALUES (?, ?, ?, ?, ?)", [blob_id, network, owner, size, created_at])
            except sqlite3.IntegrityError:
                raise Conflict(f"blob id {blob_id!r} is already used") from None
            return Blob(blob_id, network, owner, size, created_at, False, None, False)
        return await self.db.write(op)

    async def get_blob(self, network: str, blob_id: str) -> Blob:
        """Raises NoBlob."""
        return await self.db.read(_get_blob, network, blob_id)

    async def set_blob_complete(self, network: str, blob_id: str) -> Blob:
        """Mark the upload finished (after ``BlobFiles.complete``). Raises NoBlob."""
        def op(db):
            blob = _get_blob(db, network, blob_id)
            if blob.deleting:
                raise Gone("the blob was abandoned and is being deleted")
            db.execute("UPDATE blobs SET complete = 1 WHERE blob_id = ?", [blob_id])
            return blob._replace(complete=True)
        return await self.db.write(op)

    async def link_blobs(self, network: str, message_id: str, blob_ids: Iterable[str]) -> None:
        """Attach blobs to a message (``submit_message`` does this itself). Each must be the
        sender's, complete, and not attached elsewhere. Raises NoMessage, NoBlob, BlobUnusable."""
        def op(db):
            _link_blobs(db, network, message_id, _message(db, network, message_id).sender,
                        blob_ids)
        await self.db.write(op)

    async def blob_readers(self, network: str, blob_id: str) -> set[str]:
        """Handles that may download the blob: its owner, plus the recipients of the message
        it is attached to while that message's envelope is held. Raises NoBlob, Gone."""
        def op(db):
            blob = _get_blob(db, network, blob_id)
            if blob.deleting:
                raise Gone("the blob is no longer held")
            readers = {blob.owner}
            if blob.message_id is not None:
                readers.update(r[0] for r in db.execute(
                    "SELECT recipient FROM deliveries WHERE network = ? AND message_id = ?",
                    [network, blob.message_id]))
            return readers
        return await self.db.read(op)

    async def claim_orphan_blobs(self, older_than: int, limit: int = SWEEP_BATCH) -> list[Blob]:
        """Blobs to delete: those of deleted messages and those never attached and created
        before ``older_than``. They are marked ``deleting`` (no longer attachable or
        readable). The sweeper deletes each file, then calls ``delete_blob_rows``; a claim
        interrupted by a crash is returned again by the next call."""
        return await self.db.write(_claim_orphan_blobs, older_than, limit)

    async def delete_blob_rows(self, blob_ids: Iterable[str]) -> int:
        """Forget claimed blobs whose files are gone; return how many rows went."""
        ids = list(blob_ids)
        return await self.db.write(lambda db: db.conn.executemany(
            "DELETE FROM blobs WHERE blob_id = ? AND deleting = 1", [(i,) for i in ids]).rowcount)

    # audit and metrics

    async def audit(self, event: str, network: str | None, handle: str | None, detail: str,
                    at: int) -> int:
        """Append an audit record (``detail`` is JSON text); return its id."""
        return await self.db.write(lambda db: db.execute(
            "INSERT INTO audit (at, event, network, handle, detail) VALUES (?, ?, ?, ?, ?)",
            [at, event, network, handle, detail]).lastrowid)

    async def list_audit(self, network: str | None, limit: int = DEFAULT_PAGE) -> list[AuditEvent]:
        """Newest first; ``network`` None lists relay-wide events (those without a network)."""
        return await self.db.read(
            _rows, "SELECT id, at, event, network, handle, detail FROM audit "
            "WHERE network IS ? ORDER BY id DESC LIMIT ?", [network, limit], AuditEvent)

    async def ping(self) -> None:
        """Raise unless a reader can query the database (for /healthz)."""
        await self.db.read(lambda db: db.execute("SELECT 1").fetchone())

    async def counts(self) -> StoredCounts:
        """What the relay holds now, for /metrics."""
        def op(db):
            m = db.execute("SELECT count(*), total(size) FROM messages "
                           "WHERE deleted_at IS NULL").fetchone()
            b = db.execute("SELECT count(*), total(size) FROM blobs").fetchone()
            return StoredCounts(m[0], int(m[1]), b[0], int(b[1]))
        return await self.db.read(op)

    def queue_depth(self) -> int:
        """Write operations waiting for the writer thread, for /metrics."""
        return self.db.queue_depth()
