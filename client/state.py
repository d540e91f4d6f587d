"""The client's local database (``COMITY_HOME/comity.db``, sqlite-utils).

Public records (networks, pinned relay keys, verified membership log entries)
are stored as they are. Anything that could reveal a message's subject, body
or attachments (received and sent messages, pending invites with their
secrets, resumable upload keys) is a sealed row: XChaCha20-Poly1305 under the
keystore's ``local_key``, with the table and row key as associated data so a
row cannot be moved to another place. Attachment ciphertexts are kept as
downloaded, under ``COMITY_HOME/blobs``; their keys live in sealed rows.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import nacl.bindings as sodium
import nacl.exceptions
import sqlite_utils

from keys.encoding import canonical, parse

from .errors import ClientError
from .home import ensure_home

DB_FILE = "comity.db"
BLOB_DIR = "blobs"
NONCE_BYTES = 24   # XChaCha20: random nonces are safe at 192 bits

SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    name TEXT PRIMARY KEY,
    relay_url TEXT NOT NULL,
    relay_key TEXT NOT NULL,            -- pinned relay public key (b64)
    genesis_hash TEXT NOT NULL,         -- pinned network fingerprint (b64)
    status TEXT NOT NULL,               -- 'member' or 'pending' (enrolled, awaiting approval)
    added_at INTEGER NOT NULL,
    mailbox_cursor INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS log_entries (
    network TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (network, seq)
);
CREATE TABLE IF NOT EXISTS sealed (
    kind TEXT NOT NULL,                 -- 'message', 'invite', 'upload'
    network TEXT NOT NULL,
    id TEXT NOT NULL,
    at INTEGER NOT NULL,
    flags TEXT NOT NULL DEFAULT '',     -- non-secret index: 'in', 'out', 'queued', 'quarantine', 'receipt'
    data BLOB NOT NULL,
    PRIMARY KEY (kind, network, id)
);
"""
#: added after the first release: the envelope hash of a stored message (b64), so that a second
#: envelope under the same id is told apart from a replay without decrypting anything
MIGRATIONS = (
    ("sealed", "digest", "ALTER TABLE sealed ADD COLUMN digest TEXT NOT NULL DEFAULT ''"),
)


@dataclass(frozen=True)
class NetworkRow:
    name: str
    relay_url: str
    relay_key: str
    genesis_hash: str
    status: str
    added_at: int
    mailbox_cursor: int


class RowExists(ClientError):
    """a stored record is never replaced"""


class NotFoundRow(ClientError):
    """no such stored record"""


