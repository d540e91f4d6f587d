"""The relay database schema, as an ordered list of migrations.

``MIGRATIONS[i]`` takes a database from version ``i`` to version ``i + 1``;
the version a database is at lives in the one-row table ``schema_version``
(kept by ``relay.db``, not by these scripts). A released migration is never
edited: a change of schema is a new script appended to the list. Each script
runs inside one transaction together with the version bump, so a database is
always at exactly one version; ``relay.db`` takes an online backup before it
upgrades a database that already holds data. docs/relay-storage.md
describes every table.

Conventions: times are integer Unix seconds; hashes, ids and handles are TEXT
exactly as they travel on the wire; signed JSON documents (log entries,
envelopes, requests, receipts) are TEXT stored byte for byte as received or
signed, never re-serialised.
"""

from __future__ import annotations

_V1 = """
-- One-time tokens that let an operator-chosen administrator create a network.
CREATE TABLE creation_tokens (
    network     TEXT NOT NULL,
    token_hash  TEXT NOT NULL,          -- hash of the secret; the secret itself is never stored
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (network, token_hash)
) WITHOUT ROWID;

CREATE TABLE networks (
    name          TEXT PRIMARY KEY,
    genesis_hash  TEXT NOT NULL,        -- the network fingerprint
    created_at    INTEGER NOT NULL
);

-- The membership log, entry 0 being the genesis entry.
CREATE TABLE log_entries (
    network     TEXT NOT NULL REFERENCES networks (name),
    seq         INTEGER NOT NULL,
    entry_hash  TEXT NOT NULL,
    entry       TEXT NOT NULL,
    PRIMARY KEY (network, seq)
);

CREATE TABLE invites (
    network     TEXT NOT NULL REFERENCES networks (name),
    invite_id   TEXT NOT NULL,
    handle      TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (network, invite_id)
) WITHOUT ROWID;

-- At most one enrollment request per invite; it goes when the invite goes.
CREATE TABLE enrollments (
    network       TEXT NOT NULL,
    invite_id     TEXT NOT NULL,
    request       TEXT NOT NULL,
    submitted_at  INTEGER NOT NULL,
    PRIMARY KEY (network, invite_id),
    FOREIGN KEY (network, invite_id) REFERENCES invites (network, invite_id) ON DELETE CASCADE
);

-- One row per accepted message, kept after the envelope is deleted (it is evidence).
CREATE TABLE messages (
    network        TEXT NOT NULL REFERENCES networks (name),
    message_id     TEXT NOT NULL,
    sender         TEXT NOT NULL,
    envelope_hash  TEXT NOT NULL,
    size           INTEGER NOT NULL,
    accepted_at    INTEGER NOT NULL,
    receipt        TEXT NOT NULL,       -- the relay's signed submission receipt
    deleted_at     INTEGER,             -- when the envelope was deleted (collected or expired)
    PRIMARY KEY (network, message_id)
);
CREATE INDEX messages_held ON messages (network, accepted_at) WHERE deleted_at IS NULL;

-- The ciphertext, only while some recipient may still collect it.
CREATE TABLE envelopes (
    network     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    PRIMARY KEY (network, message_id),
    FOREIGN KEY (network, message_id) REFERENCES messages (network, message_id)
);

-- One row per (message, recipient): the mailbox while pending, the status afterwards.
-- AUTOINCREMENT: a cursor is never reused, so "after cursor N" never skips a message.
CREATE TABLE deliveries (
    cursor        INTEGER PRIMARY KEY AUTOINCREMENT,
    network       TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    delivered_at  INTEGER,              -- first time the recipient fetched the envelope
    collected_at  INTEGER,              -- the recipient confirmed collection
    expired_at    INTEGER,              -- retention ran out before collection
    UNIQUE (network, message_id, recipient),
    FOREIGN KEY (network, message_id) REFERENCES messages (network, message_id)
);
CREATE INDEX deliveries_mailbox ON deliveries (network, recipient, cursor)
    WHERE collected_at IS NULL AND expired_at IS NULL;
CREATE INDEX deliveries_by_recipient ON deliveries (network, recipient, cursor);

-- Signed receipts: submission (recipient NULL), delivery, not-collected, and any later kind.
-- The first receipt of a kind for a recipient is the one kept.
CREATE TABLE receipts (
    id          INTEGER PRIMARY KEY,
    network     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    recipient   TEXT,
    kind        TEXT NOT NULL,
    receipt     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    FOREIGN KEY (network, message_id) REFERENCES messages (network, message_id)
);
CREATE UNIQUE INDEX receipts_one_per_kind
    ON receipts (network, message_id, coalesce(recipient, ''), kind);

-- Attachment blobs; the bytes are files named by blob_id (relay.blobs). Ids are random and
-- unique across networks because the files share one folder.
CREATE TABLE blobs (
    blob_id     TEXT PRIMARY KEY,
    network     TEXT NOT NULL REFERENCES networks (name),
    owner       TEXT NOT NULL,
    size        INTEGER NOT NULL,       -- declared size; the upload may not exceed it
    created_at  INTEGER NOT NULL,
    complete    INTEGER NOT NULL DEFAULT 0,
    message_id  TEXT,                   -- set once, when a message links the blob
    deleting    INTEGER NOT NULL DEFAULT 0  -- its message is gone or it was abandoned: the
                                        -- sweeper deletes the file, then the row
) WITHOUT ROWID;
CREATE INDEX blobs_by_message ON blobs (network, message_id) WHERE message_id IS NOT NULL;
CREATE INDEX blobs_unlinked ON blobs (created_at) WHERE message_id IS NULL;
CREATE INDEX blobs_deleting ON blobs (deleting) WHERE deleting = 1;

-- Append-only record of what the relay did; detail is JSON.
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    event    TEXT NOT NULL,
    network  TEXT,
    handle   TEXT,
    detail   TEXT NOT NULL
);
CREATE INDEX audit_by_network ON audit (network, id);
"""

