"""Every error the trust core raises.

Each class's docstring is the sentence a user reads when no more specific
message is given. Messages never contain key material, plaintext or secrets.
Attacker-facing paths (decryption, signature checks) raise one opaque class
each; the precise reason, where one exists, is carried in ``reason`` so the
client can log it or put it in a rejection receipt.
"""

from __future__ import annotations


class KeysError(Exception):
    """the operation on keys or signed records failed"""

    def __init__(self, message: str | None = None, *, reason: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())
        #: short machine-readable code (e.g. ``bad-signature``), stable across versions
        self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0])


class EncodingError(KeysError):
    """the record is not valid canonical comity JSON"""


class SignatureError(KeysError):
    """a signature does not verify"""


class DecryptionError(KeysError):
    """decryption failed: the data was altered, truncated, or not meant for this key"""


class KeyFormatError(KeysError):
    """a key has the wrong format or length"""


class LogError(KeysError):
    """the membership log breaks a rule and was refused"""


class EnvelopeError(KeysError):
    """the message envelope is malformed or was refused"""


class ForkError(EnvelopeError):
    """the sender saw a different membership log than ours: the log has been forked"""


class StreamError(DecryptionError):
    """the attachment stream is corrupt, truncated, reordered or extended"""


class ReceiptError(KeysError):
    """the receipt is malformed or its signature does not verify"""


class LogHeadError(KeysError):
    """the relay's signed log head is malformed, not the relay's, or not fresh"""


class InviteError(KeysError):
    """the invite code is not valid"""