class LocalState:
    def __init__(self, home: Path, local_key: bytes):
        self.home = ensure_home(home)
        self._key = local_key
        path = home / DB_FILE
        fresh = not path.exists()
        conn = sqlite3.connect(path, isolation_level=None)
        if fresh:
            os.chmod(path, 0o600)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")   # a stored message survives a crash before its ack
        self.db = sqlite_utils.Database(conn)
        conn.executescript(SCHEMA)
        for table, column, statement in MIGRATIONS:
            if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(statement)
        self.blob_dir = home / BLOB_DIR
        self.blob_dir.mkdir(mode=0o700, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalState({str(self.home)!r})"

    def close(self) -> None:
        self.db.conn.close()

    # -- networks --------------------------------------------------------------

    def add_network(self, row: NetworkRow) -> None:
        self.db.execute("INSERT OR REPLACE INTO networks VALUES (?, ?, ?, ?, ?, ?, ?)", list(row.__dict__.values()))

    def network(self, name: str) -> NetworkRow | None:
        found = self.db.execute("SELECT * FROM networks WHERE name = ?", [name]).fetchone()
        return NetworkRow(*found) if found else None

    def networks(self) -> list[NetworkRow]:
        return [NetworkRow(*r) for r in self.db.execute("SELECT * FROM networks ORDER BY name")]

    def set_network_status(self, name: str, status: str) -> None:
        self.db.execute("UPDATE networks SET status = ? WHERE name = ?", [status, name])

    def set_cursor(self, name: str, cursor: int) -> None:
        self.db.execute("UPDATE networks SET mailbox_cursor = max(mailbox_cursor, ?) WHERE name = ?",
                        [cursor, name])

    # -- verified log ------------------------------------------------------------

    def log_entries(self, network: str) -> list[dict]:
        return [parse(r[0]) for r in self.db.execute(
            "SELECT entry FROM log_entries WHERE network = ? ORDER BY seq", [network])]

    def log_head(self, network: str) -> dict | None:
        """The newest verified entry's position and hash (what an administrator reads out)."""
        found = self.db.execute("SELECT seq, hash FROM log_entries WHERE network = ? ORDER BY seq DESC "
                                "LIMIT 1", [network]).fetchone()
        return None if found is None else {"seq": found[0], "hash": found[1]}

    def add_log_entries(self, network: str, entries: list[tuple[int, str, dict]]) -> None:
        with self.transaction():
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO log_entries VALUES (?, ?, ?, ?)",
                [(network, seq, digest, canonical(entry).decode("utf-8")) for seq, digest, entry in entries])

    @contextlib.contextmanager
    def transaction(self):
        """``with state.transaction():`` makes the writes inside it one atomic, durable commit."""
        conn = self.db.conn
        if conn.in_transaction:          # nested: the outer transaction commits
            yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- sealed rows -------------------------------------------------------------

    def _aad(self, kind: str, network: str, row_id: str) -> bytes:
        return canonical(["comity/v1/local", kind, network, row_id])

    def _seal(self, kind: str, network: str, row_id: str, value: Any) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            canonical(value), self._aad(kind, network, row_id), nonce, self._key)

    def put(self, kind: str, network: str, row_id: str, value: Any, *, at: int, flags: str = "") -> None:
        """Write a row, replacing any: for our own working state (outbox, invites, uploads), never
        for messages (``insert`` / ``update``)."""
        self.db.execute("INSERT OR REPLACE INTO sealed (kind, network, id, at, flags, data) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [kind, network, row_id, at, flags, self._seal(kind, network, row_id, value)])

    def insert(self, kind: str, network: str, row_id: str, value: Any, *, at: int, flags: str,
               digest: str) -> None:
        """Store a new row; raises ``RowExists`` rather than replace one (a relay that replays or
        re-uses an id must never overwrite what we hold)."""
        try:
            self.db.execute("INSERT INTO sealed (kind, network, id, at, flags, data, digest) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [kind, network, row_id, at, flags, self._seal(kind, network, row_id, value),
                             digest])
        except sqlite3.IntegrityError:
            raise RowExists(f"{kind} {row_id} is already stored in {network}") from None

    def update(self, kind: str, network: str, row_id: str, value: Any, *, flags: str) -> None:
        """Rewrite the content of a row we hold (the evidence of a sent message grows); its
        digest, the hash of the envelope it is about, never changes."""
        changed = self.db.execute("UPDATE sealed SET data = ?, flags = ? WHERE kind = ? AND network = ? "
                                  "AND id = ?", [self._seal(kind, network, row_id, value), flags, kind,
                                                 network, row_id]).rowcount
        if changed != 1:
            raise NotFoundRow(f"no {kind} {row_id} in {network} to update")

    def digest(self, kind: str, network: str, row_id: str) -> str | None:
        """The envelope hash stored with a row ('' for rows from before it was recorded)."""
        found = self.db.execute("SELECT digest FROM sealed WHERE kind = ? AND network = ? AND id = ?",
                                [kind, network, row_id]).fetchone()
        return None if found is None else found[0]

    def flags(self, kind: str, network: str, row_id: str) -> str | None:
        found = self.db.execute("SELECT flags FROM sealed WHERE kind = ? AND network = ? AND id = ?",
                                [kind, network, row_id]).fetchone()
        return None if found is None else found[0]

    def _open(self, kind: str, network: str, row_id: str, data: bytes) -> Any:
        try:
            plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                data[NONCE_BYTES:], self._aad(kind, network, row_id), data[:NONCE_BYTES], self._key)
        except nacl.exceptions.CryptoError:
            raise ClientError(f"local {kind} {row_id} is damaged or was moved") from None
        return parse(plain)

    def get(self, kind: str, network: str, row_id: str) -> Any | None:
        found = self.db.execute("SELECT data FROM sealed WHERE kind = ? AND network = ? AND id = ?",
                                [kind, network, row_id]).fetchone()
        return None if found is None else self._open(kind, network, row_id, found[0])

    def has(self, kind: str, network: str, row_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM sealed WHERE kind = ? AND network = ? AND id = ?",
                               [kind, network, row_id]).fetchone() is not None

    def find(self, kind: str, row_id: str, network: str | None = None) -> list[tuple[str, Any]]:
        """Every row with this id, in ``network`` or in any: ids are chosen by senders, so two
        networks may hold the same one, and the caller must say which it means."""
        sql, args = "SELECT network, data FROM sealed WHERE kind = ? AND id = ?", [kind, row_id]
        if network is not None:
            sql, args = sql + " AND network = ?", args + [network]
        return [(net, self._open(kind, net, row_id, data))
                for net, data in self.db.execute(sql + " ORDER BY network", args).fetchall()]

    def rows(self, kind: str, network: str | None = None, flags: str | None = None
             ) -> Iterator[tuple[str, str, int, str, Any]]:
        sql, args = "SELECT network, id, at, flags, data FROM sealed WHERE kind = ?", [kind]
        if network is not None:
            sql, args = sql + " AND network = ?", args + [network]
        if flags is not None:
            sql, args = sql + " AND flags = ?", args + [flags]
        for net, row_id, at, row_flags, data in self.db.execute(sql + " ORDER BY at, id", args).fetchall():
            yield net, row_id, at, row_flags, self._open(kind, net, row_id, data)

    def delete(self, kind: str, network: str, row_id: str) -> None:
        self.db.execute("DELETE FROM sealed WHERE kind = ? AND network = ? AND id = ?", [kind, network, row_id])