_V2 = """
-- Identity rotations signed by the member's old and new keys, waiting for an
-- administrator's countersignature (comity approve-rotation). One per member.
CREATE TABLE pending_rotations (
    network       TEXT NOT NULL REFERENCES networks (name),
    handle        TEXT NOT NULL,
    entry         TEXT NOT NULL,        -- the partly signed rotate-identity-key entry, as received
    submitted_at  INTEGER NOT NULL,
    PRIMARY KEY (network, handle)
) WITHOUT ROWID;
"""

_V3 = """
-- Authentication challenges, one use each. In the database rather than in memory so that
-- with several workers the token request may reach another process than the challenge.
CREATE TABLE auth_challenges (
    network     TEXT NOT NULL,
    handle      TEXT NOT NULL,
    challenge   TEXT NOT NULL,          -- base64url of 32 random bytes, as sent
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (network, handle, challenge)
) WITHOUT ROWID;
CREATE INDEX auth_challenges_expiry ON auth_challenges (expires_at);
"""

_V4 = """
-- Challenges are derived from a relay MAC and a time (relay/auth.py), not stored when issued:
-- an anonymous flood of stored challenges locked members out. Only a challenge that a member's
-- valid signature used is written down, so that it is used once; any worker can see it here.
DROP TABLE auth_challenges;
CREATE TABLE used_challenges (
    network     TEXT NOT NULL,
    handle      TEXT NOT NULL,
    challenge   TEXT NOT NULL,          -- base64url, as sent
    expires_at  INTEGER NOT NULL,       -- after this the challenge is refused by age anyway
    PRIMARY KEY (network, handle, challenge)
) WITHOUT ROWID;
CREATE INDEX used_challenges_expiry ON used_challenges (expires_at);
"""

_V5 = """
-- Every identity rotation waiting for an administrator, no longer one per member: a later
-- request (perhaps by a thief holding the old key) must not replace the member's own, and
-- competing requests must be visible. The rows of version 3 are dropped, not carried over:
-- any of them may be such a replacement, and SQLite cannot compute their ids; members run
-- 'comity rotate --identity' again (their client kept the new key).
DROP TABLE pending_rotations;
CREATE TABLE pending_rotations (
    network       TEXT NOT NULL REFERENCES networks (name),
    rotation_id   TEXT NOT NULL,        -- base64url SHA-256 of the entry as received (its entry hash)
    handle        TEXT NOT NULL,
    seq           INTEGER NOT NULL,     -- the log position it was signed for: stale once the log has it
    entry         TEXT NOT NULL,        -- the partly signed rotate-identity-key entry, as received
    submitted_at  INTEGER NOT NULL,
    PRIMARY KEY (network, rotation_id)
) WITHOUT ROWID;
CREATE INDEX pending_rotations_by_member ON pending_rotations (network, handle, seq);
CREATE INDEX pending_rotations_by_age ON pending_rotations (submitted_at);
"""

_V6 = """
-- How many write batches the relay committed (and so may have acknowledged), counted in the
-- same transaction as the writes; copied after each commit into the write-mark file beside the
-- database (relay/integrity.py), so a database that lost acknowledged writes is noticed.
CREATE TABLE write_mark (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL
);
INSERT INTO write_mark (id, seq) VALUES (1, 0);
"""

#: ``MIGRATIONS[i]`` upgrades a database from version ``i`` to ``i + 1``; append only
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6)

#: the version this release reads and writes
SCHEMA_VERSION = len(MIGRATIONS)
