"""What the store returns and raises: row types and refusals.

Every refusal is a ``StoreError`` whose ``code`` is a wire error code of
relay/errors.py (the HTTP layer maps it in one place); its docstring is the
default message.
"""

from __future__ import annotations

from typing import NamedTuple

from .db import StoreError

# -- errors: the docstring is the message; ``code`` is the wire code -----------------------------

class NotFound(StoreError):
    """no such resource"""
    code = "not-found"


class NoNetwork(NotFound):
    """no such network on this relay"""
    code = "no-network"


class NoMessage(NotFound):
    """no such message, or it is no longer held"""
    code = "no-message"


class NoInvite(NotFound):
    """no such invite, or it expired"""
    code = "no-invite"


class NoBlob(NotFound):
    """no such blob"""
    code = "no-blob"


class Conflict(StoreError):
    """the request conflicts with what is stored"""
    code = "conflict"


class NetworkExists(Conflict):
    """a network with that name already exists"""
    code = "network-exists"


class LogConflict(Conflict):
    """the membership log moved on: fetch it and try again"""
    code = "log-conflict"

    def __init__(self, message: str | None = None, *, head_seq: int = -1):
        super().__init__(message)
        #: the seq of the last stored entry when the append was refused
        self.head_seq = head_seq


class MessageIdReused(Conflict):
    """a different envelope was already submitted with this message id"""
    code = "message-id-reused"


class EnrollmentExists(Conflict):
    """a different enrollment request was already submitted for this invite"""
    code = "conflict"


class TooManyRotations(Conflict):
    """too many identity rotations of this member are waiting"""
    code = "too-many-rotations"


class BlobUnusable(Conflict):
    """the blob is incomplete, not yours, or already attached to another message"""
    code = "blob-in-use"


class Gone(StoreError):
    """the resource has expired"""
    code = "gone"


class Forbidden(StoreError):
    """you may not do this"""
    code = "forbidden"


class BadCreationToken(Forbidden):
    """the network creation token is unknown, used or expired"""
    code = "bad-creation-token"


# -- rows ------------------------------------------------------------------------------------------

class Network(NamedTuple):
    name: str
    genesis_hash: str
    created_at: int


class LogEntry(NamedTuple):
    seq: int
    entry_hash: str
    entry: str                      # the entry JSON exactly as appended


class Invite(NamedTuple):
    network: str
    invite_id: str
    handle: str
    role: str
    created_by: str
    expires_at: int


class Enrollment(NamedTuple):
    invite: Invite
    request: str                    # the request JSON exactly as submitted
    submitted_at: int


class PendingRotation(NamedTuple):
    rotation_id: str                # base64url entry hash of the entry as received
    handle: str
    seq: int                        # the log position it was signed for
    entry: str                      # the partly signed entry JSON exactly as received
    submitted_at: int


class MailboxItem(NamedTuple):
    cursor: int                     # increasing in commit order; page with after_cursor
    message_id: str
    sender: str
    size: int
    accepted_at: int


class Message(NamedTuple):
    network: str
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    envelope_hash: str
    size: int
    accepted_at: int
    receipt: str                    # the submission receipt
    deleted_at: int | None          # set once the envelope is gone (collected or expired)


class RecipientStatus(NamedTuple):
    recipient: str
    delivered_at: int | None
    collected_at: int | None
    expired_at: int | None
    receipts: dict[str, str]        # kind -> receipt JSON

    @property
    def state(self) -> str:
        """``waiting``, ``delivered``, ``collected`` or ``not-collected``."""
        if self.collected_at is not None:
            return "collected"
        if self.expired_at is not None:
            return "not-collected"
        return "delivered" if self.delivered_at is not None else "waiting"


class MessageStatus(NamedTuple):
    message: Message
    receipts: dict[str, str]        # message-level receipts, kind -> JSON (has "submission")
    recipients: list[RecipientStatus]


class Expired(NamedTuple):
    network: str
    message_id: str
    recipient: str


class Blob(NamedTuple):
    blob_id: str
    network: str
    owner: str
    size: int                       # declared size
    created_at: int
    complete: bool
    message_id: str | None
    deleting: bool


class AuditEvent(NamedTuple):
    id: int
    at: int
    event: str
    network: str | None
    handle: str | None
    detail: str


class StoredCounts(NamedTuple):
    messages: int                   # envelopes held
    message_bytes: int
    blobs: int
    blob_bytes: int                 # declared sizes
