"""Storage of identity rotations waiting for an administrator (table ``pending_rotations``).

Every request is kept, keyed by its id (the entry hash of the entry as received), so a
second request for a member never replaces the first: competing requests stay visible to
the administrators, who pick one by its fingerprint. A request is only good for the log
position it was signed for (its ``seq``): once the log holds that seq it no longer chains,
so the append that fills it deletes it in the same transaction (``forget_stale_rotations``,
called by the store's log append), and the listing shows only those for the next seq.
Mixed into ``relay.store.Store``; docs/relay-storage.md has the table.
"""

from __future__ import annotations

from .store_types import LogConflict, NoNetwork, PendingRotation, TooManyRotations

_COLUMNS = "rotation_id, handle, seq, entry, submitted_at"


def _head_seq(db, network: str) -> int:
    row = db.execute("SELECT max(seq) FROM log_entries WHERE network = ?", [network]).fetchone()
    if row[0] is None:
        raise NoNetwork(f"no network {network!r} on this relay")
    return row[0]


def forget_stale_rotations(db, network: str, seq: int) -> None:
    """The log now holds ``seq``: requests signed for it (or before) no longer chain."""
    db.execute("DELETE FROM pending_rotations WHERE network = ? AND seq <= ?", [network, seq])


def _put_rotation(db, network, rotation_id, handle, seq, entry, at, per_member) -> bool:
    head = _head_seq(db, network)
    # The writer runs one operation at a time: the log cannot move between this and the insert.
    if seq != head + 1:
        raise LogConflict(f"the rotation is for entry {seq}, but the log is at {head}: "
                          "fetch the log and sign again", head_seq=head)
    if db.execute("SELECT 1 FROM pending_rotations WHERE network = ? AND rotation_id = ?",
                  [network, rotation_id]).fetchone():
        return False                    # the identical request again: nothing to do
    waiting = db.execute("SELECT count(*) FROM pending_rotations WHERE network = ? "
                         "AND handle = ? AND seq = ?", [network, handle, seq]).fetchone()[0]
    if waiting >= per_member:
        raise TooManyRotations(f"{waiting} identity rotations of {handle} are already waiting: "
                               "an administrator must approve one, or they expire")
    db.execute(f"INSERT INTO pending_rotations (network, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
               [network, rotation_id, handle, seq, entry, at])
    return True


def _pending_rotations(db, network) -> list[PendingRotation]:
    head = _head_seq(db, network)
    return [PendingRotation(*row) for row in db.execute(
        f"SELECT {_COLUMNS} FROM pending_rotations WHERE network = ? AND seq = ? "
        "ORDER BY handle, submitted_at, rotation_id", [network, head + 1])]


class RotationStore:
    """The store's methods for pending identity rotations (``self.db`` is the Database)."""

    async def put_pending_rotation(self, network: str, rotation_id: str, handle: str, seq: int,
                                   entry: str, at: int, *, per_member: int) -> bool:
        """Keep a partly signed identity rotation for log position ``seq``; True if new, False
        if the identical request (same id) is already kept. Raises LogConflict when ``seq`` is
        not the next position, TooManyRotations when ``handle`` has ``per_member`` waiting."""
        return await self.db.write(_put_rotation, network, rotation_id, handle, seq, entry, at,
                                   per_member)

    async def pending_rotations(self, network: str) -> list[PendingRotation]:
        """The requests for the next log position, by handle then age. Raises NoNetwork."""
        return await self.db.read(_pending_rotations, network)

    async def expire_pending_rotations(self, submitted_before: int) -> int:
        """Drop requests nobody approved in time, and any left behind by the log; how many."""
        def op(db):
            return db.execute(
                "DELETE FROM pending_rotations WHERE submitted_at < ? OR seq <= "
                "(SELECT max(seq) FROM log_entries WHERE log_entries.network = "
                "pending_rotations.network)", [submitted_before]).rowcount
        return await self.db.write(op)
